import TernProtocol
import TernStorage
import Testing

@testable import TernBroker

extension Harness {
    @discardableResult
    mutating func sendHalf(
        _ topic: String, body: String, at time: UInt64 = 1000, extra: [String: String] = [:], count: Int = 1, group: String = "pg"
    ) -> ApplyOutcome {
        var props = extra
        props[TransactionProperty.half] = "true"
        let request = SendRequest(
            topic: topic, queueID: 0, producerGroup: group, messages: (0..<count).map { _ in WireMessage(properties: props, body: Array(body.utf8)) })
        var w = WireWriter()
        w.u64(time)
        return append(BrokerEntryType.messages, w.bytes + request.encoded())
    }

    /// The body of a commit entry, with the copy of the half message a leader adds.
    func commit(_ id: MessageID, group: String = "pg") -> [UInt8] {
        let copy = broker.checkTimers.pending[id].flatMap { try? broker.carryItem($0) }
        return TransactionEnd(group: group, id: id, decision: .commit, copy: copy).encoded()
    }

    func bodies(_ topic: String, queue: UInt32 = 0) throws -> [String] {
        try broker.pull(PullRequest(topic: topic, queueID: queue, offset: 0, maxMessages: 100)).get().messages.map {
            String(decoding: $0.message.body, as: UTF8.self)
        }
    }
}

@Suite("Broker: transactional messages")
struct TransactionTests {
    @Test("a half message is invisible until committed, then takes its place at the end of its queue")
    func commit() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        guard case .sent(let r) = h.sendHalf("t", body: "half") else { Issue.record("half message refused"); return }
        #expect(r.firstQueueOffset == SendResponse.scheduled)
        let id = MessageID(entryIndex: r.entryIndex, slot: 0)
        h.send("t")
        #expect(try h.bodies("t").count == 1)
        #expect(try h.broker.message(id) == nil)
        #expect(h.append(BrokerEntryType.transactionEnd, h.commit(id, group: "other")) != .done)
        // A commit without its copy (proposed before the half message applied) is sent back.
        guard case .failed(let busy) = h.append(BrokerEntryType.transactionEnd, TransactionEnd(group: "pg", id: id, decision: .commit).encoded()),
            busy.code == ErrorCode.busy
        else {
            Issue.record("a commit without a copy was applied")
            return
        }
        #expect(h.append(BrokerEntryType.transactionEnd, h.commit(id)) == .done)
        #expect(try h.bodies("t").last == "half")
        #expect(try h.broker.message(id)?.queueOffset == 1)
        // Repeating the decision is answered the same; the opposite one is refused.
        #expect(h.append(BrokerEntryType.transactionEnd, h.commit(id)) == .done)
        guard case .failed(let e) = h.append(BrokerEntryType.transactionEnd, TransactionEnd(group: "pg", id: id, decision: .rollback).encoded()) else {
            Issue.record("rollback after commit accepted"); return
        }
        #expect(e.code == ErrorCode.transactionDecided)
        #expect(try h.bodies("t").count == 2)
    }

    @Test("a rolled-back half message is never delivered")
    func rollback() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        guard case .sent(let r) = h.sendHalf("t", body: "half") else { Issue.record("half message refused"); return }
        let id = MessageID(entryIndex: r.entryIndex, slot: 0)
        #expect(h.append(BrokerEntryType.transactionEnd, TransactionEnd(group: "pg", id: id, decision: .rollback).encoded()) == .done)
        #expect(try h.bodies("t").isEmpty)
        #expect(h.broker.decision(id) == .rollback)
        #expect(h.broker.halfMessages.isEmpty && h.broker.checkTimers.count == 0)
    }

    @Test("checks are counted in the log; the one after the last allowed rolls back")
    func checks() throws {
        var config = BrokerConfig()
        config.transactionCheckFirstMillis = 100
        config.transactionCheckIntervalMillis = 1000
        config.transactionMaxChecks = 3
        var h = Harness(config: config)
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        guard case .sent(let r) = h.sendHalf("t", body: "half", at: 5000) else { Issue.record("half message refused"); return }
        let id = MessageID(entryIndex: r.entryIndex, slot: 0)
        #expect(h.broker.checkTimers.next == 5100)
        #expect(h.broker.checkTimers.due(now: 5099, max: 10).isEmpty)
        var now: UInt64 = 5100
        for k in 1...3 {
            #expect(h.broker.checkTimers.due(now: now, max: 10).map(\.id) == [id])
            #expect(h.append(BrokerEntryType.transactionCheck, TransactionCheck(now: now, ids: [id]).encoded()) == .checks([id]))
            #expect(try h.broker.halfMessage(id)?.message.properties[TransactionProperty.checkTimes] == String(k))
            #expect(h.broker.checkTimers.next == now + 1000)
            #expect(h.broker.checkTimers.due(now: now + 999, max: 10).isEmpty)
            now += 1000
        }
        #expect(h.append(BrokerEntryType.transactionCheck, TransactionCheck(now: now, ids: [id]).encoded()) == .checks([]))
        #expect(h.broker.decision(id) == .rollback)
        #expect(h.broker.checkTimers.next == nil)
        guard case .failed(let e) = h.append(BrokerEntryType.transactionEnd, h.commit(id)) else {
            Issue.record("late commit accepted"); return
        }
        #expect(e.code == ErrorCode.transactionDecided)
        #expect(try h.bodies("t").isEmpty)
    }

    @Test("half messages: one per send, with a producer group, not delayed")
    func rules() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        for outcome in [
            h.sendHalf("t", body: "x", count: 2), h.sendHalf("t", body: "x", extra: ["TIMER_DELAY_MS": "5000"]), h.sendHalf("t", body: "x", group: ""),
        ] {
            guard case .failed(let e) = outcome else { Issue.record("accepted: \(outcome)"); continue }
            #expect(e.code == ErrorCode.badRequest)
        }
        #expect(h.broker.halfMessages.isEmpty)
    }
}

