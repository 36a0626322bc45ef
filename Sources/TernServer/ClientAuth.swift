// Client authentication for access control (`--acl`; docs/security.md): a connection proves it
// holds an account's secret once, by HMAC-SHA256 over both sides' nonces, and then speaks for
// that account. The node decides each request against the replicated accounts (TernNode's
// NodeAccess.swift); this file only establishes whom a connection speaks for.
import Crypto
import Foundation
import Logging
import TernNode
import TernProtocol

/// The account of an `--acl-admin` file: every right, on this node, without being in the log
/// (how the first replicated accounts get created). Every member should hold the same file.
struct RootAccount {
    let accessKey: String
    let secret: [UInt8]

    /// Reads a credentials file (`access-key = ...`, `secret-key = ...`); refused when others
    /// than its owner may read it.
    static func load(path: String) throws(ServerError) -> RootAccount {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ServerError("cannot read --acl-admin \(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & 0o077 == 0 else {
            throw ServerError("--acl-admin \(path) may be read by others (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw ServerError("cannot read --acl-admin \(path)") }
        do {
            let (key, secret) = try ClientAuth.parseCredentials(String(decoding: data, as: UTF8.self), path: path)
            return RootAccount(accessKey: key, secret: secret)
        } catch {
            throw ServerError("--acl-admin: \(error)")
        }
    }
}

/// One connection's client handshake, responder side.
struct ClientAuthGate {
    enum State {
        case open
        case challenged(accessKey: String, clientNonce: [UInt8], serverNonce: [UInt8])
        case authenticated(Principal)
    }
    private(set) var state = State.open
    /// The key an unknown account's proof is checked under: random, never told.
    static let nobody = PeerHandshake.nonce()

    enum Outcome {
        case reply([UInt8])
        /// Authenticated: reply empty and tell the node.
        case authenticated(Principal)
        /// Answer with UNAUTHENTICATED and close.
        case refuse(String)
    }

    var isChallenged: Bool {
        if case .challenged = state { return true }
        return false
    }

    /// `secretOf` finds an account's secret: the root account's, or a replicated account's.
    mutating func accept(_ op: Opcode, _ body: [UInt8], secretOf: (String) -> (Principal, [UInt8])?) -> Outcome {
        switch (op, state) {
        case (.authHello, .open):
            guard let hello = try? AuthHello.decode(body), hello.nonce.count == ClientAuth.nonceBytes else {
                return .refuse("the authentication hello does not decode")
            }
            let mine = PeerHandshake.nonce()
            state = .challenged(accessKey: hello.accessKey, clientNonce: hello.nonce, serverNonce: mine)
            return .reply(AuthChallenge(nonce: mine).encoded())
        case (.authProof, .challenged(let key, let clientNonce, let serverNonce)):
            // Unknown accounts and wrong secrets get the same answer, after the same work (an
            // unknown account is checked against a key nobody holds).
            let found = secretOf(key)
            let transcript = ClientAuth.transcript(accessKey: key, clientNonce: clientNonce, serverNonce: serverNonce)
            let valid =
                (try? AuthProof.decode(body).proof).map {
                    HMAC<SHA256>.isValidAuthenticationCode($0, authenticating: transcript, using: SymmetricKey(data: found?.1 ?? ClientAuthGate.nobody))
                } ?? false
            guard valid, let (principal, _) = found else { return .refuse("the access key \(key) or its secret is wrong") }
            state = .authenticated(principal)
            return .authenticated(principal)
        case (.authHello, _), (.authProof, _):
            return .refuse("\(op) out of turn: a connection authenticates once")
        default:
            return .refuse("\(op) is not an authentication step")
        }
    }
}

extension TernServer {
    /// The secret of the account `key` and whom it makes a connection speak for; on the loop.
    func secret(of key: String) -> (Principal, [UInt8])? {
        if let root = rootAccount, root.accessKey == key { return (.root(key), root.secret) }
        guard let account = node?.broker.accounts[key] else { return nil }
        return (.account(key, secret: account.secret), account.secret)
    }
}
