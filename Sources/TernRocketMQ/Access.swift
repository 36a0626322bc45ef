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

    /// `ownGroup`: through name servers, the node's own group, reached from its endpoints at once.
    init(cluster: TernCluster, accessKey: String, producerGroup: String, ownGroup: (name: String, endpoints: [String])? = nil) {
        self.cluster = cluster
        self.accessKey = accessKey
        if let ownGroup { cluster.knowBrokerGroup(ownGroup.name, endpoints: ownGroup.endpoints) }
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
    static let limit = 4096
    /// A client replaced (a changed secret) or evicted is shut down this much later, so that
    /// calls, receives and renewals that hold it finish first.
    static let retireAfter: Duration = .seconds(600)
    let pool: AccountPool<Clients>

    init(
        access: FrontAccess, endpoints: [String], nameservers: [String], ownGroup: (name: String, endpoints: [String])?, options: TernCluster.Options,
        loops: any EventLoopGroup, producerGroup: String
    ) {
        self.access = access
        pool = AccountPool(
            endpoints: endpoints, nameservers: nameservers, options: options, loops: loops, limit: Self.limit, retireAfter: Self.retireAfter,
            make: { cluster, key in Clients(cluster: cluster, accessKey: key, producerGroup: producerGroup, ownGroup: ownGroup) }, clusterOf: { $0.cluster })
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
        let verified = Signature.verify(signed.signature, date: date, secret: secret ?? AccountPool<Clients>.nobody)
        guard verified, let secret else { throw FrontError(.unauthorized, "the signature does not verify") }
        var credentials = Credentials(accessKey: signed.accessKey, secret: "")
        credentials.secret = secret
        do {
            return try pool.value(for: credentials)
        } catch {
            throw FrontError(.internalError, "cannot make a client of the group for \(signed.accessKey): \(error)")
        }
    }

    func shutdown() async { await pool.shutdown() }
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
