// Request and response bodies of the client protocol (docs/protocol.md lists them byte by
// byte). Each type encodes itself into a `WireWriter` and decodes from a `WireReader`; decoding
// rejects trailing bytes. The send body is also what the leader stores in the log, behind an
// eight-byte store timestamp, so a message is never re-encoded between socket and disk.

public enum Opcode: UInt16, Sendable, CaseIterable {
    case queryRoute = 1
    case send = 2
    case pull = 3
    case heartbeat = 4
    case commitOffset = 5
    case queryOffset = 6
    case createTopic = 7
    case deleteTopic = 8
    case listTopics = 9
    case describeTopic = 10
    case clusterStatus = 11
    case transferLeader = 12
    case unregister = 13
    case updateTopic = 14
    /// Look a message up by id or by key.
    case queryMessage = 15
    /// Move a group's offsets to the first message stored at or after a time.
    case resetOffset = 16
    /// Cancel delayed messages that are still pending.
    case recall = 17
    /// Orderly consumption: lock queues for a group member (a lease), or release them.
    case lockQueues = 18
    case unlockQueues = 19
    /// A consumer gives a message back for a later retry (or the dead-letter queue).
    case sendBack = 20
    /// Commit or roll back a transactional (half) message.
    case endTransaction = 21
    /// A transactional producer waits for the broker's questions about undecided half messages.
    case pollTransactionChecks = 22
    /// Receive/ack consumption (RocketMQ 5's SimpleConsumer): take messages invisible for a while,
    /// acknowledge them by receipt handle, or change how long they stay invisible.
    case receive = 23
    case ack = 24
    case changeInvisible = 25
    /// A Raft message between members (one way, no response).
    case raft = 100
}

/// Error codes of the broker's operations (codes below 100 are the frame layer's, `ErrorBody`).
/// Something that crosses the wire as a body.
public protocol WireCodable: Sendable {
    func encode(into w: inout WireWriter)
    init(from r: inout WireReader) throws(WireError)
}

extension WireCodable {
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        encode(into: &w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> Self {
        var r = WireReader(bytes)
        let v = try Self(from: &r)
        try r.finish(String(describing: Self.self))
        return v
    }
}

/// An empty body.
public struct Empty: WireCodable, Equatable {
    public init() {}
    public func encode(into w: inout WireWriter) {}
    public init(from r: inout WireReader) throws(WireError) {}
}

/// The detail of a NOT_LEADER error: who leads, where to reach it, in which term.
public struct NotLeaderDetail: WireCodable, Equatable {
    /// Empty when the node knows no leader (an election is on).
    public var leader: String
    public var endpoint: String
    public var term: UInt64
    public init(leader: String, endpoint: String, term: UInt64) {
        self.leader = leader
        self.endpoint = endpoint
        self.term = term
    }
    public func encode(into w: inout WireWriter) {
        w.string(leader)
        w.string(endpoint)
        w.u64(term)
    }
    public init(from r: inout WireReader) throws(WireError) {
        leader = try r.string("leader")
        endpoint = try r.string("endpoint")
        term = try r.u64("term")
    }
}

// MARK: - Messages

/// A message as a producer hands it over (the topic and queue are the request's).
public struct WireMessage: Equatable, Sendable {
    public var tag: String
    public var keys: [String]
    /// Sorted by name on the wire, so equal maps encode equally.
    public var properties: [String: String]
    /// Producer's wall clock, milliseconds since the epoch.
    public var bornTimestamp: UInt64
    public var body: [UInt8]

    public init(tag: String = "", keys: [String] = [], properties: [String: String] = [:], bornTimestamp: UInt64 = 0, body: [UInt8]) {
        self.tag = tag
        self.keys = keys
        self.properties = properties
        self.bornTimestamp = bornTimestamp
        self.body = body
    }

    public func encode(into w: inout WireWriter) {
        w.string(tag)
        w.strings(keys)
        w.u16(UInt16(properties.count))
        for name in properties.keys.sorted() {
            w.string(name)
            w.string(properties[name]!)
        }
        w.u64(bornTimestamp)
        w.blob(body)
    }

    /// Everything but the body, read without copying the body (which is skipped, its length
    /// checked against `maxBody`). What the broker needs to index a stored message.
    public struct Meta: Sendable {
        public var tag: String
        public var keys: [String]
        public var properties: [String: String]
    }

