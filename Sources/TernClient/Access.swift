// Access control from the client's side (docs/security.md): the account a cluster client speaks
// for, proved once per connection, and the admin calls that manage accounts.
import Crypto
import Foundation
import TernProtocol

/// An account's access key and secret.
///
/// ```swift
/// var options = TernCluster.Options()
/// options.credentials = try Credentials(file: "/etc/tern/orders.credentials")
/// let cluster = try TernCluster(endpoints: ["10.0.0.1:9001"], options: options)
/// ```
public struct Credentials: Sendable, Equatable {
    public var accessKey: String
    public var secret: [UInt8]

    public init(accessKey: String, secret: String) {
        self.accessKey = accessKey
        self.secret = Array(secret.utf8)
    }

    /// Reads a credentials file: `access-key = NAME` and `secret-key = SECRET` lines.
    public init(file path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClientError.invalidArgument("--credentials \(path): \(FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file")")
        }
        do {
            let (key, secret) = try ClientAuth.parseCredentials(String(decoding: data, as: UTF8.self), path: path)
            accessKey = key
            self.secret = secret
        } catch {
            throw ClientError.invalidArgument("--credentials \(error)")
        }
    }
}

extension Connection {
    /// The client handshake: the node's nonce for ours, then our proof. A wrong key or secret is
    /// the node's UNAUTHENTICATED answer, and it closes the connection.
    func authenticate(_ credentials: Credentials, timeoutMillis: Int64) async throws {
        var rng = SystemRandomNumberGenerator()
        let nonce = (0..<ClientAuth.nonceBytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let hello = AuthHello(accessKey: credentials.accessKey, nonce: nonce)
        let challenge = try AuthChallenge.decode(try await call(.authHello, hello.encoded(), timeoutMillis: timeoutMillis))
        let transcript = ClientAuth.transcript(accessKey: credentials.accessKey, clientNonce: nonce, serverNonce: challenge.nonce)
        let proof = HMAC<SHA256>.authenticationCode(for: transcript, using: SymmetricKey(data: credentials.secret))
        _ = try await call(.authProof, AuthProof(proof: Array(proof)).encoded(), timeoutMillis: timeoutMillis)
    }
}

extension TernCluster {
    /// Creates or replaces an account (admin right); an empty secret keeps the stored one.
    /// Every node enforces it once it applied the change. Through name servers, on every live
    /// broker group in name order (each group keeps its own accounts): repeating a put that
    /// failed part way completes it.
    public func putAccount(_ account: Account) async throws {
        if let router { return try await onEveryGroup(router) { try await $0.putAccount(account) } }
        _ = try await leaderCall(.aclChange, AclCommand.put(account).encoded())
    }

    public func deleteAccount(_ accessKey: String) async throws {
        if let router { return try await onEveryGroup(router) { try await $0.deleteAccount(accessKey) } }
        _ = try await leaderCall(.aclChange, AclCommand.delete(accessKey: accessKey).encoded())
    }

    /// Every account, without secrets (admin right). Through name servers, those of every live
    /// broker group (an account one group lacks is listed by `accountsByGroup`).
    public func accounts() async throws -> [Account] {
        guard router != nil else { return try AccountList.decode(try await leaderCall(.aclList, [])).accounts }
        var seen: Set<String> = []
        return try await accountsByGroup().flatMap(\.accounts).filter { seen.insert($0.accessKey).inserted }.sorted { $0.accessKey < $1.accessKey }
    }

    /// Each broker group's accounts (one entry without name servers).
    public func accountsByGroup() async throws -> [(group: String, accounts: [Account])] {
        guard let router else { return [(brokerGroup ?? "", try await accounts())] }
        var out: [(group: String, accounts: [Account])] = []
        for g in try await router.liveGroups(complete: true) { out.append((g.group, try await router.cluster(g).accounts())) }
        return out
    }
}
