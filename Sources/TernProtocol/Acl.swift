// Access control on the wire (docs/security.md): accounts with an access key and a secret, what
// each may do with topics and consumer groups, and the per-connection challenge-response by
// which a client proves it holds an account's secret. Accounts are replicated through the log;
// the same bodies are the admin requests and the log entries.

/// What an account may do with one topic or group. Empty: denied.
public struct Rights: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Topic: send to it. Group: act as this producer group (end transactions, answer checks).
    public static let publish = Rights(rawValue: 1)
    /// Topic: consume from it. Group: consume as this consumer group.
    public static let subscribe = Rights(rawValue: 2)
    public static let deny: Rights = []
    public static let all: Rights = [.publish, .subscribe]

    /// `pub`, `sub`, `pub|sub` or `deny` (RocketMQ's spelling; `pub,sub` too).
    public init?(text: String) {
        switch text.lowercased() {
        case "deny": self = .deny
        case "pub": self = .publish
        case "sub": self = .subscribe
        case "pub|sub", "sub|pub", "pub,sub", "sub,pub": self = .all
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .publish: "pub"
        case .subscribe: "sub"
        case .all: "pub|sub"
        default: "deny"
        }
    }
}

/// One account. A topic or group not named in `topics` or `groups` gets the default rights.
public struct Account: WireCodable, Equatable {
    public var accessKey: String
    /// The secret; empty in an update that keeps the stored one, and in listings.
    public var secret: [UInt8]
    /// Topic, group and cluster operations (`tern admin ...`), accounts included; every topic
    /// and group too.
    public var admin: Bool
    public var defaultTopic: Rights
    public var defaultGroup: Rights
    public var topics: [String: Rights]
    public var groups: [String: Rights]

    public init(
        accessKey: String, secret: [UInt8], admin: Bool = false, defaultTopic: Rights = .deny, defaultGroup: Rights = .deny, topics: [String: Rights] = [:],
        groups: [String: Rights] = [:]
    ) {
        self.accessKey = accessKey
        self.secret = secret
        self.admin = admin
        self.defaultTopic = defaultTopic
        self.defaultGroup = defaultGroup
        self.topics = topics
        self.groups = groups
    }

    public func rights(topic: String) -> Rights { admin ? .all : topics[topic] ?? defaultTopic }
    public func rights(group: String) -> Rights { admin ? .all : groups[group] ?? defaultGroup }

    /// Longest access key and secret, and most topics plus groups named in one account.
    public static let maxKeyBytes = 128
    public static let maxSecretBytes = 256
    public static let maxNamed = 10_000

    /// Why this account cannot be stored; nil when it can.
    public func validate() -> String? {
        let key = Array(accessKey.utf8)
        guard !key.isEmpty, key.count <= Account.maxKeyBytes, key.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") && $0 != UInt8(ascii: "#") })
        else {
            return "an access key is 1 to \(Account.maxKeyBytes) printable ASCII characters without spaces, ':' or '#'"
        }
        guard secret.count <= Account.maxSecretBytes, secret.isEmpty || secret.count >= 16 else {
            return "a secret is 16 to \(Account.maxSecretBytes) bytes"
        }
        guard topics.count + groups.count <= Account.maxNamed else { return "an account names at most \(Account.maxNamed) topics and groups" }
        return nil
    }

    public func encode(into w: inout WireWriter) {
        w.string(accessKey)
        w.blob(secret)
        w.bool(admin)
        w.u8(defaultTopic.rawValue)
        w.u8(defaultGroup.rawValue)
        for map in [topics, groups] {
            w.u32(UInt32(map.count))
            for name in map.keys.sorted() {
                w.string(name)
                w.u8(map[name]!.rawValue)
            }
        }
    }

    public init(from r: inout WireReader) throws(WireError) {
        accessKey = try r.string("access key")
        secret = try r.blob("secret", limit: Account.maxSecretBytes)
        admin = try r.bool("admin")
        defaultTopic = try Account.rights(&r)
        defaultGroup = try Account.rights(&r)
        var maps: [[String: Rights]] = []
        for what in ["topic rights", "group rights"] {
            let n = try r.u32(what)
            guard n <= UInt32(Account.maxNamed) else { throw WireError("\(n) \(what) is more than \(Account.maxNamed)") }
            var map: [String: Rights] = [:]
            for _ in 0..<n { map[try r.string("name")] = try Account.rights(&r) }
            maps.append(map)
        }
        topics = maps[0]
        groups = maps[1]
    }