    public static func meta(from r: inout WireReader, maxBody: Int = Int(Int32.max)) throws(WireError) -> Meta {
        let tag = try r.string("tag")
        let keys = try r.strings("keys")
        let properties = try readProperties(&r)
        _ = try r.u64("born timestamp")
        let body = try r.skipBlob("body")
        guard body.count <= maxBody else { throw WireError("body of \(body.count) bytes exceeds the limit of \(maxBody)") }
        return Meta(tag: tag, keys: keys, properties: properties)
    }

    static func readProperties(_ r: inout WireReader) throws(WireError) -> [String: String] {
        let n = Int(try r.u16("property count"))
        var props: [String: String] = [:]
        for _ in 0..<n {
            let name = try r.string("property name")
            props[name] = try r.string("property value")
        }
        return props
    }

    public init(from r: inout WireReader, maxBody: Int = Int(Int32.max)) throws(WireError) {
        tag = try r.string("tag")
        keys = try r.strings("keys")
        properties = try WireMessage.readProperties(&r)
        bornTimestamp = try r.u64("born timestamp")
        body = try r.blob("body", limit: maxBody)
    }
}

/// Send: messages for one queue of one topic. With `producerID` non-zero the send is idempotent:
/// the broker stores a (producer, queue, sequence) once, however often it is retried.
/// Layout: version u8 (1), topic, queue u32, producer group, producer id u64, sequence u64,
/// count u32, messages.
public struct SendRequest: WireCodable, Equatable {
    public static let version: UInt8 = 1
    public var topic: String
    public var queueID: UInt32
    public var producerGroup: String
    public var producerID: UInt64
    public var sequence: UInt64
    public var messages: [WireMessage]

    public init(topic: String, queueID: UInt32, producerGroup: String = "", producerID: UInt64 = 0, sequence: UInt64 = 0, messages: [WireMessage]) {
        self.topic = topic
        self.queueID = queueID
        self.producerGroup = producerGroup
        self.producerID = producerID
        self.sequence = sequence
        self.messages = messages
    }

    public func encode(into w: inout WireWriter) {
        w.u8(SendRequest.version)
        w.string(topic)
        w.u32(queueID)
        w.string(producerGroup)
        w.u64(producerID)
        w.u64(sequence)
        w.u32(UInt32(messages.count))
        for m in messages { m.encode(into: &w) }
    }

    public init(from r: inout WireReader) throws(WireError) {
        let header = try SendHeader(from: &r)
        topic = header.topic
        queueID = header.queueID
        producerGroup = header.producerGroup
        producerID = header.producerID
        sequence = header.sequence
        var list: [WireMessage] = []
        list.reserveCapacity(min(Int(header.count), r.remaining / 16))
        for _ in 0..<header.count { list.append(try WireMessage(from: &r)) }
        messages = list
    }
}

/// The part of a send body before its messages; the broker reads it without decoding them.
public struct SendHeader: Equatable, Sendable {
    public var topic: String
    public var queueID: UInt32
    public var producerGroup: String
    public var producerID: UInt64
    public var sequence: UInt64
    public var count: UInt32

    public init(from r: inout WireReader) throws(WireError) {
        let version = try r.u8("version")
        guard version == SendRequest.version else { throw WireError("send version \(version) is not supported") }
        topic = try r.string("topic")
        queueID = try r.u32("queue")
        producerGroup = try r.string("producer group")
        producerID = try r.u64("producer id")
        sequence = try r.u64("sequence")
        count = try r.u32("message count")
    }
}

/// Where a send landed. Message `i` of the request has id `MessageID(entryIndex, slot: i)` and
/// queue offset `firstQueueOffset + i`. `duplicate`: an idempotent retry of a send stored before.
public struct SendResponse: WireCodable, Equatable {
    /// `firstQueueOffset` of a delayed send: its messages get queue offsets when released.
    public static let scheduled = UInt64.max
    public var queueID: UInt32
    public var entryIndex: UInt64
    public var firstQueueOffset: UInt64
    public var count: UInt32
    public var duplicate: Bool

