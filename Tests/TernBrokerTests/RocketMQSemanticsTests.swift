// What the RocketMQ 5 front relies on, in the broker's replicated state: sends stored once per
// client message id, typed topics, and FIFO receive/ack groups.
import TernProtocol
import Testing

@testable import TernBroker

extension Harness {
    @discardableResult
    mutating func sendKeyed(
        _ topic: String, queue: UInt32 = 0, producer: UInt64 = 0, sequence: UInt64 = 0, properties: [String: String], count: Int = 1, body: String = "m"
    ) -> ApplyOutcome {
        let request = SendRequest(
            topic: topic, queueID: queue, producerGroup: "pg", producerID: producer, sequence: sequence,
            messages: (0..<count).map { _ in WireMessage(properties: properties, body: Array(body.utf8)) })
        var w = WireWriter()
        w.u64(1000)
        return append(BrokerEntryType.messages, w.bytes + request.encoded())
    }

    /// A second broker restored from this one's snapshot, over the same log and queue files.
    func restoredCopy() throws -> Broker {
        try broker.queueFiles.sync()
        let copy = Broker(config: broker.config, source: log, queueFiles: scratch.files)
        let problem = try copy.restore(broker.snapshot())
        #expect(problem == nil)
        return copy
    }

    func stored(_ topic: String) throws -> Int {
        try (0..<(broker.topics[topic] ?? 0)).reduce(0) { n, q in
            n + (try broker.pull(PullRequest(topic: topic, queueID: q, offset: 0, maxMessages: 100)).get().messages.count)
        }
    }
}