@Suite("Broker: receive/ack with an invisible time")
struct ReceiveTests {
    func receive(
        _ h: inout Harness, now: UInt64, max: UInt32 = 10, invisible: UInt64 = 1000, tags: String = "*", again: Set<DeliveryKey> = [],
        next: [QueueRef: UInt64] = [:]
    ) throws -> [ReceivedGrant] {
        guard
            let entry = try h.broker.chooseForReceive(
                ReceiveRequest(group: "g", topic: "t", tagFilter: tags, maxMessages: max, invisibleMillis: invisible), now: now, startQueue: 0,
                proposedNext: next, proposedAgain: again
            ).get()
        else { return [] }
        guard case .received(let grants) = h.append(BrokerEntryType.receive, entry.encoded()) else { Issue.record("receive entry did not apply"); return [] }
        return grants
    }

    @Test("received messages stay invisible until their time, come back with the attempt counted, and go on acknowledgement")
    func invisibleThenBack() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.send("t", tags: ["a", "b", "c"])
        let first = try receive(&h, now: 10_000, max: 2)
        #expect(first.map(\.handle.offset) == [0, 1] && first.allSatisfy { $0.attempt == 1 && $0.until == 11_000 })
        #expect(try receive(&h, now: 10_500).map(\.handle.offset) == [2])
        #expect(try receive(&h, now: 10_999).isEmpty)
        #expect(h.append(BrokerEntryType.receipt, ReceiptEntry(group: "g", handle: first[0].handle, until: nil).encoded()) == .done)
        let again = try receive(&h, now: 11_000)
        #expect(again.map(\.handle.offset) == [1] && again[0].attempt == 2)
        // The first delivery's handle is stale now; acknowledging the consumed one again is fine.
        guard case .failed(let e) = h.append(BrokerEntryType.receipt, ReceiptEntry(group: "g", handle: first[1].handle, until: nil).encoded()) else {
            Issue.record("stale handle accepted"); return
        }
        #expect(e.code == ErrorCode.receiptExpired)
        #expect(h.append(BrokerEntryType.receipt, ReceiptEntry(group: "g", handle: first[0].handle, until: nil).encoded()) == .done)
        #expect(h.append(BrokerEntryType.receipt, ReceiptEntry(group: "g", handle: first[0].handle, until: 99_000).encoded()) != .invisibleUntil(99_000))
        #expect(h.append(BrokerEntryType.receipt, ReceiptEntry(group: "g", handle: again[0].handle, until: 50_000).encoded()) == .invisibleUntil(50_000))
        #expect(try receive(&h, now: 49_999).map(\.handle.offset) == [2])
        #expect(try receive(&h, now: 50_000).map(\.handle.offset) == [1])  // 2 is invisible again until 50,999
    }

    @Test("a receive entry grants only what is still there: a message taken meanwhile is left out")
    func raceLeavesOut() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.send("t", tags: ["a", "b"])
        let request = ReceiveRequest(group: "g", topic: "t", maxMessages: 10, invisibleMillis: 1000)
        let e1 = try h.broker.chooseForReceive(request, now: 1, startQueue: 0, proposedNext: [:], proposedAgain: []).get()!
        let e2 = try h.broker.chooseForReceive(request, now: 1, startQueue: 0, proposedNext: [:], proposedAgain: []).get()!
        guard case .received(let g1) = h.append(BrokerEntryType.receive, e1.encoded()), case .received(let g2) = h.append(BrokerEntryType.receive, e2.encoded())
        else { Issue.record("receive entries did not apply"); return }
        #expect(g1.count == 2 && g2.isEmpty)
        // The leader's overlay keeps a second choice off what is proposed.
        let ref = QueueRef(topic: "t", queueID: 0)
        h.send("t", tags: ["c"])
        #expect(try h.broker.chooseForReceive(request, now: 1, startQueue: 0, proposedNext: [ref: 3], proposedAgain: []).get() == nil)
    }

    @Test("a tag filter passes over other messages for the group")
    func tagFilter() throws {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.send("t", tags: ["a", "b", "a"])
        #expect(try receive(&h, now: 1, tags: "a").map(\.handle.offset) == [0, 2])
        #expect(h.broker.receiveState(group: "g", queue: QueueRef(topic: "t", queueID: 0))! == (3, 2))
    }
}