    public init(queueID: UInt32, entryIndex: UInt64, firstQueueOffset: UInt64, count: UInt32, duplicate: Bool) {
        self.queueID = queueID
        self.entryIndex = entryIndex
        self.firstQueueOffset = firstQueueOffset
        self.count = count
        self.duplicate = duplicate
    }
    public func encode(into w: inout WireWriter) {
        w.u32(queueID)
        w.u64(entryIndex)
        w.u64(firstQueueOffset)
        w.u32(count)
        w.bool(duplicate)
    }
    public init(from r: inout WireReader) throws(WireError) {
        queueID = try r.u32("queue")
        entryIndex = try r.u64("entry index")
        firstQueueOffset = try r.u64("first queue offset")
        count = try r.u32("count")
        duplicate = try r.bool("duplicate")
    }
}

/// A message's id: the log entry that stores it and its slot in that entry. Printed as 20
/// upper-case hex digits (16 for the index, 4 for the slot); unique within a Raft group.
public struct MessageID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var entryIndex: UInt64
    public var slot: UInt16
    public init(entryIndex: UInt64, slot: UInt16) {
        self.entryIndex = entryIndex
        self.slot = slot
    }
    public init?(_ text: String) {
        guard text.utf8.count == 20, let index = UInt64(text.prefix(16), radix: 16), let slot = UInt16(text.suffix(4), radix: 16) else { return nil }
        self.init(entryIndex: index, slot: slot)
    }
    public var description: String {
        let i = String(entryIndex, radix: 16, uppercase: true)
        let s = String(slot, radix: 16, uppercase: true)
        return String(repeating: "0", count: 16 - i.count) + i + String(repeating: "0", count: 4 - s.count) + s
    }
    public static func < (a: MessageID, b: MessageID) -> Bool { (a.entryIndex, a.slot) < (b.entryIndex, b.slot) }
}

/// Pull from one queue starting at `offset`. `tagFilter`: "" or "*" for all, else tags joined by
/// "||". `sqlFilter`: "" for none, else a SQL92 expression over the message's properties (and
/// `TAGS`); both filters apply when both are set. `maxWaitMillis` > 0 holds the request (long
/// polling) until a message arrives or it expires.
public struct PullRequest: WireCodable, Equatable {
    public var topic: String
    public var queueID: UInt32
    public var offset: UInt64
    public var maxMessages: UInt32
    public var maxBytes: UInt32
    public var maxWaitMillis: UInt32
    public var tagFilter: String
    public var sqlFilter: String

    public init(topic: String, queueID: UInt32, offset: UInt64, maxMessages: UInt32 = 32, maxBytes: UInt32 = 4 << 20, maxWaitMillis: UInt32 = 0, tagFilter: String = "", sqlFilter: String = "") {
        self.topic = topic
        self.queueID = queueID
        self.offset = offset
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.maxWaitMillis = maxWaitMillis
        self.tagFilter = tagFilter
        self.sqlFilter = sqlFilter
    }
    public func encode(into w: inout WireWriter) {
        w.string(topic)
        w.u32(queueID)
        w.u64(offset)
        w.u32(maxMessages)
        w.u32(maxBytes)
        w.u32(maxWaitMillis)
        w.string(tagFilter)
        w.string(sqlFilter)
    }
    public init(from r: inout WireReader) throws(WireError) {
        topic = try r.string("topic")
        queueID = try r.u32("queue")
        offset = try r.u64("offset")
        maxMessages = try r.u32("max messages")
        maxBytes = try r.u32("max bytes")
        maxWaitMillis = try r.u32("max wait")
        tagFilter = try r.string("tag filter")
        sqlFilter = try r.string("sql filter")
    }
}

/// A stored message as a consumer receives it.
public struct ReceivedMessage: Equatable, Sendable {
    public var id: MessageID
    public var topic: String
    public var queueID: UInt32
    public var queueOffset: UInt64
    /// Leader's wall clock when it accepted the send, milliseconds since the epoch.
    public var storeTimestamp: UInt64
    public var producerGroup: String
    public var message: WireMessage

    public init(id: MessageID, topic: String, queueID: UInt32, queueOffset: UInt64, storeTimestamp: UInt64, producerGroup: String, message: WireMessage) {
        self.id = id
        self.topic = topic
        self.queueID = queueID
        self.queueOffset = queueOffset
        self.storeTimestamp = storeTimestamp
        self.producerGroup = producerGroup
        self.message = message
    }

    public func encode(into w: inout WireWriter) {
        w.u64(id.entryIndex)
        w.u16(id.slot)
        w.string(topic)
        w.u32(queueID)
        w.u64(queueOffset)
        w.u64(storeTimestamp)
        w.string(producerGroup)
        message.encode(into: &w)
    }
    public init(from r: inout WireReader) throws(WireError) {
        id = MessageID(entryIndex: try r.u64("id"), slot: try r.u16("slot"))
        topic = try r.string("topic")
        queueID = try r.u32("queue")
        queueOffset = try r.u64("queue offset")
        storeTimestamp = try r.u64("store timestamp")
        producerGroup = try r.string("producer group")
        message = try WireMessage(from: &r)
    }
}

