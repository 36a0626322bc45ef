import Glibc
import TernProtocol
import TernStorage
import Testing

@testable import TernBroker

/// Entries kept in memory, as the log would return them.
final class MemoryLog: EntrySource {
    var bodies: [UInt64: [UInt8]] = [:]
    var next: UInt64 = 1
    func entryBody(at index: UInt64) throws(StorageError) -> [UInt8] {
        guard let b = bodies[index] else { throw StorageError(.corruption, "no entry \(index)") }
        return b
    }
}

/// Consume-queue files in a new temporary directory, removed when the last reference goes.
final class ScratchQueueFiles {
    let path: String
    let files: ConsumeQueueFiles
    init(rowsPerFile: UInt64 = 1 << 18, flushRows: Int = 170) {
        var template = Array("/tmp/tern-broker-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        files = try! ConsumeQueueFiles(device: PosixDevice(), directory: path, rowsPerFile: rowsPerFile, flushRows: flushRows)
    }
    deinit { _ = system("rm -rf '\(path)'") }
}

/// A broker with its log: `append` stores an entry and applies it, as a node does.
struct Harness {
    let log = MemoryLog()
    let scratch: ScratchQueueFiles
    let broker: Broker
    var entries: [(UInt64, UInt8, [UInt8])] = []

    /// Small files and a short in-memory tail by default, so that tests cross both.
    init(config: BrokerConfig = BrokerConfig(), rowsPerFile: UInt64 = 7, flushRows: Int = 3) {
        scratch = ScratchQueueFiles(rowsPerFile: rowsPerFile, flushRows: flushRows)
        broker = Broker(config: config, source: log, queueFiles: scratch.files)
    }

    @discardableResult
    mutating func append(_ type: UInt8, _ body: [UInt8]) -> ApplyOutcome {
        let index = log.next
        log.next += 1
        log.bodies[index] = body
        entries.append((index, type, body))
        do {
            return try broker.apply(index: index, type: type, body: body)
        } catch {
            Issue.record("entry \(index) refused as corrupt: \(error)")
            return .none
        }
    }

    @discardableResult
    mutating func send(
        _ topic: String, queue: UInt32 = 0, producer: UInt64 = 0, sequence: UInt64 = 0, tags: [String] = [""], at time: UInt64 = 1000, bodySize: Int = 3
    ) -> ApplyOutcome {
        let request = SendRequest(
            topic: topic, queueID: queue, producerGroup: "pg", producerID: producer, sequence: sequence,
            messages: tags.enumerated().map { WireMessage(tag: $1, keys: ["k\($0)"], body: [UInt8](repeating: UInt8($0), count: bodySize)) })
        var w = WireWriter()
        w.u64(time)
        return append(BrokerEntryType.messages, w.bytes + request.encoded())
    }
}

@Suite("Broker: state machine over entries")
struct BrokerTests {
    @Test("a committed entry that does not decode is corruption: thrown, never skipped; Raft's no-op applies as nothing")
    func corruptEntriesStop() throws {
        let h = Harness()
        #expect(try h.broker.apply(index: 1, type: 1, body: []) == .none)
        #expect(throws: CorruptEntry.self) { try h.broker.apply(index: 2, type: BrokerEntryType.admin, body: [0xFF, 0x01]) }
        #expect(throws: CorruptEntry.self) { try h.broker.apply(index: 3, type: BrokerEntryType.offsets, body: [1, 2, 3]) }
        #expect(throws: CorruptEntry.self) { try h.broker.apply(index: 4, type: BrokerEntryType.messages, body: [0, 0, 0]) }
        #expect { try h.broker.apply(index: 5, type: 99, body: []) } throws: { "\($0)".contains("entry 5 (type 99)") }
        // The entry stays applied (the index moved): the node stops; it does not retry or skip.
        #expect(h.broker.appliedIndex == 5)
    }

