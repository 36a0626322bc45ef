import Glibc
import TernBroker
import TernProtocol
import TernRaft
import TernStorage
import Testing

@testable import TernNode

func temporaryDirectory(_ name: String) -> String {
    var template = Array("/tmp/tern-node-\(name)-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

/// One node on a real POSIX device in a temporary directory, driven by hand: requests in,
/// replies collected, disk completions fed back until nothing is in flight.
final class Driver {
    let device = PosixDevice()
    let directory: String
    var node: Node
    var now: UInt64 = 1_000
    var replies: [Reply] = []
    var nextID: UInt64 = 1

    init(_ name: String, members: [NodeID] = ["n1"], directory: String? = nil, adjust: (inout NodeConfig) -> Void = { _ in }) throws {
        self.directory = directory ?? temporaryDirectory(name)
        var config = Self.config(members)
        adjust(&config)
        node = try Node(config: config, device: device, directory: self.directory, logOptions: CommitlogOptions(segmentSizeBytes: 1 << 20), seed: 7)
    }

    static func config(_ members: [NodeID]) -> NodeConfig {
        NodeConfig(raft: RaftConfig(id: "n1", members: members), endpoints: Dictionary(uniqueKeysWithValues: members.map { ($0, "127.0.0.1:\($0.name)") }))
    }

    func take(_ out: NodeOutput) throws {
        replies += out.replies
        var pending = true
        while pending {
            pending = false
            if node.replica.log.isFlushing {
                _ = try node.replica.log.pump(wait: true)
                let more = try node.diskCompleted(now: now)
                replies += more.replies
                pending = true
            }
        }
    }

    func tick(_ n: Int = 1, advance: UInt64 = 10) throws {
        for _ in 0..<n {
            now += advance
            try take(try node.tick(now: now))
        }
    }

    func elect() throws {
        for _ in 0..<100 where !node.isReadyLeader { try tick() }
        #expect(node.isReadyLeader)
    }

    /// Sends a request; returns its id (the reply may come later).
    @discardableResult
    func request(_ op: Opcode, _ body: [UInt8]) throws -> UInt64 {
        let id = nextID
        nextID += 1
        try take(try node.handle([(ClientRef(connection: 1, requestID: id), Frame(opcode: op.rawValue, requestID: id, body: body))], now: now))
        return id
    }

    func reply(_ id: UInt64) -> Result<[UInt8], ErrorBody>? { replies.first { $0.to.requestID == id }?.result }

    func call(_ op: Opcode, _ body: some WireCodable) throws -> [UInt8] {
        let id = try request(op, body.encoded())
        switch reply(id) {
        case .success(let b): return b
        case .failure(let e): throw e
        case nil: throw ErrorBody(code: ErrorCode(rawValue: 0), message: "no reply to \(op)")
        }
    }

    func close() throws {
        try node.replica.log.close()
        device.shutdown()
    }
}

func sendRequest(_ bodies: [String], queue: UInt32 = 0, producer: UInt64 = 0, sequence: UInt64 = 0) -> SendRequest {
    SendRequest(
        topic: "t", queueID: queue, producerGroup: "pg", producerID: producer, sequence: sequence,
        messages: bodies.map { WireMessage(tag: "x", body: Array($0.utf8)) })
}

@Suite("Node: routing requests through Raft and the broker", .serialized)
struct NodeTests {
    // The broker held its node (its entry source) strongly, and the node held the broker: every
    // node ever made stayed in memory, and a 150-seed simulator sweep grew past 7 GB.
    @Test("a node and its broker are freed once their owner lets go (no reference cycle)")
    func nodeIsFreed() throws {
        weak var weakNode: Node?
        weak var weakBroker: Broker?
        do {
            let d = try Driver("freed")
            try d.elect()
            _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
            weakNode = d.node
            weakBroker = d.node.broker
            try d.close()
        }
        #expect(weakNode == nil, "the node outlived its owner")
        #expect(weakBroker == nil, "the broker outlived its node")
    }

    @Test("writes are answered once committed; pulls, offsets and topic lists read what was applied")
    func writeThenRead() throws {
        let d = try Driver("rw")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 2))
        let sent = try SendResponse.decode(try d.call(.send, sendRequest(["a", "b"])))
        #expect(sent.count == 2 && sent.firstQueueOffset == 0 && !sent.duplicate)
        let pulled = try PullResponse.decode(try d.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0)))
        #expect(pulled.messages.map { String(decoding: $0.message.body, as: UTF8.self) } == ["a", "b"])
        #expect(pulled.messages.map(\.id) == [MessageID(entryIndex: sent.entryIndex, slot: 0), MessageID(entryIndex: sent.entryIndex, slot: 1)])
        _ = try d.call(.commitOffset, CommitOffsetRequest(group: "g", offsets: [QueueRef(topic: "t", queueID: 0): 2]))
        #expect(try QueryOffsetResponse.decode(try d.call(.queryOffset, QueryOffsetRequest(group: "g", queue: QueueRef(topic: "t", queueID: 0)))).offset == 2)
        #expect(try TopicList.decode(try d.call(.listTopics, Empty())).topics.map(\.name) == ["t"])
        let route = try RouteResponse.decode(try d.call(.queryRoute, NameRequest(name: "t")))
        #expect(route.leader == "n1" && route.topicQueues == 2)
        try d.close()
    }

    @Test("a long poll is answered by the commit that fills its queue, or empty at its deadline")
    func longPoll() throws {
        let d = try Driver("poll")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        let held = try d.request(.pull, PullRequest(topic: "t", queueID: 0, offset: 0, maxWaitMillis: 5_000).encoded())
        #expect(d.reply(held) == nil, "nothing to return yet: held")
        _ = try d.call(.send, sendRequest(["late"]))
        let woken = try PullResponse.decode(try #require(try d.reply(held)?.get()))
        #expect(woken.messages.map { String(decoding: $0.message.body, as: UTF8.self) } == ["late"])
        let expiring = try d.request(.pull, PullRequest(topic: "t", queueID: 0, offset: 1, maxWaitMillis: 200).encoded())
        try d.tick(1, advance: 100)
        #expect(d.reply(expiring) == nil)
        try d.tick(1, advance: 150)
        let empty = try PullResponse.decode(try #require(try d.reply(expiring)?.get()))
        #expect(empty.messages.isEmpty && empty.nextOffset == 1 && empty.maxOffset == 1)
        try d.close()
    }

    @Test("an idempotent retry is answered from the dedupe window, stored once")
    func idempotentRetry() throws {
        let d = try Driver("dedupe")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        let first = try SendResponse.decode(try d.call(.send, sendRequest(["once"], producer: 9, sequence: 1)))
        let again = try SendResponse.decode(try d.call(.send, sendRequest(["once"], producer: 9, sequence: 1)))
        #expect(again.duplicate && again.entryIndex == first.entryIndex)
        #expect(d.node.broker.maxOffset(QueueRef(topic: "t", queueID: 0)) == 1)
        try d.close()
    }

    @Test("a follower refuses writes with NOT_LEADER and its view of the term; bad input gets codes 2 and 3")
    func followerAndBadInput() throws {
        let d = try Driver("follower", members: ["n1", "n2", "n3"])
        let id = try d.request(.send, sendRequest(["x"]).encoded())
        guard case .failure(let e) = d.reply(id) else {
            Issue.record("a follower accepted a write")
            return
        }
        #expect(e.code == ErrorCode.notLeader)
        #expect(try NotLeaderDetail.decode(e.detail) == NotLeaderDetail(leader: "", endpoint: "", term: 0))
        // Reads are served by followers.
        #expect(try TopicList.decode(try d.call(.listTopics, Empty())).topics.isEmpty)
        let unknown = try d.request(Opcode.raft, [])
        if case .failure(let u) = d.reply(unknown) { #expect(u.code == ErrorCode.unknownOpcode) } else { Issue.record("raft opcode accepted from a client") }
        let bad = try d.request(.pull, [1, 2, 3])
        if case .failure(let b) = d.reply(bad) { #expect(b.code == ErrorCode.badBody) } else { Issue.record("a bad body was accepted") }
        try d.close()
    }

    @Test("message lookups and an offset reset through the node; a bad SQL subscription is refused with its column")
    func lookupsAndReset() throws {
        let d = try Driver("lookup")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        var request = sendRequest(["one"])
        request.messages[0].keys = ["k1"]
        let sent = try SendResponse.decode(try d.call(.send, request))
        let byID = try MessageList.decode(try d.call(.queryMessage, QueryMessageRequest(id: MessageID(entryIndex: sent.entryIndex, slot: 0))))
        #expect(byID.messages.map { $0.message.body } == [Array("one".utf8)])
        let byKey = try MessageList.decode(try d.call(.queryMessage, QueryMessageRequest(topic: "t", key: "k1")))
        #expect(byKey.messages.count == 1)
        let missing = try d.request(.queryMessage, QueryMessageRequest(id: MessageID(entryIndex: 999, slot: 0)).encoded())
        if case .failure(let e) = d.reply(missing) { #expect(e.code == ErrorCode.messageNotFound) } else { Issue.record("found a message that does not exist") }
        let q = QueueRef(topic: "t", queueID: 0)
        _ = try d.call(.commitOffset, CommitOffsetRequest(group: "g", offsets: [q: 1]))
        let reset = try OffsetList.decode(try d.call(.resetOffset, ResetOffsetRequest(group: "g", topic: "", timestamp: 0)))
        #expect(reset.offsets == [q: 0])
        #expect(try QueryOffsetResponse.decode(try d.call(.queryOffset, QueryOffsetRequest(group: "g", queue: q))).offset == 0)
        let bad = try d.request(.heartbeat, HeartbeatRequest(group: "g", clientID: "c", mode: .clustering, topics: ["t"], sqlFilter: "a >").encoded())
        if case .failure(let e) = d.reply(bad) {
            #expect(e.code == ErrorCode.filterSyntax && e.message.contains("column 4"))
        } else {
            Issue.record("a bad filter was accepted")
        }
        try d.close()
    }

    @Test("the leader releases a delayed message on the first tick its clock reaches the due time, not before")
    func delayedRelease() throws {
        let d = try Driver("delay")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        var request = sendRequest(["later"])
        request.messages[0].properties["TIMER_DELAY_MS"] = "300"
        let stored = d.now
        let r = try SendResponse.decode(try d.call(.send, request))
        #expect(r.firstQueueOffset == SendResponse.scheduled)
        let q = QueueRef(topic: "t", queueID: 0)
        while d.now + 10 < stored + 300 {
            try d.tick()
            #expect(d.node.broker.maxOffset(q) == 0, "released early at \(d.now), due \(stored + 300)")
        }
        try d.tick(3)
        #expect(d.node.broker.maxOffset(q) == 1)
        let pulled = try PullResponse.decode(try d.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0)))
        #expect(pulled.messages.map { String(decoding: $0.message.body, as: UTF8.self) } == ["later"])
        try d.close()
    }

    @Test("queue locks: none until a lease after taking over; exclusive while held; renewed; released by unlock or expiry")
    func locks() throws {
        let d = try Driver("locks") { $0.lockLeaseMillis = 1_000 }
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 2))
        let both = [QueueRef(topic: "t", queueID: 0), QueueRef(topic: "t", queueID: 1)]
        func lock(_ client: String, _ queues: [QueueRef]) throws -> [QueueRef] {
            try LockResponse.decode(try d.call(.lockQueues, LockRequest(group: "g", clientID: client, queues: queues))).locked
        }
        #expect(try lock("a", both).isEmpty, "a new leader waits out its predecessor's leases")
        try d.tick(60, advance: 20)
        #expect(try lock("a", both) == both)
        #expect(try lock("b", both).isEmpty, "held by a")
        #expect(try lock("a", both) == both, "renewed")
        _ = try d.call(.unlockQueues, LockRequest(group: "g", clientID: "a", queues: [both[0]]))
        #expect(try lock("b", both) == [both[0]])
        try d.tick(60, advance: 20)  // a's lease on queue 1 runs out
        #expect(try lock("b", both) == both)
        try d.close()
    }

    @Test("bounds: writes waiting to commit and held pulls beyond their limits are refused with busy")
    func bounds() throws {
        let d = try Driver("bounds") { c in
            c.maxPendingWrites = 2
            c.maxParkedPulls = 1
        }
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        let batch = (0..<3).map { k -> (ClientRef, Frame) in
            let id = 100 + UInt64(k)
            return (ClientRef(connection: 1, requestID: id), Frame(opcode: Opcode.send.rawValue, requestID: id, body: sendRequest(["m\(k)"]).encoded()))
        }
        try d.take(try d.node.handle(batch, now: d.now))
        #expect((try? d.reply(100)?.get()) != nil && (try? d.reply(101)?.get()) != nil)
        if case .failure(let e) = d.reply(102) { #expect(e.code == ErrorCode.busy) } else { Issue.record("a third waiting write was accepted") }
        let held = try d.request(.pull, PullRequest(topic: "t", queueID: 0, offset: 2, maxWaitMillis: 1_000).encoded())
        #expect(d.reply(held) == nil)
        let refused = try d.request(.pull, PullRequest(topic: "t", queueID: 0, offset: 2, maxWaitMillis: 1_000).encoded())
        if case .failure(let e) = d.reply(refused) { #expect(e.code == ErrorCode.busy) } else { Issue.record("a second held pull was accepted") }
        try d.close()
    }

    @Test("after a restart the broker state is rebuilt from the log: topics, messages, offsets, dedupe")
    func restart() throws {
        let d = try Driver("restart")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        let first = try SendResponse.decode(try d.call(.send, sendRequest(["kept"], producer: 5, sequence: 1)))
        _ = try d.call(.commitOffset, CommitOffsetRequest(group: "g", offsets: [QueueRef(topic: "t", queueID: 0): 1]))
        try d.close()
        let again = try Driver("restart", directory: d.directory)
        try again.elect()
        let pulled = try PullResponse.decode(try again.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0)))
        #expect(pulled.messages.map { String(decoding: $0.message.body, as: UTF8.self) } == ["kept"])
        #expect(
            try QueryOffsetResponse.decode(try again.call(.queryOffset, QueryOffsetRequest(group: "g", queue: QueueRef(topic: "t", queueID: 0)))).offset == 1)
        let retry = try SendResponse.decode(try again.call(.send, sendRequest(["kept"], producer: 5, sequence: 1)))
        #expect(retry.duplicate && retry.entryIndex == first.entryIndex)
        try again.close()
    }
}
