// Receive/ack consumption (RocketMQ 5's SimpleConsumer) on the wire. A receive takes up to N
// messages of a topic for a group and makes them invisible to the group for a while; each
// comes with a receipt handle. Acknowledging the handle consumes the message; a message not
// acknowledged in time is received again (with its delivery attempt counted up).

/// Names one delivery: the message's queue and offset, and the log index of the receive entry
/// that handed it out (a later delivery of the same message has a new one).
public struct ReceiptHandle: Hashable, Sendable, CustomStringConvertible {
    public var queue: QueueRef
    public var offset: UInt64
    public var receiveIndex: UInt64
    public init(queue: QueueRef, offset: UInt64, receiveIndex: UInt64) {
        self.queue = queue
        self.offset = offset
        self.receiveIndex = receiveIndex
    }
    /// "topic:queue:offset:index", for the CLI.
    public var description: String { "\(queue.topic):\(queue.queueID):\(offset):\(receiveIndex)" }
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count >= 4, let index = UInt64(parts[parts.count - 1]), let offset = UInt64(parts[parts.count - 2]),
            let queue = UInt32(parts[parts.count - 3])
        else { return nil }
        let topic = parts[0..<(parts.count - 3)].joined(separator: ":")
        guard !topic.isEmpty else { return nil }
        self.init(queue: QueueRef(topic: topic, queueID: queue), offset: offset, receiveIndex: index)
    }
    public func encode(into w: inout WireWriter) {
        w.string(queue.topic)
        w.u32(queue.queueID)
        w.u64(offset)
        w.u64(receiveIndex)
    }
    public init(from r: inout WireReader) throws(WireError) {
        queue = QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue"))
        offset = try r.u64("offset")
        receiveIndex = try r.u64("receive index")
    }
}

/// Take up to `maxMessages` of `topic` for `group`, invisible to the group for `invisibleMillis`.
/// `maxWaitMillis` > 0 holds the request until a message is there or the wait ends.
public struct ReceiveRequest: WireCodable, Equatable {
    public var group: String
    public var topic: String
    public var tagFilter: String
    public var maxMessages: UInt32
    public var invisibleMillis: UInt64
    public var maxWaitMillis: UInt32
    /// A SQL92 filter over the messages' properties ("" for none), besides the tag filter.
    /// Absent on the wire when empty (older nodes then read the request as before).
    public var sqlFilter = ""
    public init(group: String, topic: String, tagFilter: String = "*", maxMessages: UInt32 = 16, invisibleMillis: UInt64 = 30_000, maxWaitMillis: UInt32 = 0) {
        self.group = group
        self.topic = topic
        self.tagFilter = tagFilter
        self.maxMessages = maxMessages
        self.invisibleMillis = invisibleMillis
        self.maxWaitMillis = maxWaitMillis
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.string(topic)
        w.string(tagFilter)
        w.u32(maxMessages)
        w.u64(invisibleMillis)
        w.u32(maxWaitMillis)
        if !sqlFilter.isEmpty { w.string(sqlFilter) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        topic = try r.string("topic")
        tagFilter = try r.string("tag filter")
        maxMessages = try r.u32("max messages")
        invisibleMillis = try r.u64("invisible")
        maxWaitMillis = try r.u32("max wait")
        if !r.atEnd { sqlFilter = try r.string("sql filter") }
    }
}

/// One received message: its handle, when it becomes visible again unless acknowledged (the
/// leader's clock, ms since 1970), and which delivery this is (1 for the first).
public struct ReceivedDelivery: Equatable, Sendable {
    public var handle: ReceiptHandle
    public var invisibleUntil: UInt64
    public var attempt: UInt32
    public var message: ReceivedMessage
    public init(handle: ReceiptHandle, invisibleUntil: UInt64, attempt: UInt32, message: ReceivedMessage) {
        self.handle = handle
        self.invisibleUntil = invisibleUntil
        self.attempt = attempt
        self.message = message
    }
}

public struct ReceiveResponse: WireCodable, Equatable {
    public var deliveries: [ReceivedDelivery]
    public init(deliveries: [ReceivedDelivery]) { self.deliveries = deliveries }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(deliveries.count))
        for d in deliveries {
            d.handle.encode(into: &w)
            w.u64(d.invisibleUntil)
            w.u32(d.attempt)
            d.message.encode(into: &w)
        }
    }
    public init(from r: inout WireReader) throws(WireError) {
        var list: [ReceivedDelivery] = []
        for _ in 0..<(try r.u32("count")) {
            list.append(
                ReceivedDelivery(
                    handle: try ReceiptHandle(from: &r), invisibleUntil: try r.u64("invisible until"), attempt: try r.u32("attempt"),
                    message: try ReceivedMessage(from: &r)))
        }
        deliveries = list
    }
}

/// Acknowledge (`invisibleMillis` nil) or change the invisible time of one delivery. The answer
/// to a change is `ChangeInvisibleResponse`; to an acknowledgement, empty.
public struct ReceiptRequest: WireCodable, Equatable {
    public var group: String
    public var handle: ReceiptHandle
    public var invisibleMillis: UInt64
    public init(group: String, handle: ReceiptHandle, invisibleMillis: UInt64 = 0) {
        self.group = group
        self.handle = handle
        self.invisibleMillis = invisibleMillis
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        handle.encode(into: &w)
        w.u64(invisibleMillis)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        handle = try ReceiptHandle(from: &r)
        invisibleMillis = try r.u64("invisible")
    }
}

public struct ChangeInvisibleResponse: WireCodable, Equatable {
    public var invisibleUntil: UInt64
    public init(invisibleUntil: UInt64) { self.invisibleUntil = invisibleUntil }
    public func encode(into w: inout WireWriter) { w.u64(invisibleUntil) }
    public init(from r: inout WireReader) throws(WireError) { invisibleUntil = try r.u64("invisible until") }
}