    @Test("a send is indexed in its queue; a pull returns it with its id, offset and store time")
    func sendAndPull() throws {
        var h = Harness()
        #expect(h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 2).encoded()) == .done)
        let outcome = h.send("t", queue: 1, tags: ["a", "b", "c"], at: 4242)
        #expect(outcome == .sent(SendResponse(queueID: 1, entryIndex: 2, firstQueueOffset: 0, count: 3, duplicate: false)))
        let r = try h.broker.pull(PullRequest(topic: "t", queueID: 1, offset: 0)).get()
        #expect(r.messages.map(\.queueOffset) == [0, 1, 2])
        #expect(r.messages.map(\.id) == (0..<3).map { MessageID(entryIndex: 2, slot: $0) })
        #expect(r.messages.map(\.message.tag) == ["a", "b", "c"])
        #expect(r.messages.allSatisfy { $0.storeTimestamp == 4242 && $0.producerGroup == "pg" })
        #expect(r.nextOffset == 3 && r.maxOffset == 3)
        #expect(try h.broker.pull(PullRequest(topic: "t", queueID: 0, offset: 0)).get().messages.isEmpty)
    }

    @Test("tag filters: *, one tag, a || b; nextOffset moves past filtered messages")
    func tagFilter() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.send("t", tags: ["a", "b", "c", "a"])
        func tags(_ f: String) throws -> [String] {
            try h.broker.pull(PullRequest(topic: "t", queueID: 0, offset: 0, tagFilter: f)).get().messages.map(\.message.tag)
        }
        #expect(try tags("*") == ["a", "b", "c", "a"])
        #expect(try tags("") == ["a", "b", "c", "a"])
        #expect(try tags("a") == ["a", "a"])
        #expect(try tags("b || c") == ["b", "c"])
        #expect(try tags("zzz").isEmpty)
        #expect(try h.broker.pull(PullRequest(topic: "t", queueID: 0, offset: 0, tagFilter: "zzz")).get().nextOffset == 4)
    }

