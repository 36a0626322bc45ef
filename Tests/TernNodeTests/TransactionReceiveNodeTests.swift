import TernBroker
import TernProtocol
import Testing

@testable import TernNode

@Suite("Node: transactions and receive/ack", .serialized)
struct TransactionReceiveNodeTests {
    @Test("an undecided half message is checked with a polling producer at its time, committed by the answer")
    func checkBack() throws {
        let d = try Driver("txcheck") {
            $0.broker.transactionCheckFirstMillis = 500
            $0.broker.transactionCheckIntervalMillis = 1_000
        }
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        var request = sendRequest(["half"])
        request.messages[0].properties[TransactionProperty.half] = "true"
        let stored = d.now
        let r = try SendResponse.decode(try d.call(.send, request))
        let id = MessageID(entryIndex: r.entryIndex, slot: 0)
        let poll = try d.request(.pollTransactionChecks, TransactionCheckPoll(group: "pg", clientID: "c1", maxWaitMillis: 20_000).encoded())
        while d.reply(poll) == nil && d.now < stored + 2_000 {
            try d.tick()
        }
        guard case .success(let body)? = d.reply(poll) else { Issue.record("no check by \(d.now)"); return }
        #expect(d.now >= stored + 500 && d.now <= stored + 600, "checked at \(d.now - stored) ms")
        let checked = try MessageList.decode(body).messages
        #expect(checked.map(\.id) == [id] && checked[0].message.properties[TransactionProperty.checkTimes] == "1")
        #expect(try PullResponse.decode(try d.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0))).messages.isEmpty)
        _ = try d.call(.endTransaction, EndTransactionRequest(group: "pg", id: id, decision: .commit, fromCheck: true))
        let pulled = try PullResponse.decode(try d.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0)))
        #expect(pulled.messages.map(\.id) == [id])
        try d.close()
    }

    // Simulator seed 50031 (before the fix): checks counted while no producer of the group was
    // polling the leader (leadership moved, polls were held elsewhere), and a transaction its
    // producer had committed locally was rolled back after eight checks nobody could answer.
    @Test("no check is spent while no producer of the group polls; a late poll gets check 1; producers that stay away get a rollback at the give-up age")
    func checksWaitForAPollThenGiveUp() throws {
        let d = try Driver("txgiveup") {
            $0.broker.transactionCheckFirstMillis = 200
            $0.broker.transactionCheckIntervalMillis = 200
            $0.broker.transactionMaxChecks = 2
        }
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        func half(_ body: String) throws -> MessageID {
            var request = sendRequest([body])
            request.messages[0].properties[TransactionProperty.half] = "true"
            return MessageID(entryIndex: try SendResponse.decode(try d.call(.send, request)).entryIndex, slot: 0)
        }
        let first = try half("a")
        let stored = d.now
        // Five check intervals with nobody polling (still short of the give-up age): no check is
        // counted.
        while d.now < stored + 1_000 { try d.tick() }
        #expect(d.node.broker.halfMessages[first]?.checks == 0)
        let poll = try d.request(.pollTransactionChecks, TransactionCheckPoll(group: "pg", clientID: "c1", maxWaitMillis: 5_000).encoded())
        while d.reply(poll) == nil && d.now < stored + 1_150 { try d.tick() }
        guard case .success(let body)? = d.reply(poll) else { Issue.record("no check after the poll"); return }
        let checked = try MessageList.decode(body).messages
        #expect(checked.map(\.id) == [first] && checked[0].message.properties[TransactionProperty.checkTimes] == "1")
        // A second half message whose producers never poll: rolled back at the give-up age,
        // 2 x (200 + 2 x 200) = 1,200 ms, and not before.
        let second = try half("b")
        let storedSecond = d.now
        let giveUp = d.node.config.broker.transactionGiveUpMillis
        #expect(giveUp == 1_200)
        while d.node.broker.halfMessages[second] != nil && d.now < storedSecond + 5_000 { try d.tick() }
        #expect(d.node.broker.halfMessages[second] == nil && d.node.broker.decision(second) == .rollback)
        #expect(d.now >= storedSecond + giveUp, "rolled back after \(d.now - storedSecond) ms")
        #expect(throws: ErrorBody.self) { try d.call(.endTransaction, EndTransactionRequest(group: "pg", id: second, decision: .commit, fromCheck: false)) }
        try d.close()
    }

    @Test("a FIFO group gets a queue's next batch once the last is acknowledged, from the same leader (found in review: it got none until a new leader)")
    func fifoGroupGoesOn() throws {
        let d = try Driver("fifo-receive")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        _ = try d.call(.createGroup, GroupRequest(name: "fg", fifo: true))
        _ = try d.call(.send, sendRequest(["a", "b", "c", "d"]))
        func receive(_ max: UInt32) throws -> [ReceivedDelivery] {
            try ReceiveResponse.decode(try d.call(.receive, ReceiveRequest(group: "fg", topic: "t", maxMessages: max, invisibleMillis: 60_000))).deliveries
        }
        let first = try receive(2)
        #expect(first.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["a", "b"])
        #expect(try receive(2).isEmpty, "a FIFO queue handed out more while a batch was invisible")
        for delivery in first { _ = try d.call(.ack, ReceiptRequest(group: "fg", handle: delivery.handle)) }
        let second = try receive(2)
        #expect(second.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["c", "d"])
        #expect(d.node.receiveInFlight.isEmpty, "receive entries applied but still counted in flight: \(d.node.receiveInFlight)")
    }

    @Test("consumer progress: members and their queues, committed offsets, lag per queue (topic's max minus committed), receive groups' unacknowledged")
    func groupProgress() throws {
        let d = try Driver("progress")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 2))
        _ = try d.call(.send, sendRequest(["a", "b", "c", "d", "e"], queue: 0))
        _ = try d.call(.send, sendRequest(["f", "g", "h"], queue: 1))
        _ = try d.call(.commitOffset, CommitOffsetRequest(group: "g", offsets: [QueueRef(topic: "t", queueID: 0): 2]))
        _ = try d.call(.heartbeat, HeartbeatRequest(group: "g", clientID: "c1", mode: .clustering, topics: ["t"]))
        let p = try GroupProgress.decode(try d.call(.groupProgress, NameRequest(name: "g")))
        #expect(p.members.map(\.clientID) == ["c1"] && p.members[0].queues.count == 2)
        #expect(p.queues.map(\.queue.queueID) == [0, 1])
        #expect(p.queues[0].committed == 2 && p.queues[0].maxOffset == 5 && p.queues[0].lag == 3 && p.queues[0].lastConsumedStored > 0)
        #expect(p.queues[1].committed == nil && p.queues[1].lag == 3)
        #expect(p.totalLag == 6)
        // A receive/ack group: two handed out and not acknowledged still count.
        _ = try d.call(.receive, ReceiveRequest(group: "rg", topic: "t", maxMessages: 2, invisibleMillis: 60_000))
        let r = try GroupProgress.decode(try d.call(.groupProgress, NameRequest(name: "rg")))
        #expect(r.totalLag == 8, "\(r.queues)")
        #expect(r.queues.map(\.invisible).reduce(0, +) == 2)
        #expect(try GroupList.decode(try d.call(.listGroups, Empty())).names == ["g", "rg"])
        // The traffic counters the metrics read: two send requests of t, three messages pulled,
        // two received.
        _ = try d.call(.pull, PullRequest(topic: "t", queueID: 1, offset: 0))
        let t = d.node.traffic.byTopic["t"]
        #expect(t?.sendRequests == 2 && (t?.sendBytes ?? 0) > 0, "\(String(describing: t))")
        #expect(t?.deliveredMessages == 5 && (t?.deliveredBytes ?? 0) > 0, "\(String(describing: t))")
    }

    @Test("traffic is counted per topic for at most Traffic.maxTopics topics, the rest under other")
    func trafficBounded() {
        var traffic = Traffic()
        for i in 0..<(Traffic.maxTopics + 5) { traffic.sent("t\(i)", bytes: 10) }
        traffic.sent("t0", bytes: 10)
        traffic.delivered("t0", messages: 3, bytes: 99)
        traffic.delivered("t1", messages: 0, bytes: 99)
        #expect(traffic.byTopic.count == Traffic.maxTopics)
        #expect(traffic.other.sendRequests == 5 && traffic.other.sendBytes == 50)
        #expect(traffic.byTopic["t0"]?.sendRequests == 2 && traffic.byTopic["t0"]?.deliveredMessages == 3)
        #expect(traffic.byTopic["t1"]?.deliveredBytes == 0, "an empty answer delivers nothing")
    }

    @Test("receive, invisible until its time, received again with the attempt counted; ack ends it; long polling")
    func receiveAck() throws {
        let d = try Driver("receive")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 2))
        _ = try d.call(.send, sendRequest(["a", "b"]))
        let first = try ReceiveResponse.decode(try d.call(.receive, ReceiveRequest(group: "g", topic: "t", maxMessages: 10, invisibleMillis: 500))).deliveries
        #expect(first.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["a", "b"])
        #expect(first.allSatisfy { $0.attempt == 1 && $0.invisibleUntil == d.now + 500 })
        _ = try d.call(.ack, ReceiptRequest(group: "g", handle: first[0].handle))
        // Held: nothing visible until "b" comes back.
        let start = d.now
        let held = try d.request(.receive, ReceiveRequest(group: "g", topic: "t", maxMessages: 10, invisibleMillis: 500, maxWaitMillis: 5_000).encoded())
        while d.reply(held) == nil && d.now < start + 2_000 { try d.tick() }
        guard case .success(let body)? = d.reply(held) else { Issue.record("held receive not answered"); return }
        let again = try ReceiveResponse.decode(body).deliveries
        #expect(again.map(\.attempt) == [2] && again[0].message.id == first[1].message.id)
        #expect(d.now >= first[1].invisibleUntil, "received again at \(d.now), invisible until \(first[1].invisibleUntil)")
        #expect(throws: ErrorBody.self) { try d.call(.ack, ReceiptRequest(group: "g", handle: first[1].handle)) }
        let until = try ChangeInvisibleResponse.decode(
            try d.call(.changeInvisible, ReceiptRequest(group: "g", handle: again[0].handle, invisibleMillis: 60_000))
        ).invisibleUntil
        #expect(until == d.now + 60_000)
        _ = try d.call(.ack, ReceiptRequest(group: "g", handle: again[0].handle))
        #expect(try ReceiveResponse.decode(try d.call(.receive, ReceiveRequest(group: "g", topic: "t", invisibleMillis: 500))).deliveries.isEmpty)
        #expect(throws: ErrorBody.self) { try d.call(.receive, ReceiveRequest(group: "g", topic: "t", invisibleMillis: 5)) }
        try d.close()
    }
}
