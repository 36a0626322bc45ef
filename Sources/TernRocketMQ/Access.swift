// Whom a RocketMQ client's call speaks for. Without access control, the front's own cluster
// client serves every call. With it (`--acl`), a call must carry RocketMQ 5's signature of its
// date-time header under an account's secret (`authorization: MQv2-HMAC-SHA1 Credential=<access
// key>, SignedHeaders=x-mq-date-time, Signature=<hex HMAC-SHA1>`), checked against the same
// replicated accounts as native clients; the call then runs on a cluster client that signed in
// to the group as that account, so the node decides each request's rights as for any client.
import Crypto
import Foundation
import GRPCCore
import NIOConcurrencyHelpers
import NIOCore
import TernClient
import TernProtocol

/// A cluster client speaking for one account (or for the front itself), and its producers.
final class Clients: Sendable {
    let cluster: TernCluster
    let producer: Producer
    let accessKey: String
    /// Half messages are recorded under their topic as the producer group (RocketMQ's proxy does
    /// the same), so that checks go to producers publishing that topic.
    private let transactionProducers = NIOLockedValueBox<[String: Producer]>([:])

    init(cluster: TernCluster, accessKey: String, producerGroup: String) {
        self.cluster = cluster
        self.accessKey = accessKey
        producer = Producer(cluster: cluster, group: producerGroup, idempotent: true, sendTimeoutMillis: 10_000)
    }

    func transactionProducer(_ topic: String) -> Producer {
        transactionProducers.withLockedValue { all in
            if let p = all[topic] { return p }
            let p = Producer(cluster: cluster, group: topic, idempotent: true, sendTimeoutMillis: 10_000)
            if all.count >= 10_000 { all = [:] }
            all[topic] = p
            return p
        }
    }
}

/// Access control for the front: where account secrets come from and how to reach the group.
public struct FrontAccess: Sendable {
    /// The secret of an account (nil: no such account), as the node knows it now.
    public var secretOf: @Sendable (String) -> [UInt8]?
    public init(secretOf: @escaping @Sendable (String) -> [UInt8]?) { self.secretOf = secretOf }
}

/// The signed-in cluster clients, one per account (and secret), at most `limit`.
final class AccountClients: Sendable {
    let access: FrontAccess
    let endpoints: [String]
    let options: TernCluster.Options
    let loops: any EventLoopGroup
    let producerGroup: String
    static let limit = 4096
    /// A client replaced (a changed secret) or evicted is shut down this much later, so that
    /// calls, receives and renewals that hold it finish first.
    static let retireAfter: Duration = .seconds(600)
    private let clients = NIOLockedValueBox<[String: (secret: [UInt8], clients: Clients)]>([:])
    static let nobody: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }

    init(access: FrontAccess, endpoints: [String], options: TernCluster.Options, loops: any EventLoopGroup, producerGroup: String) {
        self.access = access
        self.endpoints = endpoints
        self.options = options
        self.loops = loops
        self.producerGroup = producerGroup
    }

    /// The clients of the account that signed this call; UNAUTHORIZED when none did.
    func clients(for metadata: Metadata) throws(FrontError) -> Clients {
        guard let header = metadata[stringValues: "authorization"].first(where: { _ in true }) else {
            throw FrontError(.unauthorized, "the call carries no authorization (access control is on: give the client an account's credentials)")
        }
        guard let date = metadata[stringValues: "x-mq-date-time"].first(where: { _ in true }) else {
            throw FrontError(.unauthorized, "the call carries no x-mq-date-time to check its signature against")
        }
        let signed = try Signature.parse(header)
        // An unknown account is checked under a random key, so that it takes as long as a
        // known one's wrong signature and the answers cannot tell accounts apart.
        let secret = access.secretOf(signed.accessKey)
        let verified = Signature.verify(signed.signature, date: date, secret: secret ?? AccountClients.nobody)
        guard verified, let secret else { throw FrontError(.unauthorized, "the signature does not verify") }
        return try clients(accessKey: signed.accessKey, secret: secret)
    }

    private func clients(accessKey: String, secret: [UInt8]) throws(FrontError) -> Clients {
        if let known = clients.withLockedValue({ $0[accessKey] }), known.secret == secret { return known.clients }
        var options = self.options
        var credentials = Credentials(accessKey: accessKey, secret: "")
        credentials.secret = secret
        options.credentials = credentials
        let cluster: TernCluster
        do {
            cluster = try TernCluster(endpoints: endpoints, options: options, eventLoopGroup: loops)
        } catch {
            throw FrontError(.internalError, "cannot make a client of the group for \(accessKey): \(error)")
        }
        var retired: [TernCluster] = []
        let c = clients.withLockedValue { all -> Clients in
            // Another call of the same account may have made one meanwhile: keep that one.
            if let known = all[accessKey], known.secret == secret {
                retired.append(cluster)
                return known.clients
            }
            let made = Clients(cluster: cluster, accessKey: accessKey, producerGroup: producerGroup)
            if let old = all.removeValue(forKey: accessKey) { retired.append(old.clients.cluster) }
            if all.count >= Self.limit, let evict = all.keys.min(), let old = all.removeValue(forKey: evict) {
                retired.append(old.clients.cluster)
            }
            all[accessKey] = (secret, made)
            return made
        }
        for old in retired {
            Task {
                try? await Task.sleep(for: Self.retireAfter)
                await old.shutdown()
            }
        }
        return c
    }

    func shutdown() async {
        let all = clients.withLockedValue { all in
            defer { all = [:] }
            return all.values.map(\.clients.cluster)
        }
        for c in all { await c.shutdown() }
    }
}

/// RocketMQ 5's request signature: HMAC-SHA1 of the x-mq-date-time header under the account's
/// secret, in lower-case hex.
enum Signature {
    static func parse(_ header: String) throws(FrontError) -> (accessKey: String, signature: String) {
        let prefix = "MQv2-HMAC-SHA1 "
        guard header.hasPrefix(prefix), header.utf8.count <= 1024 else {
            throw FrontError(.unauthorized, "the authorization is not MQv2-HMAC-SHA1")
        }
        var fields: [String: String] = [:]
        for part in header.dropFirst(prefix.count).split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if kv.count == 2 { fields[kv[0]] = kv[1] }
        }
        guard let key = fields["Credential"], !key.isEmpty, key.utf8.count <= Account.maxKeyBytes else {
            throw FrontError(.unauthorized, "the authorization names no access key")
        }
        guard fields["SignedHeaders"] == "x-mq-date-time", let signature = fields["Signature"], !signature.isEmpty else {
            throw FrontError(.unauthorized, "the authorization does not sign x-mq-date-time")
        }
        return (key, signature)
    }

    static func sign(date: String, secret: [UInt8]) -> String {
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(date.utf8), using: SymmetricKey(data: secret))
        return mac.map { String(format: "%02x", $0) }.joined()
    }

    /// Compared in time that does not depend on where the two differ.
    static func verify(_ signature: String, date: String, secret: [UInt8]) -> Bool {
        let expected = Array(sign(date: date, secret: secret).utf8)
        let given = Array(signature.lowercased().utf8)
        guard expected.count == given.count else { return false }
        var diff: UInt8 = 0
        for (a, b) in zip(expected, given) { diff |= a ^ b }
        return diff == 0
    }
}
