// Pull consumption on the wire: pulls and the messages they return, a consumer's heartbeat
// to its group and its leaving it, queue locks for orderly consumption, and giving a message
// back for a later retry (or the dead-letter queue).

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

    public init(
        topic: String, queueID: UInt32, offset: UInt64, maxMessages: UInt32 = 32, maxBytes: UInt32 = 4 << 20, maxWaitMillis: UInt32 = 0, tagFilter: String = "",
        sqlFilter: String = ""
    ) {
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
    /// The broker group it came from, set by a client that routes through name servers ("" otherwise; not on the wire).
    public var brokerGroup = ""

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

/// The id a client gave its message (RocketMQ's UNIQ_KEY). A single-message send carrying it is
/// stored once per topic among the topic's last 100,000 keyed sends (docs/messaging.md).
public enum DedupeProperty {
    public static let clientMessageID = "UNIQ_KEY"
}

/// Property names of retried and dead-lettered messages (RocketMQ's meaning).
public enum RetryProperty {
    /// How many times the message was sent back from the dead-letter queue (`tern admin dlq
    /// resend`); part of its give-back keys, which would otherwise repeat earlier ones.
    public static let resends = "DLQ_RESENDS"
    /// How many times the message was given back before this copy.
    public static let reconsumeTimes = "RECONSUME_TIMES"
    /// The first message's id and topic, kept through every retry.
    public static let originMessageID = "ORIGIN_MESSAGE_ID"
    public static let originTopic = "ORIGIN_TOPIC"
    /// The dedupe key of a give-back: origin id and reconsume times.
    public static let retryKey = "RETRY_KEY"
}
