// Message trace on the wire (`tern admin message trace ID`; docs/operations.md, "Tracing a
// message"): what happened to one message, as the group's replicated state recorded it. Kept for
// topics with tracing on (`tern admin topic trace NAME on`), for the newest messages up to the
// broker's bound, until retention deletes the message's entry.

/// One step in a message's life. `at` is the leader's clock as the log recorded it (ms since
/// 1970); `index` the log entry that recorded it.
public struct TraceEvent: Equatable, Sendable {
    public enum Kind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
        /// Stored and indexed in its queue (`queue`, `offset`).
        case stored = 1
        /// Stored as delayed; due at `detail` (ms since 1970).
        case delayed = 2
        /// Stored as a transaction's half message (producer group `group`).
        case halfStored = 3
        /// A delayed message fell due and was indexed in its queue (`queue`, `offset`).
        case released = 4
        /// Its transaction committed (by `group`); indexed in its queue (`queue`, `offset`).
        case committed = 5
        case rolledBack = 6
        /// A pending delayed message was recalled.
        case recalled = 7
        /// Handed to receive/ack group `group`, invisible until `detail`; `attempt` counts deliveries.
        case received = 8
        case acknowledged = 9
        /// Its invisible time changed to `detail`.
        case invisibleChanged = 10
        /// Group `group` committed an offset past it (clustering and broadcasting consumers).
        case consumed = 11
        /// Given back by group `group` for retry attempt `attempt`: a copy `copy` in the group's
        /// retry topic, delivered again after its delay.
        case retried = 12
        /// Given back past its retries: copy `copy` in the group's dead-letter topic.
        case deadLettered = 13

        public var description: String {
            switch self {
            case .stored: "stored"
            case .delayed: "delayed"
            case .halfStored: "half stored"
            case .released: "released"
            case .committed: "committed"
            case .rolledBack: "rolled back"
            case .recalled: "recalled"
            case .received: "received"
            case .acknowledged: "acknowledged"
            case .invisibleChanged: "invisible changed"
            case .consumed: "consumed"
            case .retried: "retried"
            case .deadLettered: "dead-lettered"
            }
        }
    }

    public var kind: Kind
    public var at: UInt64
    public var index: UInt64
    public var group: String
    /// Where: the queue and offset the step concerns (the copy's, for a retry's steps).
    public var queue: QueueRef?
    public var offset: UInt64
    /// Delivery attempt (receives), retry attempt (retries); 0 otherwise.
    public var attempt: UInt32
    /// A time the kind explains (due, invisible until); 0 otherwise.
    public var detail: UInt64
    /// The retry or dead-letter copy the step concerns.
    public var copy: MessageID?

    public init(
        kind: Kind, at: UInt64, index: UInt64, group: String = "", queue: QueueRef? = nil, offset: UInt64 = 0, attempt: UInt32 = 0, detail: UInt64 = 0,
        copy: MessageID? = nil
    ) {
        self.kind = kind
        self.at = at
        self.index = index
        self.group = group
        self.queue = queue
        self.offset = offset
        self.attempt = attempt
        self.detail = detail
        self.copy = copy
    }

    public func encode(into w: inout WireWriter) {
        w.u8(kind.rawValue)
        w.u64(at)
        w.u64(index)
        w.string(group)
        w.bool(queue != nil)
        if let queue {
            w.string(queue.topic)
            w.u32(queue.queueID)
        }
        w.u64(offset)
        w.u32(attempt)
        w.u64(detail)
        w.bool(copy != nil)
        if let copy { w.messageID(copy) }
    }

    public init(from r: inout WireReader) throws(WireError) {
        let k = try r.u8("trace event kind")
        guard let kind = Kind(rawValue: k) else { throw WireError("trace event kind \(k) is unknown") }
        self.kind = kind
        at = try r.u64("at")
        index = try r.u64("index")
        group = try r.string("group")
        queue = try r.bool("has queue") ? QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue")) : nil
        offset = try r.u64("offset")
        attempt = try r.u32("attempt")
        detail = try r.u64("detail")
        copy = try r.bool("has copy") ? try r.messageID() : nil
    }
}

/// A message's trace: where it was stored, by which leader in which term, and its steps.
public struct MessageTrace: WireCodable, Equatable {
    public var id: MessageID
    public var topic: String
    /// The leader that stored it and its term (empty and 0 when no longer known).
    public var leader: String
    public var term: UInt64
    public var events: [TraceEvent]
    /// Steps left out: a message keeps at most 64 steps (its first 16 and the newest).
    public var dropped: UInt32

    public init(id: MessageID, topic: String, leader: String, term: UInt64, events: [TraceEvent], dropped: UInt32 = 0) {
        self.id = id
        self.topic = topic
        self.leader = leader
        self.term = term
        self.events = events
        self.dropped = dropped
    }

    public func encode(into w: inout WireWriter) {
        w.messageID(id)
        w.string(topic)
        w.string(leader)
        w.u64(term)
        w.u32(UInt32(events.count))
        for e in events { e.encode(into: &w) }
        w.u32(dropped)
    }

    public init(from r: inout WireReader) throws(WireError) {
        id = try r.messageID()
        topic = try r.string("topic")
        leader = try r.string("leader")
        term = try r.u64("term")
        let count = try r.u32("events")
        guard Int(count) <= r.remaining / 30 + 1 else { throw WireError("\(count) trace events cannot fit in \(r.remaining) bytes") }
        var list: [TraceEvent] = []
        for _ in 0..<count { list.append(try TraceEvent(from: &r)) }
        events = list
        dropped = try r.u32("dropped")
    }
}

/// Tracing on or off for a topic (admin right).
public struct TraceTopicRequest: WireCodable, Equatable {
    public var topic: String
    public var on: Bool
    public init(topic: String, on: Bool) {
        self.topic = topic
        self.on = on
    }
    public func encode(into w: inout WireWriter) {
        w.string(topic)
        w.bool(on)
    }
    public init(from r: inout WireReader) throws(WireError) {
        topic = try r.string("topic")
        on = try r.bool("on")
    }
}