    private static func rights(_ r: inout WireReader) throws(WireError) -> Rights {
        let v = try r.u8("rights")
        guard v & ~Rights.all.rawValue == 0 else { throw WireError("rights 0x\(String(v, radix: 16)) are unknown") }
        return Rights(rawValue: v)
    }
}

/// A change of the accounts: the admin request and the log entry (type `acl`).
public enum AclCommand: WireCodable, Equatable {
    /// Create or replace an account; an empty secret keeps the stored one.
    case put(Account)
    case delete(accessKey: String)

    public func encode(into w: inout WireWriter) {
        switch self {
        case .put(let a):
            w.u8(1)
            a.encode(into: &w)
        case .delete(let key):
            w.u8(2)
            w.string(key)
        }
    }

    public init(from r: inout WireReader) throws(WireError) {
        switch try r.u8("acl op") {
        case 1: self = .put(try Account(from: &r))
        case 2: self = .delete(accessKey: try r.string("access key"))
        case let op: throw WireError("acl op \(op) is unknown")
        }
    }
}

/// Every account, secrets left out.
public struct AccountList: WireCodable, Equatable {
    public var accounts: [Account]
    public init(accounts: [Account]) { self.accounts = accounts }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(accounts.count))
        for a in accounts { a.encode(into: &w) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        accounts = []
        for _ in 0..<(try r.u32("accounts")) { accounts.append(try Account(from: &r)) }
    }
}

/// A client's first handshake step: the account it speaks for and its nonce; answered with the
/// node's nonce (`AuthChallenge`).
public struct AuthHello: WireCodable, Equatable {
    public var accessKey: String
    public var nonce: [UInt8]
    public init(accessKey: String, nonce: [UInt8]) {
        self.accessKey = accessKey
        self.nonce = nonce
    }
    public func encode(into w: inout WireWriter) {
        w.string(accessKey)
        w.blob(nonce)
    }
    public init(from r: inout WireReader) throws(WireError) {
        accessKey = try r.string("access key")
        nonce = try r.blob("nonce", limit: 64)
    }
}

public struct AuthChallenge: WireCodable, Equatable {
    public var nonce: [UInt8]
    public init(nonce: [UInt8]) { self.nonce = nonce }
    public func encode(into w: inout WireWriter) { w.blob(nonce) }
    public init(from r: inout WireReader) throws(WireError) { nonce = try r.blob("nonce", limit: 64) }
}

/// The client's proof, HMAC-SHA256 under the secret of `ClientAuth.transcript`; answered with
/// an empty body, or UNAUTHENTICATED and a closed connection.
public struct AuthProof: WireCodable, Equatable {
    public var proof: [UInt8]
    public init(proof: [UInt8]) { self.proof = proof }
    public func encode(into w: inout WireWriter) { w.blob(proof) }
    public init(from r: inout WireReader) throws(WireError) { proof = try r.blob("proof", limit: 64) }
}

public enum ClientAuth {
    /// Nonce length of both sides.
    public static let nonceBytes = 32
    /// The bytes a proof signs: a label, then each part length-prefixed (so no two transcripts
    /// of different parts are equal).
    public static func transcript(accessKey: String, clientNonce: [UInt8], serverNonce: [UInt8]) -> [UInt8] {
        var w = WireWriter()
        w.string("tern client auth v1")
        w.string(accessKey)
        w.blob(clientNonce)
        w.blob(serverNonce)
        return w.bytes
    }

    /// An access key and secret from a credentials file: `access-key = NAME` and
    /// `secret-key = SECRET` lines (`#` starts a comment). Errors name the line.
    public static func parseCredentials(_ text: String, path: String) throws(WireError) -> (accessKey: String, secret: [UInt8]) {
        var key: String?
        var secret: String?
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
            let trimmed = line.trimmingSpaces()
            if trimmed.isEmpty { continue }
            let parts = trimmed.split(separator: "=", maxSplits: 1).map { String($0).trimmingSpaces() }
            guard parts.count == 2 else { throw WireError("\(path):\(n + 1): expected name = value") }
            switch parts[0] {
            case "access-key": key = parts[1]
            case "secret-key": secret = parts[1]
            default: throw WireError("\(path):\(n + 1): unknown setting \(parts[0]) (access-key or secret-key)")
            }
        }
        guard let key, !key.isEmpty else { throw WireError("\(path): no access-key line") }
        guard let secret, secret.utf8.count >= 16 else { throw WireError("\(path): the secret-key line is missing or shorter than 16 characters") }
        return (key, Array(secret.utf8))
    }
}

extension String {
    func trimmingSpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[start...end])
    }
}
