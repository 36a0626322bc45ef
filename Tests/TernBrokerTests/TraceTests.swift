// Message trace in the replicated state (Trace.swift): every step of a traced message, through
// delays, receives, retries and acknowledgements, bounded, covered by retention, in snapshots.
import TernProtocol
import Testing

@testable import TernBroker

extension Harness {
    mutating func traceTopic(_ topic: String, on: Bool = true) -> ApplyOutcome {
        append(BrokerEntryType.traceTopic, TraceTopicRequest(topic: topic, on: on).encoded())
    }

    /// A delayed message (one) stored at `time`, due `delay` later.
    @discardableResult
    mutating func sendDelayed(_ topic: String, delay: UInt64, at time: UInt64) -> MessageID {
        let request = SendRequest(
            topic: topic, queueID: 0, producerGroup: "pg", messages: [WireMessage(properties: [Delay.delayMillisProperty: String(delay)], body: [1])])
        var w = WireWriter()
        w.u64(time)
        let index = log.next
        append(BrokerEntryType.messages, w.bytes + request.encoded())
        return MessageID(entryIndex: index, slot: 0)
    }

    /// A release entry for `ids` as a leader writes it (with copies), stamped `at`.
    mutating func release(_ ids: [MessageID], at: UInt64?) {
        for id in ids { try? broker.loadDelayBucket(holding: id) }
        let items = ids.compactMap { id in broker.timers.pending[id].flatMap { t in (try? broker.carryItem(t)).flatMap { $0 }.map { (id, $0) } } }
        #expect(items.count == ids.count, "every message released is pending")
        append(BrokerEntryType.releaseCopies, ReleaseCopies(items: items, at: at).encoded())
    }

    mutating func receive(_ group: String, _ topic: String, now: UInt64, invisible: UInt64 = 1000) throws -> [ReceivedGrant] {
        guard
            let entry = try broker.chooseForReceive(
                ReceiveRequest(group: group, topic: topic, maxMessages: 10, invisibleMillis: invisible), now: now, startQueue: 0, proposedNext: [:],
                proposedAgain: []
            )
            .get()
        else { return [] }
        guard case .received(let grants) = append(BrokerEntryType.receive, entry.encoded()) else { return [] }
        return grants
    }
}