/// `nextOffset`: where the next pull starts (past messages the filter skipped too).
/// `minOffset`/`maxOffset`: the queue's first kept offset and one past its last.
public struct PullResponse: WireCodable, Equatable {
    public var nextOffset: UInt64
    public var minOffset: UInt64
    public var maxOffset: UInt64
    public var messages: [ReceivedMessage]

    public init(nextOffset: UInt64, minOffset: UInt64, maxOffset: UInt64, messages: [ReceivedMessage]) {
        self.nextOffset = nextOffset
        self.minOffset = minOffset
        self.maxOffset = maxOffset
        self.messages = messages
    }
    public func encode(into w: inout WireWriter) {
        w.u64(nextOffset)
        w.u64(minOffset)
        w.u64(maxOffset)
        w.u32(UInt32(messages.count))
        for m in messages { m.encode(into: &w) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        nextOffset = try r.u64("next offset")
        minOffset = try r.u64("min offset")
        maxOffset = try r.u64("max offset")
        let n = try r.u32("count")
        var list: [ReceivedMessage] = []
        for _ in 0..<n { list.append(try ReceivedMessage(from: &r)) }
        messages = list
    }
}

public enum ConsumeMode: UInt8, Sendable {
    /// Each queue is assigned to one member of the group.
    case clustering = 0
    /// Every member consumes every queue, with offsets of its own.
    case broadcasting = 1
}

/// A consumer's heartbeat to the leader: its group, its id and what it subscribes to. The answer
/// is the queues it owns now; a member silent for the session timeout loses them.
public struct HeartbeatRequest: WireCodable, Equatable {
    public var group: String
    public var clientID: String
    public var mode: ConsumeMode
    public var topics: [String]
    /// The subscription's SQL92 filter ("" for none): a syntax error is refused here, at
    /// subscription, with its column.
    public var sqlFilter: String
    public init(group: String, clientID: String, mode: ConsumeMode, topics: [String], sqlFilter: String = "") {
        self.group = group
        self.clientID = clientID
        self.mode = mode
        self.topics = topics
        self.sqlFilter = sqlFilter
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.string(clientID)
        w.u8(mode.rawValue)
        w.strings(topics)
        w.string(sqlFilter)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        clientID = try r.string("client id")
        let m = try r.u8("mode")
        guard let mode = ConsumeMode(rawValue: m) else { throw WireError("consume mode \(m) is unknown") }
        self.mode = mode
        topics = try r.strings("topics")
        sqlFilter = try r.string("sql filter")
    }
}

/// A (topic, queue) pair.
public struct QueueRef: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var topic: String
    public var queueID: UInt32
    public init(topic: String, queueID: UInt32) {
        self.topic = topic
        self.queueID = queueID
    }
    public static func < (a: QueueRef, b: QueueRef) -> Bool { (a.topic, a.queueID) < (b.topic, b.queueID) }
    public var description: String { "\(topic)#\(queueID)" }
}

public struct HeartbeatResponse: WireCodable, Equatable {
    public var assigned: [QueueRef]
    /// Increases whenever the group's assignment changes.
    public var generation: UInt64
    public init(assigned: [QueueRef], generation: UInt64) {
        self.assigned = assigned
        self.generation = generation
    }
    public func encode(into w: inout WireWriter) {
        w.u64(generation)
        w.queueRefs(assigned)
    }
    public init(from r: inout WireReader) throws(WireError) {
        generation = try r.u64("generation")
        assigned = try r.queueRefs("assigned")
    }
}

public struct UnregisterRequest: WireCodable, Equatable {
    public var group: String
    public var clientID: String
    public init(group: String, clientID: String) {
        self.group = group
        self.clientID = clientID
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.string(clientID)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        clientID = try r.string("client id")
    }
}

