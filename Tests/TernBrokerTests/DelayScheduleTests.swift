import TernProtocol
import TernStorage
import Testing

@testable import TernBroker

@Suite("Broker: the delay schedule on disk")
struct DelayScheduleTests {
    static let minute = Broker.delayBucketMillis

    /// A send of `count` messages stored at `time`, due at `due` (ms since 1970).
    @discardableResult
    func schedule(_ h: inout Harness, at time: UInt64, due: UInt64, count: Int = 1) -> [MessageID] {
        let request = SendRequest(
            topic: "t", queueID: 0, messages: (0..<count).map { WireMessage(properties: [Delay.deliverAtProperty: String(due)], body: [UInt8($0)]) })
        var w = WireWriter()
        w.u64(time)
        guard case .sent = h.append(BrokerEntryType.messages, w.bytes + request.encoded()) else {
            Issue.record("not stored")
            return []
        }
        return (0..<count).map { MessageID(entryIndex: h.log.next - 1, slot: UInt16($0)) }
    }

    @Test("delays go to minute buckets on disk, not memory; a release loads its bucket and every earlier one; recalls and snapshots cover both places")
    func bucketsOnDisk() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        let q = QueueRef(topic: "t", queueID: 0)
        let start = 100 * Self.minute
        let a = schedule(&h, at: start, due: start + 10 * Self.minute + 5, count: 2) + schedule(&h, at: start + 1, due: start + 10 * Self.minute + 1)
        let b = schedule(&h, at: start + 2, due: start + 20 * Self.minute + 7, count: 2)
        let c = schedule(&h, at: start + 3, due: start + 1000 * Self.minute)
        #expect(h.broker.timers.count == 0 && h.broker.delayBuckets.count == 3 && h.broker.delayedCount == 6)
        #expect(h.broker.nextDelayDue == start + 10 * Self.minute + 1)
        #expect(try h.broker.oldestPinnedEntry() == a[0].entryIndex)

        // Due messages are read from disk, earliest first, without loading anything.
        #expect(try h.broker.dueTimers(now: start + 10 * Self.minute, max: 10).isEmpty)
        let dueA = try h.broker.dueTimers(now: start + 11 * Self.minute, max: 10)
        #expect(dueA.map(\.id) == [a[2], a[0], a[1]] && dueA.allSatisfy { $0.queue == q })
        #expect(try h.broker.dueTimers(now: start + 30 * Self.minute, max: 4).map(\.id) == [a[2], a[0], a[1], b[0]])
        #expect(h.broker.timers.count == 0)

        // A recall of a message on disk is remembered; a second one is refused.
        #expect(h.append(BrokerEntryType.recall, MessageIDList(ids: [b[1]]).encoded()) == .done)
        #expect(h.broker.delayedCount == 5)
        if case .failed(let e) = h.append(BrokerEntryType.recall, MessageIDList(ids: [b[1]]).encoded()) {
            #expect(e.code == ErrorCode.messageNotFound)
        } else {
            Issue.record("recalled twice")
        }

        // Releasing two of minute 10 loads it: the third waits in memory, minute 20 stays on disk.
        h.append(BrokerEntryType.release, MessageIDList(ids: [a[2], a[0]]).encoded())
        #expect(h.broker.maxOffset(q) == 2 && h.broker.timers.count == 1 && h.broker.delayBuckets.count == 2)
        #expect(try h.broker.oldestPinnedEntry() == a[1].entryIndex)
        // A delay into a minute already loaded goes to memory.
        let late = schedule(&h, at: start + 4, due: start + 10 * Self.minute + 9)
        #expect(h.broker.timers.count == 2 && h.broker.delayedCount == 4)

