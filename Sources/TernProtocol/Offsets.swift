// Consume offsets on the wire: committing a group's offsets, querying one, and resetting a
// group's offsets to a time.

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