@Suite("Broker: message trace")
struct TraceTests {
    @Test("a delayed message received, redelivered after its invisible time, given back, and acknowledged: every step, with its time and entry")
    func lifecycle() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        #expect(h.traceTopic("t") == .done)
        #expect(h.traceTopic("missing") != .done)
        let id = h.sendDelayed("t", delay: 5_000, at: 10_000)
        let untraced = h.sendDelayed("t", delay: 5_000, at: 10_001)
        h.broker.traces.records[untraced] = nil  // as if its topic had not been traced
        h.release([id, untraced], at: 15_020)
        let first = try h.receive("rg", "t", now: 16_000)
        #expect(first.map(\.handle.offset) == [0, 1])
        let again = try h.receive("rg", "t", now: 17_000)  // the invisible time (1 s) lapsed
        #expect(again.first?.attempt == 2)
        guard !again.isEmpty else { return }
        h.append(BrokerEntryType.receipt, ReceiptEntry(group: "rg", handle: again[0].handle, until: 30_000, at: 17_100).encoded())
        h.append(BrokerEntryType.receipt, ReceiptEntry(group: "rg", handle: again[0].handle, until: nil, at: 17_200).encoded())
        // A pull group gives it back: a copy in its retry topic, released later, then consumed.
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "%RETRY%pg2", queues: 1).encoded())
        let m = try #require(try h.broker.message(id))
        let back = Broker.sendBack(m, group: "pg2", delayMillis: 1_000, maxReconsumeTimes: 16)
        var w = WireWriter()
        w.u64(18_000)
        let copyIndex = h.log.next
        h.append(BrokerEntryType.messages, w.bytes + back.encoded())
        let copy = MessageID(entryIndex: copyIndex, slot: 0)
        h.release([copy], at: 19_005)
        let retryQueue = QueueRef(topic: "%RETRY%pg2", queueID: 0)
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["pg2": [retryQueue: 1]], at: 19_500).encoded())

        let trace = try #require(h.broker.messageTrace(id))
        #expect(trace.id == id && trace.topic == "t" && trace.leader == "" && trace.term == 0, "the node fills these in from its log")
        let steps = trace.events.map { "\($0.kind) \($0.at) \($0.group) \($0.attempt)" }
        #expect(
            steps == [
                "delayed 10000  0", "released 15020  0", "received 16000 rg 1", "received 17000 rg 2", "invisible changed 17100 rg 0",
                "acknowledged 17200 rg 2", "retried 18000 pg2 1", "released 19005  0", "consumed 19500 pg2 0",
            ], "\(steps)")
        #expect(trace.events[0].detail == 15_000, "due time")
        #expect(trace.events[6].copy == copy && trace.events[7].queue == retryQueue && trace.events[8].queue == retryQueue)
        // The copy's id finds the same trace; the untraced message has none.
        #expect(h.broker.messageTrace(copy)?.id == id)
        #expect(h.broker.messageTrace(untraced) == nil)
        // In snapshots, whole, and the same bytes from the restored copy.
        let restored = try h.restoredCopy()
        #expect(restored.messageTrace(id) == trace && restored.messageTrace(copy)?.id == id)
        #expect(restored.snapshot() == h.broker.snapshot())
        // A consumer of the restored broker still finds the traced positions.
        restored.trace(copy, TraceEvent(kind: .consumed, at: 1, index: 99))
        #expect(restored.messageTrace(id)?.events.count == 10)
    }

    @Test("bounded: the newest traceCapacity messages, 64 steps each (the first 16 and the newest); retention removes what it deletes")
    func bounded() throws {
        var config = BrokerConfig()
        config.traceCapacity = 3
        var h = Harness(config: config)
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        _ = h.traceTopic("t")
        for _ in 0..<5 { h.send("t") }
        #expect(h.broker.traces.records.count == 3)
        let ids = (3...7).map { MessageID(entryIndex: UInt64($0), slot: 0) }
        #expect(h.broker.messageTrace(ids[0]) == nil && h.broker.messageTrace(ids[1]) == nil && h.broker.messageTrace(ids[2]) != nil)
        let q = QueueRef(topic: "t", queueID: 0)
        for k in 0..<100 { h.broker.trace(ids[4], TraceEvent(kind: .consumed, at: UInt64(k), index: 0, queue: q)) }
        let t = try #require(h.broker.messageTrace(ids[4]))
        #expect(t.events.count == 64 && t.dropped == 37)
        // Kept: the store and steps 0-14 (the first 16), then steps 52-99 (the newest 48).
        #expect(t.events[0].kind == .stored && t.events[15].at == 14 && t.events[16].at == 52 && t.events.last!.at == 99)
        // Offset commits find only what is still traced.
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g": [q: 5]], at: 5).encoded())
        #expect(h.broker.messageTrace(ids[2])?.events.last?.kind == .consumed)
        // Retention deletes entries before 6: the message stored at 5 goes, 6 and 7 stay.
        h.append(BrokerEntryType.trim, TrimEntry(index: 6, minimums: []).encoded())
        #expect(h.broker.messageTrace(ids[2]) == nil && h.broker.messageTrace(ids[3]) != nil)
        // Tracing off: new messages are not traced; a deleted topic stops being traced.
        _ = h.traceTopic("t", on: false)
        h.send("t")
        #expect(h.broker.traces.records.count == 2 && h.broker.tracedTopics.isEmpty)
    }

    @Test("found by review: a receipt with a forged offset (UInt64.max) on a traced topic is refused, never traps")
    func forgedReceipt() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        _ = h.traceTopic("t")
        h.send("t")
        _ = try h.receive("g", "t", now: 1_000)
        let forged = ReceiptHandle(queue: QueueRef(topic: "t", queueID: 0), offset: .max, receiveIndex: 1)
        guard case .failed(let e) = h.append(BrokerEntryType.receipt, ReceiptEntry(group: "g", handle: forged, until: nil, at: 5).encoded()) else {
            Issue.record("a forged receipt applied")
            return
        }
        #expect(e.code == ErrorCode.receiptExpired)
    }

    @Test("found by review: a traced topic deleted and created again: the old traces go, the new messages' steps are theirs, and a restored replica agrees")
    func deletedAndCreatedAgain() throws {
        var h = Harness()
        let q = QueueRef(topic: "t", queueID: 0)
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        _ = h.traceTopic("t")
        for _ in 0..<3 { h.send("t") }
        let old = MessageID(entryIndex: 3, slot: 0)
        #expect(h.broker.messageTrace(old) != nil)
        h.append(BrokerEntryType.admin, AdminCommand.deleteTopic(name: "t").encoded())
        #expect(h.broker.messageTrace(old) == nil && !h.broker.tracingActive)
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        _ = h.traceTopic("t")
        let fresh = MessageID(entryIndex: h.log.next, slot: 0)
        h.send("t")
        h.send("t")
        h.append(BrokerEntryType.offsets, OffsetCommit(groups: ["g": [q: 1]], at: 9).encoded())
        #expect(h.broker.messageTrace(fresh)?.events.map(\.kind) == [.stored, .consumed])
        // A replica restored from a snapshot and this one apply the next commit alike.
        let restored = try h.restoredCopy()
        #expect(restored.snapshot() == h.broker.snapshot())
        let body = OffsetCommit(groups: ["g": [q: 2]], at: 10).encoded()
        let index = h.log.next
        h.append(BrokerEntryType.offsets, body)
        _ = try restored.apply(index: index, type: BrokerEntryType.offsets, body: body)
        #expect(restored.snapshot() == h.broker.snapshot())
        #expect(h.broker.messageTrace(MessageID(entryIndex: fresh.entryIndex + 1, slot: 0))?.events.map(\.kind) == [.stored, .consumed])
    }

    @Test("found by review: ORIGIN_MESSAGE_ID on a message of an ordinary topic makes no copy of a traced message")
    func originOutsideRetryTopics() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "orders-archive", queues: 1).encoded())
        _ = h.traceTopic("t")
        let id = MessageID(entryIndex: h.log.next, slot: 0)
        h.send("t")
        h.sendKeyed("orders-archive", properties: [RetryProperty.originMessageID: id.description, RetryProperty.reconsumeTimes: "1"])
        #expect(h.broker.messageTrace(id)?.events.map(\.kind) == [.stored])
        #expect(h.broker.traces.aliases.isEmpty)
    }

    @Test("stamped entries decode with and without the leader's clock; an old layout still decodes")
    func stamps() throws {
        let handle = ReceiptHandle(queue: QueueRef(topic: "t", queueID: 1), offset: 4, receiveIndex: 9)
        for at in [nil, UInt64(77)] {
            #expect(try ReceiptEntry.decode(ReceiptEntry(group: "g", handle: handle, until: 5, at: at).encoded()).at == at)
            #expect(try OffsetCommit.decode(OffsetCommit(groups: ["g": [handle.queue: 3]], at: at).encoded()).at == at)
            #expect(try ReleaseCopies.decode(ReleaseCopies(items: [(MessageID(entryIndex: 1, slot: 0), [1, 2])], at: at).encoded()).at == at)
            for copy in [nil, [UInt8]([9, 9])] {
                let id = MessageID(entryIndex: 3, slot: 0)
                let end = try TransactionEnd.decode(TransactionEnd(group: "pg", id: id, decision: .commit, copy: copy, at: at).encoded())
                #expect(end.at == at && end.copy == copy && end.decision == .commit)
            }
        }
    }
}