    @Test("a SQL92 filter selects by properties on the broker; a bad expression is refused with its column")
    func sqlPull() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        let request = SendRequest(
            topic: "t", queueID: 0,
            messages: (0..<6).map { k in
                WireMessage(tag: k % 2 == 0 ? "even" : "odd", properties: ["n": "\(k)"], body: [UInt8(k)])
            })
        var w = WireWriter()
        w.u64(1)
        h.append(BrokerEntryType.messages, w.bytes + request.encoded())
        func bodies(_ sql: String, tags: String = "*") throws -> [UInt8] {
            try h.broker.pull(PullRequest(topic: "t", queueID: 0, offset: 0, tagFilter: tags, sqlFilter: sql)).get().messages.map { $0.message.body[0] }
        }
        #expect(try bodies("n > 2") == [3, 4, 5])
        #expect(try bodies("n BETWEEN 1 AND 4 AND TAGS = 'odd'") == [1, 3])
        #expect(try bodies("n < 4", tags: "even") == [0, 2])
        guard case .failure(let e) = try h.broker.pull(PullRequest(topic: "t", queueID: 0, offset: 0, sqlFilter: "n >")) else {
            Issue.record("a bad expression was accepted")
            return
        }
        #expect(e.code == ErrorCode.filterSyntax && e.message.contains("column 4"))
    }

    @Test("lookup by id and by key; the first offset stored at or after a time")
    func lookups() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 2).encoded())
        for (k, time) in [(0, 100), (1, 200), (2, 300)] as [(Int, UInt64)] {
            let request = SendRequest(topic: "t", queueID: 1, messages: [WireMessage(keys: ["order-\(k % 2)"], body: [UInt8(k)])])
            var w = WireWriter()
            w.u64(time)
            h.append(BrokerEntryType.messages, w.bytes + request.encoded())
        }
        let m = try #require(try h.broker.message(MessageID(entryIndex: 3, slot: 0)))
        #expect(m.queueID == 1 && m.queueOffset == 1 && m.message.body == [1] && m.storeTimestamp == 200)
        #expect(try h.broker.message(MessageID(entryIndex: 3, slot: 1)) == nil, "no such slot")
        #expect(try h.broker.message(MessageID(entryIndex: 1, slot: 0)) == nil, "not a message entry")
        #expect(try h.broker.message(MessageID(entryIndex: 99, slot: 0)) == nil, "not applied")
        #expect(try h.broker.messages(topic: "t", key: "order-0", max: 10).map { $0.message.body } == [[0], [2]])
        #expect(try h.broker.messages(topic: "t", key: "order-0", max: 1).map { $0.message.body } == [[2]])
        #expect(try h.broker.messages(topic: "t", key: "nope", max: 10).isEmpty)
        let q = QueueRef(topic: "t", queueID: 1)
        #expect(try h.broker.offset(q, atOrAfter: 0) == 0)
        #expect(try h.broker.offset(q, atOrAfter: 200) == 1)
        #expect(try h.broker.offset(q, atOrAfter: 201) == 2)
        #expect(try h.broker.offset(q, atOrAfter: 999) == 3)
        // A reset moves offsets back; a commit does not.
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g": [q: 3]]).encoded())
        h.append(BrokerEntryType.offsetReset, OffsetCommit(groups: ["g": [q: 1]]).encoded())
        #expect(h.broker.committedOffset(group: "g", queue: q) == 1)
    }

    @Test("an idempotent retry is stored once and answered with the first result; a sequence older than the window is refused")
    func dedupe() throws {
        var config = BrokerConfig()
        config.dedupeWindow = 4
        var h = Harness(config: config)
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 2).encoded())
        guard case .sent(let first) = h.send("t", producer: 7, sequence: 1) else { Issue.record("not sent"); return }
        guard case .sent(let again) = h.send("t", producer: 7, sequence: 1) else { Issue.record("not sent"); return }
        #expect(again.duplicate && !first.duplicate)
        #expect(again.entryIndex == first.entryIndex && again.firstQueueOffset == first.firstQueueOffset)
        #expect(h.broker.maxOffset(QueueRef(topic: "t", queueID: 0)) == 1)
        // The same sequence on another queue, or from another producer, is another send.
        if case .sent(let other) = h.send("t", queue: 1, producer: 7, sequence: 1) { #expect(!other.duplicate) } else { Issue.record("not sent") }
        if case .sent(let other) = h.send("t", producer: 8, sequence: 1) { #expect(!other.duplicate) } else { Issue.record("not sent") }
        // A gap is fine (sends overtake each other); the late one is still stored once.
        for s in [3, 2, 4, 5, 6] as [UInt64] { h.send("t", producer: 7, sequence: s) }
        #expect(h.broker.maxOffset(QueueRef(topic: "t", queueID: 0)) == 7)
        if case .failed(let e) = h.send("t", producer: 7, sequence: 1) {
            #expect(e.code == ErrorCode.sequenceTooOld)
        } else {
            Issue.record("sequence 1 left the window of 4 and must be refused")
        }
        if case .sent(let d) = h.send("t", producer: 7, sequence: 6) { #expect(d.duplicate) } else { Issue.record("not sent") }
    }

    @Test("committed offsets never move backwards and go with their topic")
    func offsets() {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 2).encoded())
        let q = QueueRef(topic: "t", queueID: 1)
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g": [q: 5]]).encoded())
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g": [q: 3]]).encoded())
        #expect(h.broker.committedOffset(group: "g", queue: q) == 5)
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g": [q: 9], "h": [q: 1]]).encoded())
        #expect(h.broker.committedOffset(group: "g", queue: q) == 9)
        #expect(h.broker.committedOffset(group: "h", queue: q) == 1)
        // Offsets of a missing topic are not kept.
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g": [QueueRef(topic: "nope", queueID: 0): 4]]).encoded())
        #expect(h.broker.committedOffset(group: "g", queue: QueueRef(topic: "nope", queueID: 0)) == nil)
        #expect(h.append(BrokerEntryType.admin, AdminCommand.deleteTopic(name: "t").encoded()) == .done)
        #expect(h.broker.committedOffset(group: "g", queue: q) == nil)
        #expect(h.broker.topics["t"] == nil)
    }

    @Test("topics: create is idempotent with the same queue count, refused with another; update only grows; sends to missing topics or queues fail")
    func topics() {
        var h = Harness()
        let create = AdminCommand.createTopic(name: "t", queues: 2).encoded()
        #expect(h.append(BrokerEntryType.admin, create) == .done)
        #expect(h.append(BrokerEntryType.admin, create) == .done)
        if case .failed(let e) = h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 3).encoded()) {
            #expect(e.code == ErrorCode.topicExists)
        } else {
            Issue.record("expected topicExists")
        }
        if case .failed(let e) = h.send("missing") { #expect(e.code == ErrorCode.topicNotFound) } else { Issue.record("expected topicNotFound") }
        if case .failed(let e) = h.send("t", queue: 2) { #expect(e.code == ErrorCode.queueNotFound) } else { Issue.record("expected queueNotFound") }
        #expect(h.append(BrokerEntryType.admin, AdminCommand.updateTopic(name: "t", queues: 3).encoded()) == .done)
        #expect(h.broker.topics["t"] == 3)
        #expect(h.send("t", queue: 2) != .none)
        if case .failed(let e) = h.append(BrokerEntryType.admin, AdminCommand.updateTopic(name: "t", queues: 1).encoded()) {
            #expect(e.code == ErrorCode.badRequest)
        } else {
            Issue.record("shrinking a topic must be refused")
        }
        #expect(Broker.validateTopicName("ok-Name_1.x") == nil)
        #expect(Broker.validateTopicName("bad name") != nil)
        #expect(Broker.validateTopicName("") != nil)
    }

    @Test("a batch with one oversized body stores none of its messages")
    func oversized() {
        var config = BrokerConfig()
        config.maxMessageBytes = 10
        var h = Harness(config: config)
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        if case .failed(let e) = h.send("t", tags: ["a", "b"], bodySize: 11) {
            #expect(e.code == ErrorCode.badRequest)
        } else {
            Issue.record("expected a refusal")
        }
        #expect(h.broker.maxOffset(QueueRef(topic: "t", queueID: 0)) == 0)
        #expect(h.send("t", bodySize: 10) != .none)
        #expect(h.broker.maxOffset(QueueRef(topic: "t", queueID: 0)) == 1)
    }

    @Test("replaying the same entries into a new broker gives the same state")
    func replay() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 3).encoded())
        var rng = SplitMix(seed: 11)
        for k in 0..<300 {
            let q = UInt32(rng.next() % 3)
            if rng.next() % 5 == 0 {
                h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g\(k % 2)": [QueueRef(topic: "t", queueID: q): rng.next() % 50]]).encoded())
            } else {
                h.send("t", queue: q, producer: rng.next() % 3, sequence: rng.next() % 40, tags: ["x", "y"])
            }
        }
        let copyFiles = ScratchQueueFiles()
        let copy = Broker(config: BrokerConfig(), source: h.log, queueFiles: copyFiles.files)
        for (i, t, b) in h.entries { _ = try copy.apply(index: i, type: t, body: b) }
        #expect(copy.topicList() == h.broker.topicList())
        #expect(copy.offsets == h.broker.offsets)
        for q in 0..<3 as Range<UInt32> {
            let a = try h.broker.pull(PullRequest(topic: "t", queueID: q, offset: 0, maxMessages: 1000)).get()
            let b = try copy.pull(PullRequest(topic: "t", queueID: q, offset: 0, maxMessages: 1000)).get()
            #expect(a == b)
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Broker: consumer groups")
struct GroupTests {
    @Test("queue shares cover every queue once, contiguous, differing by at most one", arguments: [1, 2, 3, 5, 8, 9])
    func shares(members: Int) {
        for queues in [1, 4, 7, 8, 16] {
            let ranges = (0..<members).map { ConsumerGroups.share(queues: queues, members: members, index: $0) }
            #expect(ranges.flatMap { Array($0) } == Array(0..<queues))
            let sizes = ranges.map(\.count)
            #expect(sizes.max()! - sizes.min()! <= 1)
        }
    }

    @Test("clustering splits queues among members and rebalances on join, leave and silence; broadcasting gives all")
    func assignment() {
        let g = ConsumerGroups(sessionTimeoutMillis: 1000)
        let queues: (String) -> UInt32? = { $0 == "t" ? 4 : nil }
        func hb(_ c: String, _ now: UInt64, _ mode: ConsumeMode = .clustering) -> [QueueRef] {
            g.heartbeat(HeartbeatRequest(group: "g", clientID: c, mode: mode, topics: ["t"]), now: now, queuesOf: queues).assigned
        }
        #expect(hb("a", 0).map(\.queueID) == [0, 1, 2, 3])
        _ = hb("b", 10)
        #expect(hb("a", 20).map(\.queueID) == [0, 1])
        #expect(hb("b", 20).map(\.queueID) == [2, 3])
        g.unregister(group: "g", clientID: "a")
        #expect(hb("b", 30).map(\.queueID) == [0, 1, 2, 3])
        _ = hb("c", 40)
        g.expire(now: 1035)  // b was last heard at 30: silent for 1005 ms
        #expect(g.members(of: "g") == ["c"])
        #expect(hb("c", 1040).map(\.queueID) == [0, 1, 2, 3])
        #expect(g.heartbeat(HeartbeatRequest(group: "b", clientID: "x", mode: .broadcasting, topics: ["t"]), now: 0, queuesOf: queues).assigned.count == 4)
    }
}

@Suite("Broker: delayed messages")
struct DelayTests {
    func delayedSend(_ h: inout Harness, at time: UInt64, properties: [String: String], bodies: [UInt8] = [7]) -> ApplyOutcome {
        let request = SendRequest(topic: "t", queueID: 0, messages: bodies.map { WireMessage(properties: properties, body: [$0]) })
        var w = WireWriter()
        w.u64(time)
        return h.append(BrokerEntryType.messages, w.bytes + request.encoded())
    }

    @Test("levels, relative delays and absolute times; bad values and too-long delays are refused")
    func deliverAt() throws {
        let max: UInt64 = 3 * 24 * 3600 * 1000
        #expect(try Delay.deliverAt(["DELAY": "1"], storeTimestamp: 1000, maxDelayMillis: max).get() == 2000)
        #expect(try Delay.deliverAt(["DELAY": "18"], storeTimestamp: 0, maxDelayMillis: max).get() == 7_200_000)
        #expect(try Delay.deliverAt(["TIMER_DELAY_MS": "250"], storeTimestamp: 1000, maxDelayMillis: max).get() == 1250)
        #expect(try Delay.deliverAt(["TIMER_DELIVER_MS": "5000"], storeTimestamp: 1000, maxDelayMillis: max).get() == 5000)
        #expect(try Delay.deliverAt(["TIMER_DELIVER_MS": "500"], storeTimestamp: 1000, maxDelayMillis: max).get() == nil, "a past time delivers now")
        #expect(try Delay.deliverAt([:], storeTimestamp: 1000, maxDelayMillis: max).get() == nil)
        for bad in [
            ["DELAY": "0"], ["DELAY": "19"], ["DELAY": "x"], ["TIMER_DELAY_MS": "-1"], ["DELAY": "1", "TIMER_DELAY_MS": "5"],
            ["TIMER_DELAY_MS": String(max + 1)],
        ] {
            if case .success = Delay.deliverAt(bad, storeTimestamp: 1000, maxDelayMillis: max) { Issue.record("\(bad) accepted") }
        }
    }

    @Test("a delayed send waits in the timer; a release indexes it once; a recall cancels a pending one")
    func releaseAndRecall() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        guard case .sent(let r) = delayedSend(&h, at: 1000, properties: ["TIMER_DELAY_MS": "500"], bodies: [1, 2]) else { Issue.record("not sent"); return }
        #expect(r.firstQueueOffset == SendResponse.scheduled)
        let q = QueueRef(topic: "t", queueID: 0)
        #expect(h.broker.maxOffset(q) == 0 && h.broker.delayedCount == 2)
        #expect(try h.broker.dueTimers(now: 1499, max: 10).isEmpty)
        let due = try h.broker.dueTimers(now: 1500, max: 10).map(\.id)
        #expect(due == [MessageID(entryIndex: 2, slot: 0), MessageID(entryIndex: 2, slot: 1)])
        h.append(BrokerEntryType.release, MessageIDList(ids: due).encoded())
        #expect(h.broker.maxOffset(q) == 2 && h.broker.delayedCount == 0)
        h.append(BrokerEntryType.release, MessageIDList(ids: due).encoded())
        #expect(h.broker.maxOffset(q) == 2, "a second release of the same ids does nothing")
        let pulled = try h.broker.pull(PullRequest(topic: "t", queueID: 0, offset: 0)).get()
        #expect(pulled.messages.map { $0.message.body } == [[1], [2]])
        // Recall.
        _ = delayedSend(&h, at: 2000, properties: ["DELAY": "3"])
        let id = MessageID(entryIndex: h.log.next - 1, slot: 0)
        #expect(h.append(BrokerEntryType.recall, MessageIDList(ids: [id]).encoded()) == .done)
        #expect(h.broker.delayedCount == 0)
        h.append(BrokerEntryType.release, MessageIDList(ids: [id]).encoded())
        #expect(h.broker.maxOffset(q) == 2, "a recalled message is never released")
        if case .failed(let e) = h.append(BrokerEntryType.recall, MessageIDList(ids: [id]).encoded()) {
            #expect(e.code == ErrorCode.messageNotFound)
        } else {
            Issue.record("recalled twice")
        }
        // Mixed delays in one send are refused.
        let mixed = SendRequest(topic: "t", queueID: 0, messages: [WireMessage(properties: ["DELAY": "1"], body: [1]), WireMessage(body: [2])])
        var w = WireWriter()
        w.u64(3000)
        if case .failed = h.append(BrokerEntryType.messages, w.bytes + mixed.encoded()) {} else { Issue.record("a send mixing delays was stored") }
    }

    @Test("the timer's due walk returns exactly the pending messages due, earliest first", arguments: [1, 2, 3] as [UInt64])
    func timerHeap(seed: UInt64) {
        var rng = SplitMix(seed: seed)
        var index = TimerIndex()
        var model: [MessageID: UInt64] = [:]
        for k in 0..<500 {
            let id = MessageID(entryIndex: UInt64(k), slot: 0)
            let at = rng.next() % 10_000
            index.schedule(PendingTimer(deliverAt: at, id: id, queue: QueueRef(topic: "t", queueID: 0), position: 0, tagHash: 0))
            model[id] = at
            if rng.next() % 4 == 0, let victim = model.keys.sorted().first(where: { _ in rng.next() % 3 == 0 }) {
                index.release(victim)
                model[victim] = nil
            }
        }
        for now in stride(from: 0 as UInt64, through: 10_000, by: 997) {
            let expected = model.filter { $0.value <= now }.sorted { ($0.value, $0.key) < ($1.value, $1.key) }.map(\.key)
            #expect(index.due(now: now, max: 10_000).map(\.id) == expected)
        }
        #expect(index.next == model.values.min())
    }
}
