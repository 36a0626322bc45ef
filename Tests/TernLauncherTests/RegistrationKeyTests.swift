// Name servers hold a key derived from the cluster secret, not the secret: a registration
// signed by a leader verifies under the key a name server derives or is given, under each
// secret of a rotation, and not under the secret itself or another cluster's key; and
// `tern nameserver` takes exactly one of its three ways to check registrations.
import Foundation
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

    @Test func theNameServerTakesExactlyOneWayToCheckRegistrations() throws {
        let path = NSTemporaryDirectory() + "tern-regkey-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try RegistrationKey.file(for: try PeerSecrets(secrets: [Self.old])).write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        chmod(path, 0o644)
        #expect(throws: (any Error).self) { try NameServerOptions.parse(["--registration-key", path]).resolve() }
        chmod(path, 0o600)
        let (cfg, _) = try NameServerOptions.parse(["--registration-key", path]).resolve()
        #expect(cfg.secrets == RegistrationKey.derive(from: try PeerSecrets(secrets: [Self.old])))
        for bad in [[], ["--registration-key", path, "--insecure"], ["--registration-key", path, "--peer-secret", path]] {
            #expect(throws: (any Error).self) { try NameServerOptions.parse(bad).resolve() }
        }
        #expect(try NameServerOptions.parse(["--insecure"]).resolve().0.secrets == nil)
    }
}