/// Commit a group's consume offsets (the next offset to consume, per queue). Replicated: the
/// response comes once the offsets are committed in the log. Offsets never move backwards.
public struct CommitOffsetRequest: WireCodable, Equatable {
    public var group: String
    public var offsets: [QueueRef: UInt64]
    public init(group: String, offsets: [QueueRef: UInt64]) {
        self.group = group
        self.offsets = offsets
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.u32(UInt32(offsets.count))
        for q in offsets.keys.sorted() {
            w.string(q.topic)
            w.u32(q.queueID)
            w.u64(offsets[q]!)
        }
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        let n = try r.u32("count")
        var map: [QueueRef: UInt64] = [:]
        for _ in 0..<n { map[QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue"))] = try r.u64("offset") }
        offsets = map
    }
}

public struct QueryOffsetRequest: WireCodable, Equatable {
    public var group: String
    public var queue: QueueRef
    public init(group: String, queue: QueueRef) {
        self.group = group
        self.queue = queue
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.string(queue.topic)
        w.u32(queue.queueID)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        queue = QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue"))
    }
}

/// nil offset: the group never committed one for the queue.
public struct QueryOffsetResponse: WireCodable, Equatable {
    public var offset: UInt64?
    public init(offset: UInt64?) { self.offset = offset }
    public func encode(into w: inout WireWriter) {
        w.bool(offset != nil)
        w.u64(offset ?? 0)
    }
    public init(from r: inout WireReader) throws(WireError) {
        let found = try r.bool("found")
        let v = try r.u64("offset")
        offset = found ? v : nil
    }
}

public struct TopicRequest: WireCodable, Equatable {
    public var name: String
    /// Queues, for create; ignored otherwise.
    public var queues: UInt32
    public init(name: String, queues: UInt32 = 0) {
        self.name = name
        self.queues = queues
    }
    public func encode(into w: inout WireWriter) {
        w.string(name)
        w.u32(queues)
    }
    public init(from r: inout WireReader) throws(WireError) {
        name = try r.string("name")
        queues = try r.u32("queues")
    }
}

public struct TopicInfo: Equatable, Sendable {
    public struct Queue: Equatable, Sendable {
        public var queueID: UInt32
        public var minOffset: UInt64
        public var maxOffset: UInt64
        public init(queueID: UInt32, minOffset: UInt64, maxOffset: UInt64) {
            self.queueID = queueID
            self.minOffset = minOffset
            self.maxOffset = maxOffset
        }
    }
    public var name: String
    public var queues: [Queue]
    public init(name: String, queues: [Queue]) {
        self.name = name
        self.queues = queues
    }
}

public struct TopicList: WireCodable, Equatable {
    public var topics: [TopicInfo]
    public init(topics: [TopicInfo]) { self.topics = topics }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(topics.count))
        for t in topics {
            w.string(t.name)
            w.u32(UInt32(t.queues.count))
            for q in t.queues {
                w.u32(q.queueID)
                w.u64(q.minOffset)
                w.u64(q.maxOffset)
            }
        }
    }
    public init(from r: inout WireReader) throws(WireError) {
        var list: [TopicInfo] = []
        for _ in 0..<(try r.u32("count")) {
            let name = try r.string("name")
            var queues: [TopicInfo.Queue] = []
            for _ in 0..<(try r.u32("queues")) {
                queues.append(TopicInfo.Queue(queueID: try r.u32("queue"), minOffset: try r.u64("min"), maxOffset: try r.u64("max")))
            }
            list.append(TopicInfo(name: name, queues: queues))
        }
        topics = list
    }
}

/// What a node knows of the group: the members and their endpoints, the leader, and (when the
/// request named one) the topic's queue count, 0 when the topic does not exist.
public struct RouteResponse: WireCodable, Equatable {
    public var leader: String
    public var term: UInt64
    public var nodes: [(id: String, endpoint: String)]
    public var topicQueues: UInt32

    public init(leader: String, term: UInt64, nodes: [(id: String, endpoint: String)], topicQueues: UInt32) {
        self.leader = leader
        self.term = term
        self.nodes = nodes
        self.topicQueues = topicQueues
    }
    public static func == (a: RouteResponse, b: RouteResponse) -> Bool {
        a.leader == b.leader && a.term == b.term && a.topicQueues == b.topicQueues
            && a.nodes.map(\.id) == b.nodes.map(\.id) && a.nodes.map(\.endpoint) == b.nodes.map(\.endpoint)
    }
    public func encode(into w: inout WireWriter) {
        w.string(leader)
        w.u64(term)
        w.u16(UInt16(nodes.count))
        for n in nodes {
            w.string(n.id)
            w.string(n.endpoint)
        }
        w.u32(topicQueues)
    }
    public init(from r: inout WireReader) throws(WireError) {
        leader = try r.string("leader")
        term = try r.u64("term")
        var list: [(id: String, endpoint: String)] = []
        for _ in 0..<(try r.u16("nodes")) { list.append((try r.string("id"), try r.string("endpoint"))) }
        nodes = list
        topicQueues = try r.u32("topic queues")
    }
}

