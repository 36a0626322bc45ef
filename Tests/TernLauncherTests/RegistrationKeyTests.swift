// Name servers hold a key derived from the cluster secret, not the secret: a registration
// signed by a leader verifies under the key a name server derives or is given, under each
// secret of a rotation, and not under the secret itself or another cluster's key; and
// `tern nameserver` takes exactly one of its three ways to check registrations.
import Foundation
import Logging
import TernLauncher
import TernNameServer
import TernProtocol
import TernServer
import Testing

@Suite("Launcher: name server registration keys")
struct RegistrationKeyTests {
    static let old = Array(String(repeating: "a1", count: 32).utf8)
    static let new = Array(String(repeating: "b2", count: 32).utf8)

    static func registration() -> GroupRegistration {
        var r = GroupRegistration(
            group: "g2", leader: "n1", term: 3, version: 17, members: [GroupMember(id: "n1", endpoint: "10.0.0.1:9001")],
            topics: [RegisteredTopic(name: "orders", queues: 8)])
        r.sentAt = 1_700_000_000_000
        return r
    }

    @Test func theKeyIsDerivedNotTheSecret() throws {
        let key = RegistrationKey.derive(from: Self.old)
        #expect(key.count == 64 && key.allSatisfy(\.isHexDigit))
        #expect(key == RegistrationKey.derive(from: Self.old))
        #expect(key != RegistrationKey.derive(from: Self.new))
        #expect(!key.utf8.elementsEqual(Self.old))
    }

    @Test func aLeadersSignatureVerifiesUnderTheDerivedKeysOnly() throws {
        var r = Self.registration()
        r.sign(secret: Array(RegistrationKey.derive(from: Self.old).utf8))
        let rotation = try PeerSecrets(secrets: [Self.new, Self.old])
        #expect(r.isSigned(by: RegistrationKey.derive(from: rotation)))
        #expect(r.isSigned(by: try PeerSecrets(text: RegistrationKey.file(for: rotation))))
        #expect(!r.isSigned(by: rotation))
        #expect(!r.isSigned(by: RegistrationKey.derive(from: try PeerSecrets(secrets: [Self.new]))))
        var changed = r
        changed.term += 1
        #expect(!changed.isSigned(by: RegistrationKey.derive(from: rotation)))
    }

    static func temporary(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "tern-regkey-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        return path
    }

    /// Rewrites a file with a modification time clearly apart from the last one.
    static func rewrite(_ path: String, _ text: String, at seconds: TimeInterval) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: seconds)], ofItemAtPath: path)
    }

    @Test func theNameServerTakesExactlyOneWayToCheckRegistrations() throws {
        let path = try Self.temporary(RegistrationKey.file(for: try PeerSecrets(secrets: [Self.old])))
        defer { try? FileManager.default.removeItem(atPath: path) }
        chmod(path, 0o644)
        #expect(throws: (any Error).self) { try NameServerOptions.parse(["--registration-key", path]).resolve() }
        chmod(path, 0o600)
        let (cfg, _) = try NameServerOptions.parse(["--registration-key", path]).resolve()
        #expect(cfg.check == .keyFile(path))
        #expect(try cfg.check.source(logger: Logger(label: "test"))?() == RegistrationKey.derive(from: try PeerSecrets(secrets: [Self.old])))
        for bad in [[], ["--registration-key", path, "--insecure"], ["--registration-key", path, "--peer-secret", path]] {
            #expect(throws: (any Error).self) { try NameServerOptions.parse(bad).resolve() }
        }
        #expect(try NameServerOptions.parse(["--insecure"]).resolve().0.check == .unsigned)
        #expect(try RegistrationCheck.unsigned.source(logger: Logger(label: "test")) == nil)
    }

    /// docs/security.md's rotation: name servers take the keys of [old, new] before the nodes
    /// move the new secret first, and of [new] only once no node signs with the old one. Both
    /// sides read their files again when they change, without a restart.
    @Test func aRotationKeepsRegistrationsAcceptedAtEveryStep() throws {
        let logger = Logger(label: "test")
        let secretFile = try Self.temporary("\(String(decoding: Self.old, as: UTF8.self))\n")
        let keyFile = try Self.temporary(RegistrationKey.file(for: try PeerSecrets(secrets: [Self.old])))
        defer { for p in [secretFile, keyFile] { try? FileManager.default.removeItem(atPath: p) } }
        let node = try PeerSecretSource(path: secretFile, logger: logger)
        let nameServer = try #require(try RegistrationCheck.keyFile(keyFile).source(logger: logger))
        let derived = try #require(try RegistrationCheck.peerSecret(secretFile).source(logger: logger))
        func accepted(by keys: PeerSecrets) -> Bool {
            var r = Self.registration()
            r.sign(secret: Array(RegistrationKey.derive(from: node.current.secrets[0]).utf8))  // as the registrar signs
            return r.isSigned(by: keys)
        }
        let text = { (s: [[UInt8]]) in s.map { String(decoding: $0, as: UTF8.self) + "\n" }.joined() }
        #expect(accepted(by: nameServer()) && accepted(by: derived()))
        // 1. The new secret second on every node; the name servers' keys of [old, new].
        try Self.rewrite(secretFile, text([Self.old, Self.new]), at: 1_000_000)
        try Self.rewrite(keyFile, RegistrationKey.file(for: try PeerSecrets(secrets: [Self.old, Self.new])), at: 1_000_000)
        #expect(nameServer() == RegistrationKey.derive(from: try PeerSecrets(secrets: [Self.old, Self.new])), "the key file is read again")
        #expect(accepted(by: nameServer()) && accepted(by: derived()))
        // 2. The new secret first: the node signs with its key, which the name servers hold.
        try Self.rewrite(secretFile, text([Self.new, Self.old]), at: 2_000_000)
        let moved = RegistrationKey.derive(from: try PeerSecrets(secrets: [Self.new, Self.old]))
        #expect(node.current.secrets[0] == Self.new && derived() == moved)
        #expect(accepted(by: nameServer()) && accepted(by: derived()))
        // A name server still on [old] alone would refuse it (the step the docs warn about).
        #expect(!accepted(by: RegistrationKey.derive(from: try PeerSecrets(secrets: [Self.old]))))
        // 3. The old secret dropped everywhere.
        try Self.rewrite(secretFile, text([Self.new]), at: 3_000_000)
        try Self.rewrite(keyFile, RegistrationKey.file(for: try PeerSecrets(secrets: [Self.new])), at: 3_000_000)
        #expect(nameServer() == RegistrationKey.derive(from: try PeerSecrets(secrets: [Self.new])))
        #expect(accepted(by: nameServer()) && accepted(by: derived()))
    }
}
