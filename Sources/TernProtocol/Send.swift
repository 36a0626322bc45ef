// Send bodies on the wire: a producer's messages for one queue, the send header the broker
// reads without decoding them, and where a send landed; the queue a sharding key maps to;
// and the recall of delayed messages by id.

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

    /// The value of one property of the message at `r`, found without decoding the others (the
    /// apply path asks every single-message send for its dedupe key). nil: absent or malformed.
    public static func property(named name: String, at r: WireReader) -> String? {
        var r = r
        let target = Array(name.utf8)
        do throws(WireError) {
            try r.skipString("tag")
            for _ in 0..<Int(try r.u16("keys")) { try r.skipString("key") }
            for _ in 0..<Int(try r.u16("property count")) {
                let n = Int(try r.u16("property name"))
                let at = try r.take(n, "property name")
                if n == target.count && r.bytes[at..<(at + n)].elementsEqual(target) { return try r.string("property value") }
                try r.skipString("property value")
            }
        } catch {
            return nil
        }
        return nil
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