/// One node's view of itself.
public struct NodeStatus: WireCodable, Equatable {
    public var id: String
    public var role: String
    public var term: UInt64
    public var leader: String
    public var commitIndex: UInt64
    public var lastIndex: UInt64
    public var appliedIndex: UInt64
    public var durableIndex: UInt64
    /// Write batches (each ends in one fdatasync) and bytes of entries this node's log wrote since
    /// it started. Absent (0) from nodes older than these fields.
    public var syncedBatches: UInt64 = 0
    public var bytesWritten: UInt64 = 0
    public init(id: String, role: String, term: UInt64, leader: String, commitIndex: UInt64, lastIndex: UInt64, appliedIndex: UInt64, durableIndex: UInt64) {
        self.id = id
        self.role = role
        self.term = term
        self.leader = leader
        self.commitIndex = commitIndex
        self.lastIndex = lastIndex
        self.appliedIndex = appliedIndex
        self.durableIndex = durableIndex
    }
    public func encode(into w: inout WireWriter) {
        w.string(id)
        w.string(role)
        w.u64(term)
        w.string(leader)
        w.u64(commitIndex)
        w.u64(lastIndex)
        w.u64(appliedIndex)
        w.u64(durableIndex)
        w.u64(syncedBatches)
        w.u64(bytesWritten)
    }
    public init(from r: inout WireReader) throws(WireError) {
        id = try r.string("id")
        role = try r.string("role")
        term = try r.u64("term")
        leader = try r.string("leader")
        commitIndex = try r.u64("commit index")
        lastIndex = try r.u64("last index")
        appliedIndex = try r.u64("applied index")
        durableIndex = try r.u64("durable index")
        if !r.atEnd {
            syncedBatches = try r.u64("synced batches")
            bytesWritten = try r.u64("bytes written")
        }
    }
}

/// A one-field request naming a topic or a node (route query, transfer).
public struct NameRequest: WireCodable, Equatable {
    public var name: String
    public init(name: String) { self.name = name }
    public func encode(into w: inout WireWriter) { w.string(name) }
    public init(from r: inout WireReader) throws(WireError) { name = try r.string("name") }
}

/// Look up messages: by id (`id` set) or by key (the most recent `max` with that key in `topic`).
public struct QueryMessageRequest: WireCodable, Equatable {
    public var id: MessageID?
    public var topic: String
    public var key: String
    public var max: UInt32
    public init(id: MessageID) {
        self.id = id
        topic = ""
        key = ""
        max = 1
    }
    public init(topic: String, key: String, max: UInt32 = 32) {
        id = nil
        self.topic = topic
        self.key = key
        self.max = max
    }
    public func encode(into w: inout WireWriter) {
        w.bool(id != nil)
        w.u64(id?.entryIndex ?? 0)
        w.u16(id?.slot ?? 0)
        w.string(topic)
        w.string(key)
        w.u32(max)
    }
    public init(from r: inout WireReader) throws(WireError) {
        let byID = try r.bool("by id")
        let index = try r.u64("entry index")
        let slot = try r.u16("slot")
        id = byID ? MessageID(entryIndex: index, slot: slot) : nil
        topic = try r.string("topic")
        key = try r.string("key")
        max = try r.u32("max")
    }
}

public struct MessageList: WireCodable, Equatable {
    public var messages: [ReceivedMessage]
    public init(messages: [ReceivedMessage]) { self.messages = messages }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(messages.count))
        for m in messages { m.encode(into: &w) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        var list: [ReceivedMessage] = []
        for _ in 0..<(try r.u32("count")) { list.append(try ReceivedMessage(from: &r)) }
        messages = list
    }
}

/// Reset a group's offsets in `topic` (every topic the group has offsets in, when empty) to the
/// first message stored at or after `timestamp` (ms since 1970). Replicated; may move offsets back.
public struct ResetOffsetRequest: WireCodable, Equatable {
    public var group: String
    public var topic: String
    public var timestamp: UInt64
    public init(group: String, topic: String, timestamp: UInt64) {
        self.group = group
        self.topic = topic
        self.timestamp = timestamp
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.string(topic)
        w.u64(timestamp)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        topic = try r.string("topic")
        timestamp = try r.u64("timestamp")
    }
}