        // The state round-trips through a snapshot, rows on disk included.
        try h.broker.queueFiles.sync()
        let bytes = h.broker.snapshot()
        let restored = Broker(config: BrokerConfig(), source: h.log, queueFiles: h.scratch.files)
        #expect(try restored.restore(bytes) == nil)
        #expect(restored.snapshot() == bytes)
        #expect(restored.delayBuckets == h.broker.delayBuckets && restored.delayRecalled == [b[1]])

        // Releasing minute 20 (the recalled message named too) releases only the one not recalled,
        // and loads minute 10's rest with it; minute 1000 stays on disk.
        var applied = restored.appliedIndex + 1
        func apply(_ type: UInt8, _ body: [UInt8]) throws -> ApplyOutcome {
            h.log.bodies[applied] = body
            defer { applied += 1 }
            return try restored.apply(index: applied, type: type, body: body)
        }
        _ = try apply(BrokerEntryType.release, MessageIDList(ids: [b[0], b[1], a[1], late[0]]).encoded())
        let pulled = try restored.pull(PullRequest(topic: "t", queueID: 0, offset: 0)).get()
        #expect(pulled.messages.map(\.id) == [a[2], a[0], b[0], a[1], late[0]])
        #expect(restored.timers.count == 0 && restored.delayBuckets.count == 1 && restored.delayRecalled.isEmpty && restored.delayedCount == 1)
        #expect(try restored.oldestPinnedEntry() == c[0].entryIndex)
        // The timer log keeps only the rows of the bucket still on disk.
        let log = try #require(restored.storedQueue(Broker.timerLog))
        #expect(log.maxOffset - log.baseOffset == 1)
        #expect(try restored.dueTimers(now: start + 1000 * Self.minute, max: 10).map(\.id) == c)
    }

    @Test("one send may create the timer log and a key bucket: their files never collide (both are named by that entry)")
    func timerLogBesideKeyBucket() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        // A key in bucket 0, the number the timer log had when it collided.
        let key = try #require((0..<10_000).map { "k\($0)" }.first { Broker.keyHash(topic: "t", key: $0) % Broker.keyBuckets == 0 })
        let due = 200 * Self.minute
        let request = SendRequest(
            topic: "t", queueID: 0, messages: [WireMessage(keys: [key], properties: [Delay.deliverAtProperty: String(due)], body: [1])])
        var w = WireWriter()
        w.u64(100 * Self.minute)
        guard case .sent = h.append(BrokerEntryType.messages, w.bytes + request.encoded()) else {
            Issue.record("not stored")
            return
        }
        let id = MessageID(entryIndex: h.log.next - 1, slot: 0)
        #expect(try h.broker.dueTimers(now: due, max: 10).map(\.id) == [id])
        h.append(BrokerEntryType.release, MessageIDList(ids: [id]).encoded())
        #expect(try h.broker.messages(topic: "t", key: key, max: 10).map(\.id) == [id])
        #expect(try h.broker.message(id)?.message.body == [1], "found through the late-place index")
    }

    @Test("a lookup by id that cannot read its entry throws; only an entry retention deleted reads as no message")
    func readErrorsAreNotMissingMessages() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.send("t")
        let id = MessageID(entryIndex: h.log.next - 1, slot: 0)
        #expect(try h.broker.message(id) != nil)
        // The test log answers a missing entry with a corruption error (a failed checksum).
        h.log.bodies[id.entryIndex] = nil
        #expect(throws: StorageError.self) { try h.broker.message(id) }
    }

    @Test("the key hash is the CRC32C of the topic, a zero byte and the key, as docs/storage.md says")
    func keyHashIsDocumented() {
        for (topic, key) in [("t", "k"), ("orders", ""), ("", "x"), ("topic-é", "clé 42")] {
            let bytes = Array(topic.utf8) + [0] + Array(key.utf8)
            #expect(Broker.keyHash(topic: topic, key: key) == bytes.withUnsafeBytes { crc32c($0) })
            #expect(Broker.topicHash(topic) == Array(topic.utf8).withUnsafeBytes { crc32c($0) })
        }
    }
}
