import TernProtocol
import TernStorage
import Testing

@testable import TernBroker

@Suite("Broker: accounts for access control")
struct AclTests {
    static let secret = Array("a-secret-of-twenty-bytes".utf8)

    @Test("accounts are put, updated keeping their secret, and deleted in log order; bad puts fail on every replica alike")
    func applyAccounts() throws {
        var h = Harness()
        let orders = Account(accessKey: "orders", secret: AclTests.secret, topics: ["orders": .publish], groups: ["billing": .subscribe])
        #expect(h.append(BrokerEntryType.acl, AclCommand.put(orders).encoded()) == .done)
        #expect(h.broker.accounts["orders"] == orders)
        #expect(orders.rights(topic: "orders") == .publish && orders.rights(topic: "audit") == .deny && orders.rights(group: "billing") == .subscribe)
        // An update without a secret keeps the stored one and replaces the rights.
        var update = orders
        update.secret = []
        update.topics = ["orders": .all]
        #expect(h.append(BrokerEntryType.acl, AclCommand.put(update).encoded()) == .done)
        #expect(h.broker.accounts["orders"]?.secret == AclTests.secret && h.broker.accounts["orders"]?.topics == ["orders": .all])
        // A new account without a secret, a short secret, a bad key: refused.
        for bad in [
            Account(accessKey: "new", secret: []), Account(accessKey: "short", secret: [1, 2, 3]), Account(accessKey: "a b", secret: AclTests.secret),
        ] {
            guard case .failed(let e) = h.append(BrokerEntryType.acl, AclCommand.put(bad).encoded()) else {
                Issue.record("\(bad.accessKey) was stored")
                continue
            }
            #expect(e.code == .badRequest)
        }
        #expect(h.broker.accounts.keys.sorted() == ["orders"])
        let admin = Account(accessKey: "ops", secret: AclTests.secret, admin: true)
        #expect(h.append(BrokerEntryType.acl, AclCommand.put(admin).encoded()) == .done)
        #expect(admin.rights(topic: "anything") == .all && admin.rights(group: "any") == .all)
        #expect(h.append(BrokerEntryType.acl, AclCommand.delete(accessKey: "orders").encoded()) == .done)
        guard case .failed = h.append(BrokerEntryType.acl, AclCommand.delete(accessKey: "orders").encoded()) else {
            Issue.record("a missing account was deleted")
            return
        }
        #expect(h.broker.accounts.keys.sorted() == ["ops"])
        // A damaged command is corruption, as any committed entry that does not decode.
        #expect(throws: CorruptEntry.self) { try h.broker.apply(index: 100, type: BrokerEntryType.acl, body: [9]) }
    }

    @Test("accounts survive a snapshot byte for byte; a version 3 snapshot (before accounts) still loads")
    func snapshotAccounts() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.send("t")
        for key in ["zed", "amy", "bob"] {
            h.append(
                BrokerEntryType.acl,
                AclCommand.put(Account(accessKey: key, secret: AclTests.secret, defaultTopic: .subscribe, topics: ["t": .all, "u": .deny])).encoded())
        }
        try h.broker.queueFiles.sync()
        let bytes = h.broker.snapshot()
        let restored = Broker(config: BrokerConfig(), source: h.log, queueFiles: h.scratch.files)
        let problem = try restored.restore(bytes)
        #expect(problem == nil)
        #expect(restored.accounts == h.broker.accounts)
        #expect(restored.snapshot() == bytes)

        // The same state without accounts, written as version 3 did: no accounts section.
        var plain = Harness()
        plain.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        plain.send("t")
        try plain.broker.queueFiles.sync()
        var v3 = plain.broker.snapshot()
        // Version 7 ends with the membership section (absent: 13 zero bytes) after the accounts,
        // then no topic types and no group settings (4 zero bytes each), then no traced topics
        // (a 2-byte count) and no traces (4 zero bytes).
        #expect(Array(v3.suffix(31)) == [UInt8](repeating: 0, count: 31), "an empty accounts section and no membership end the snapshot")
        v3.removeLast(31)
        v3[0] = 3
        let old = Broker(config: BrokerConfig(), source: plain.log, queueFiles: plain.scratch.files)
        let v3Problem = try old.restore(v3)
        #expect(v3Problem == nil, "\(v3Problem ?? "")")
        #expect(old.accounts.isEmpty && old.topics == ["t": 1])
    }

    @Test("account and credentials codecs: round trips, unknown rights refused, credentials files parsed with line numbers")
    func codecs() throws {
        let a = Account(
            accessKey: "k", secret: AclTests.secret, admin: false, defaultTopic: .publish, defaultGroup: .subscribe, topics: ["a": .all],
            groups: ["g": .deny])
        #expect(try Account.decode(a.encoded()) == a)
        #expect(try AclCommand.decode(AclCommand.delete(accessKey: "k").encoded()) == .delete(accessKey: "k"))
        var bad = a.encoded()
        bad[bad.count - 1] = 0x80  // the last group's rights
        #expect(throws: WireError.self) { try Account.decode(bad) }
        #expect(Rights(text: "pub|sub") == .all && Rights(text: "DENY") == .deny && Rights(text: "write") == nil)
        let (key, secret) = try ClientAuth.parseCredentials("# comment\naccess-key = app\n  secret-key = 0123456789abcdef0123  \n", path: "f")
        #expect(key == "app" && secret == Array("0123456789abcdef0123".utf8))
        #expect { try ClientAuth.parseCredentials("access-key = app\npassword = x\n", path: "f") } throws: { "\($0)".contains("f:2: unknown setting password") }
        #expect { try ClientAuth.parseCredentials("access-key = app\nsecret-key = short\n", path: "f") } throws: { "\($0)".contains("shorter than 16") }
    }
}