/// The offsets a reset set, per queue.
public struct OffsetList: WireCodable, Equatable {
    public var offsets: [QueueRef: UInt64]
    public init(offsets: [QueueRef: UInt64]) { self.offsets = offsets }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(offsets.count))
        for q in offsets.keys.sorted() {
            w.string(q.topic)
            w.u32(q.queueID)
            w.u64(offsets[q]!)
        }
    }
    public init(from r: inout WireReader) throws(WireError) {
        var map: [QueueRef: UInt64] = [:]
        for _ in 0..<(try r.u32("count")) { map[QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue"))] = try r.u64("offset") }
        offsets = map
    }
}

/// Message ids (recall). Layout: count u32, (entry index u64, slot u16) each.
public struct MessageIDRequest: WireCodable, Equatable {
    public var ids: [MessageID]
    public init(ids: [MessageID]) { self.ids = ids }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(ids.count))
        for id in ids { w.messageID(id) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        var list: [MessageID] = []
        for _ in 0..<(try r.u32("count")) { list.append(try r.messageID()) }
        ids = list
    }
}

/// Lock (or unlock) queues for one member of a group, for orderly consumption. The answer to a
/// lock lists the queues now held, each for `leaseMillis` from when the leader granted it;
/// asking again renews. A member processes a queue only while it holds the lock.
public struct LockRequest: WireCodable, Equatable {
    public var group: String
    public var clientID: String
    public var queues: [QueueRef]
    public init(group: String, clientID: String, queues: [QueueRef]) {
        self.group = group
        self.clientID = clientID
        self.queues = queues
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.string(clientID)
        w.queueRefs(queues)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        clientID = try r.string("client id")
        queues = try r.queueRefs()
    }
}

public struct LockResponse: WireCodable, Equatable {
    public var locked: [QueueRef]
    public var leaseMillis: UInt32
    public init(locked: [QueueRef], leaseMillis: UInt32) {
        self.locked = locked
        self.leaseMillis = leaseMillis
    }
    public func encode(into w: inout WireWriter) {
        w.u32(leaseMillis)
        w.queueRefs(locked)
    }
    public init(from r: inout WireReader) throws(WireError) {
        leaseMillis = try r.u32("lease")
        locked = try r.queueRefs("locked")
    }
}

/// The queue a sharding key (RocketMQ 5's message group) maps to: FNV-1a of its UTF-8 bytes,
/// modulo the queue count. Stable across processes and versions.
public func queueForShardingKey(_ key: String, queues: UInt32) -> UInt32 {
    var h: UInt32 = 0x811C_9DC5
    for b in key.utf8 {
        h ^= UInt32(b)
        h &*= 0x0100_0193
    }
    return h % max(queues, 1)
}

/// Give a delivered message back: the broker stores a copy in `%RETRY%<group>` to be delivered
/// after `delayMillis`, or in `%DLQ%<group>` when it was already retried `maxReconsumeTimes`
/// times. Idempotent: a repeated give-back of the same delivery stores nothing new.
public struct SendBackRequest: WireCodable, Equatable {
    public var group: String
    public var id: MessageID
    public var delayMillis: UInt64
    public var maxReconsumeTimes: UInt32
    public init(group: String, id: MessageID, delayMillis: UInt64, maxReconsumeTimes: UInt32) {
        self.group = group
        self.id = id
        self.delayMillis = delayMillis
        self.maxReconsumeTimes = maxReconsumeTimes
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.messageID(id)
        w.u64(delayMillis)
        w.u32(maxReconsumeTimes)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        id = try r.messageID()
        delayMillis = try r.u64("delay")
        maxReconsumeTimes = try r.u32("max reconsume times")
    }
}

/// Property names of retried and dead-lettered messages (RocketMQ's meaning).
public enum RetryProperty {
    /// How many times the message was given back before this copy.
    public static let reconsumeTimes = "RECONSUME_TIMES"
    /// The first message's id and topic, kept through every retry.
    public static let originMessageID = "ORIGIN_MESSAGE_ID"
    public static let originTopic = "ORIGIN_TOPIC"
    /// The dedupe key of a give-back: origin id and reconsume times.
    public static let retryKey = "RETRY_KEY"
}