@Suite("Broker: what RocketMQ 5 clients rely on")
struct RocketMQSemanticsTests {
    @Test("a send retried with the same client message id is stored once, through another producer or queue")
    func clientIDDedupe() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 2).encoded())
        guard case .sent(let first) = h.sendKeyed("t", queue: 0, producer: 1, sequence: 1, properties: ["UNIQ_KEY": "A"]) else {
            Issue.record("first send refused"); return
        }
        guard case .sent(let again) = h.sendKeyed("t", queue: 1, producer: 2, sequence: 7, properties: ["UNIQ_KEY": "A"]) else {
            Issue.record("retry refused"); return
        }
        #expect(again.duplicate && again.queueID == 0 && again.entryIndex == first.entryIndex)
        #expect(try h.stored("t") == 1)
        // Found by the client's id, as by a key (the key index holds it).
        #expect(try h.broker.messages(topic: "t", key: "A", max: 5).map(\.message.properties["UNIQ_KEY"]) == ["A"])
        #expect(try h.broker.messages(topic: "t", key: "B", max: 5).isEmpty)
        // Another id, the same id in another topic, and batches (not keyed) are stored.
        h.sendKeyed("t", properties: ["UNIQ_KEY": "B"])
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "u", queues: 1).encoded())
        h.sendKeyed("u", properties: ["UNIQ_KEY": "A"])
        h.sendKeyed("t", properties: ["UNIQ_KEY": "C"], count: 2)
        h.sendKeyed("t", properties: ["UNIQ_KEY": "C"], count: 2)
        #expect(try h.stored("t") == 6 && h.stored("u") == 1)
        // Retry copies keep their origin's id but are keyed by (origin, count): both stored.
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "%RETRY%g", queues: 1).encoded())
        h.sendKeyed("%RETRY%g", properties: ["UNIQ_KEY": "A", "RETRY_KEY": "A/1"])
        h.sendKeyed("%RETRY%g", properties: ["UNIQ_KEY": "A", "RETRY_KEY": "A/2"])
        h.sendKeyed("%RETRY%g", properties: ["UNIQ_KEY": "A", "RETRY_KEY": "A/2"])
        #expect(try h.stored("%RETRY%g") == 2)
        // The window survives a snapshot.
        let restored = try h.restoredCopy()
        let retry = SendRequest(topic: "t", queueID: 1, producerGroup: "pg", messages: [WireMessage(properties: ["UNIQ_KEY": "A"], body: [1])])
        var w = WireWriter()
        w.u64(1000)
        guard case .sent(let later) = try restored.apply(index: h.log.next, type: BrokerEntryType.messages, body: w.bytes + retry.encoded()) else {
            Issue.record("refused"); return
        }
        #expect(later.duplicate && later.entryIndex == first.entryIndex)
    }

    @Test("a dead letter resent and failing again is retried, not taken for its earlier retry (found in review: it vanished)")
    func resentDeadLetterRetries() throws {
        var h = Harness()
        for t in ["t", "%RETRY%g", "%DLQ%g"] { h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: t, queues: 1).encoded()) }
        h.sendKeyed("t", properties: [:], body: "m")
        func last(_ topic: String) throws -> ReceivedMessage {
            try #require(try h.broker.pull(PullRequest(topic: topic, queueID: 0, offset: 0, maxMessages: 100)).get().messages.last)
        }
        @discardableResult
        func giveBack(_ m: ReceivedMessage) -> ApplyOutcome {
            var w = WireWriter()
            w.u64(1000)
            return h.append(BrokerEntryType.messages, w.bytes + Broker.sendBack(m, group: "g", delayMillis: 0, maxReconsumeTimes: 1).encoded())
        }
        giveBack(try last("t"))  // retry 1
        giveBack(try last("%RETRY%g"))  // past the maximum: dead
        #expect(try h.stored("%RETRY%g") == 1 && h.stored("%DLQ%g") == 1)
        // `tern admin dlq resend`: the dead letter's copy, counts cleared, one resend more.
        let dead = try last("%DLQ%g")
        var props = dead.message.properties
        props[RetryProperty.reconsumeTimes] = nil
        props[RetryProperty.retryKey] = nil
        props[RetryProperty.resends] = "1"
        h.sendKeyed("%RETRY%g", properties: props, body: "m")
        #expect(try h.stored("%RETRY%g") == 2)
        // It fails again: a new retry, not the first one's answer.
        guard case .sent(let again) = giveBack(try last("%RETRY%g")) else { Issue.record("refused"); return }
        #expect(!again.duplicate)
        #expect(try h.stored("%RETRY%g") == 3)
    }

    @Test("a topic deleted and created again starts a new window of client message ids")
    func recreatedTopicForgetsIDs() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.sendKeyed("t", properties: ["UNIQ_KEY": "A"])
        h.append(BrokerEntryType.admin, AdminCommand.deleteTopic(name: "t").encoded())
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        guard case .sent(let r) = h.sendKeyed("t", properties: ["UNIQ_KEY": "A"]) else { Issue.record("refused"); return }
        #expect(try !r.duplicate && h.stored("t") == 1)
    }

    @Test("a typed topic keeps its type: repeated creates must match; snapshots carry it")
    func topicTypes() throws {
        var h = Harness()
        #expect(h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "f", queues: 2, type: .fifo).encoded()) == .done)
        #expect(h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "f", queues: 2, type: .fifo).encoded()) == .done)
        guard case .failed(let e) = h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "f", queues: 2).encoded()) else {
            Issue.record("a mixed create of a fifo topic succeeded"); return
        }
        #expect(e.code == ErrorCode.topicExists)
        #expect(h.broker.topicInfo("f")?.type == .fifo)
        #expect(
            try AdminCommand.decode(AdminCommand.createTopic(name: "d", queues: 1, type: .delay).encoded()) == .createTopic(name: "d", queues: 1, type: .delay))
        // An entry written before types existed decodes as mixed.
        var w = WireWriter()
        w.u8(1)
        w.string("old")
        w.u32(3)
        #expect(try AdminCommand.decode(w.bytes) == .createTopic(name: "old", queues: 3, type: .mixed))
        #expect(h.append(BrokerEntryType.admin, AdminCommand.createGroup(name: "fg", fifo: true).encoded()) == .done)
        let copy = try h.restoredCopy()
        #expect(copy.topicTypes == ["f": .fifo] && copy.groupSettings == ["fg": true])
        #expect(copy.snapshot() == h.broker.snapshot())
        h.append(BrokerEntryType.admin, AdminCommand.deleteTopic(name: "f").encoded())
        #expect(h.broker.topicTypes.isEmpty)
    }

    @Test("one property is read from an encoded message without decoding the rest; truncated input gives nil")
    func propertyLookup() {
        var w = WireWriter()
        WireMessage(tag: "t", keys: ["k1", "UNIQ_KEY"], properties: ["A": "1", "UNIQ_KEY": "X9", "Z": "2"], body: [1, 2]).encode(into: &w)
        let bytes = w.bytes
        #expect(WireMessage.property(named: "UNIQ_KEY", at: WireReader(bytes)) == "X9")
        #expect(WireMessage.property(named: "Z", at: WireReader(bytes)) == "2")
        #expect(WireMessage.property(named: "UNIQ", at: WireReader(bytes)) == nil)
        for cut in 0..<bytes.count {
            let found = WireMessage.property(named: "Z", at: WireReader(Array(bytes[0..<cut])))
            #expect(found == nil || found == "2")
        }
    }

    @Test("a message's type comes from its properties")
    func messageTypes() {
        #expect(TopicType.of([:]) == .normal)
        #expect(TopicType.of(["SHARDING_KEY": "g"]) == .fifo)
        #expect(TopicType.of(["TIMER_DELIVER_MS": "5"]) == .delay)
        #expect(TopicType.of(["DELAY": "2"]) == .delay)
        #expect(TopicType.of(["TRAN_MSG": "true", "SHARDING_KEY": "g"]) == .transaction)
        #expect(TopicType(name: "fifo") == .fifo && TopicType(name: "FIFO") == nil)
    }

    func receive(_ h: inout Harness, group: String, now: UInt64, max: UInt32 = 10, inFlight: Set<QueueRef> = []) throws -> [UInt64] {
        guard
            let entry = try h.broker.chooseForReceive(
                ReceiveRequest(group: group, topic: "t", maxMessages: max, invisibleMillis: 1000), now: now, startQueue: 0, proposedNext: [:],
                proposedAgain: [], inFlight: inFlight
            ).get()
        else { return [] }
        guard case .received(let grants) = h.append(BrokerEntryType.receive, entry.encoded()) else { return [] }
        return grants.map(\.handle.offset)
    }

    func ack(_ h: inout Harness, group: String, _ offset: UInt64) {
        let index = h.broker.receiveGroups[group]![QueueRef(topic: "t", queueID: 0)]!.invisible[offset]!.receiveIndex
        let handle = ReceiptHandle(queue: QueueRef(topic: "t", queueID: 0), offset: offset, receiveIndex: index)
        #expect(h.append(BrokerEntryType.receipt, ReceiptEntry(group: group, handle: handle, until: nil).encoded()) == .done)
    }

    @Test("a FIFO group's queue is blocked while a delivery is invisible; a lapsed one comes again first, in order")
    func fifoGroup() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.append(BrokerEntryType.admin, AdminCommand.createGroup(name: "fg", fifo: true).encoded())
        for k in 0..<6 { h.sendKeyed("t", properties: ["SHARDING_KEY": "g"], body: "m\(k)") }
        #expect(try receive(&h, group: "fg", now: 1000, max: 2) == [0, 1])
        #expect(try receive(&h, group: "fg", now: 1100) == [])  // blocked: 0 and 1 are invisible
        ack(&h, group: "fg", 0)
        #expect(try receive(&h, group: "fg", now: 1200) == [])  // still blocked by 1
        #expect(try receive(&h, group: "fg", now: 2100) == [1])  // 1 lapsed: it alone, again
        ack(&h, group: "fg", 1)
        #expect(try receive(&h, group: "fg", now: 2200, max: 3) == [2, 3, 4])
        // A receive proposed and not yet applied blocks the queue for the next choice too.
        ack(&h, group: "fg", 2)
        ack(&h, group: "fg", 3)
        ack(&h, group: "fg", 4)
        #expect(try receive(&h, group: "fg", now: 2300, inFlight: [QueueRef(topic: "t", queueID: 0)]) == [])
        #expect(try receive(&h, group: "fg", now: 2300) == [5])
        // A non-FIFO group takes everything at once and goes on while some are invisible.
        #expect(try receive(&h, group: "plain", now: 1000, max: 2) == [0, 1])
        #expect(try receive(&h, group: "plain", now: 1100) == [2, 3, 4, 5])
    }

    @Test("applying a FIFO receive chosen on stale state grants nothing from a blocked queue")
    func fifoApplyRecheck() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.append(BrokerEntryType.admin, AdminCommand.createGroup(name: "fg", fifo: true).encoded())
        for k in 0..<4 { h.sendKeyed("t", properties: [:], body: "m\(k)") }
        // Two choices made before either applied (the leader's bookkeeping bypassed on purpose).
        let request = ReceiveRequest(group: "fg", topic: "t", maxMessages: 2, invisibleMillis: 1000)
        let a = try #require(try h.broker.chooseForReceive(request, now: 1000, startQueue: 0, proposedNext: [:], proposedAgain: []).get())
        let b = ReceiveEntry(group: "fg", topic: "t", now: 1000, until: 2000, queues: [ReceiveEntry.Queue(queueID: 0, next: 4, offsets: [2, 3])])
        guard case .received(let first) = h.append(BrokerEntryType.receive, a.encoded()) else { Issue.record("no grant"); return }
        guard case .received(let second) = h.append(BrokerEntryType.receive, b.encoded()) else { Issue.record("no grant"); return }
        #expect(first.map(\.handle.offset) == [0, 1])
        #expect(second.isEmpty)
        #expect(h.broker.receiveState(group: "fg", queue: QueueRef(topic: "t", queueID: 0))?.next == 2)
    }
}
