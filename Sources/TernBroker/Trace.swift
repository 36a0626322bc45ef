// Message trace (RocketMQ's message track; docs/operations.md, "Tracing a message"): for the
// messages of topics with tracing on, the steps of each one's life, recorded as the entries that
// make them are applied, so the trace is part of the replicated state: the same on every replica,
// in snapshots, rebuilt by replaying the log. Bounded: the newest `BrokerConfig.traceCapacity`
// messages, at most `maxEvents` steps each; a message's trace goes when retention deletes the
// entry that stored it, or when newer traced messages push it out.
//
// Steps of a retry or dead-letter copy are the original's: the copy is an alias of the message it
// was given back from. Queue positions of traced messages (and copies) are indexed, so that a
// receive, an acknowledgement or an offset commit finds the traced messages it concerns.
// Which leader stored a message, in which term, is not state: the node reads it from the log
// (the message's entry has the term; the term's first entry, Raft's no-op, names its leader).
import TernProtocol

struct TraceRecord {
    var topic: String
    var events: [TraceEvent] = []
    var dropped: UInt32 = 0
    /// Queue positions of the message and its copies: (queue, offset, the id stored there).
    var rows: [(queue: QueueRef, offset: UInt64, id: MessageID)] = []
    var copies: [MessageID] = []
}

struct TraceStore {
    static let maxEvents = 64
    static let keptFirst = 16
    /// Retry and dead-letter copies followed per traced message, at most (16 retries and the
    /// dead letter, resent a few times).
    static let maxCopies = 64
    /// Topics with tracing on.
    var topics: Set<String> = []
    var records: [MessageID: TraceRecord] = [:]
    /// Traced messages in the order they were stored (= log order): eviction and retention take
    /// the oldest first.
    var order: [MessageID] = []
    var head = 0
    /// Retry and dead-letter copies -> the message they were given back from.
    var aliases: [MessageID: MessageID] = [:]
    /// Per queue, the traced positions in offset order (entries of evicted traces are skipped
    /// and dropped as the head passes them).
    var rows: [QueueRef: (list: [(offset: UInt64, id: MessageID)], head: Int)] = [:]

    /// Whether anything is traced: the leader then stamps its clock into the entries that
    /// otherwise carry none (receipts, offset commits, releases, transaction ends).
    var active: Bool { !topics.isEmpty || !records.isEmpty }

    func origin(_ id: MessageID) -> MessageID? { records[id] != nil ? id : aliases[id] }
}

extension Broker {
    /// Whether the leader should stamp its clock into entries that carry none.
    public var tracingActive: Bool { traces.active }

    /// Messages with a trace kept.
    public var tracedCount: Int { traces.records.count }

    /// Topics with tracing on, sorted.
    public var tracedTopics: [String] { traces.topics.sorted() }

    /// Starts a trace for a message just stored in a traced topic.
    func startTrace(_ id: MessageID, topic: String) {
        guard traces.records[id] == nil else { return }
        traces.records[id] = TraceRecord(topic: topic)
        traces.order.append(id)
        while traces.order.count - traces.head > config.traceCapacity { evictOldestTrace() }
    }

    func evictOldestTrace() {
        guard traces.head < traces.order.count else { return }
        let id = traces.order[traces.head]
        traces.head += 1
        if let record = traces.records.removeValue(forKey: id) {
            for c in record.copies { traces.aliases[c] = nil }
            for row in record.rows { advanceTraceRows(row.queue) }
        }
        if traces.head > 4096 && traces.head * 2 > traces.order.count {
            traces.order.removeFirst(traces.head)
            traces.head = 0
        }
    }

    private func advanceTraceRows(_ queue: QueueRef) {
        guard var entry = traces.rows.removeValue(forKey: queue) else { return }
        while entry.head < entry.list.count, traces.origin(entry.list[entry.head].id) == nil { entry.head += 1 }
        if entry.head == entry.list.count { return }
        if entry.head > 1024 && entry.head * 2 > entry.list.count {
            entry.list.removeFirst(entry.head)
            entry.head = 0
        }
        traces.rows[queue] = entry
    }

    /// Adds a step to the trace of `id` (or of the message it is a copy of); nothing when the
    /// message is not traced.
    func trace(_ id: MessageID, _ event: TraceEvent) {
        guard let origin = traces.origin(id), var record = traces.records.removeValue(forKey: origin) else { return }
        if record.events.count >= TraceStore.maxEvents {
            record.events.remove(at: TraceStore.keptFirst)
            record.dropped &+= 1
        }
        record.events.append(event)
        traces.records[origin] = record
    }

    /// The message `id` (traced, or a copy of a traced one) is at `offset` of `queue` now.
    func traceRow(_ id: MessageID, queue: QueueRef, offset: UInt64) {
        guard let origin = traces.origin(id) else { return }
        traces.records[origin]!.rows.append((queue, offset, id))
        var entry = traces.rows.removeValue(forKey: queue) ?? ([], 0)
        entry.list.append((offset, id))
        traces.rows[queue] = entry
    }

    /// A retry or dead-letter copy of a traced message (not followed past `maxCopies`).
    func traceCopy(_ copy: MessageID, of original: MessageID) -> Bool {
        guard let origin = traces.origin(original), traces.records[origin]!.copies.count < TraceStore.maxCopies else { return false }
        traces.aliases[copy] = origin
        traces.records[origin]!.copies.append(copy)
        return true
    }

    /// The traced messages (or copies) at offsets `range` of `queue`.
    func tracedIDs(in queue: QueueRef, _ range: Range<UInt64>) -> [(offset: UInt64, id: MessageID)] {
        guard let entry = traces.rows[queue], !range.isEmpty else { return [] }
        var lo = entry.head
        var hi = entry.list.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entry.list[mid].offset < range.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        var out: [(offset: UInt64, id: MessageID)] = []
        var i = lo
        while i < entry.list.count, entry.list[i].offset < range.upperBound {
            if traces.origin(entry.list[i].id) != nil { out.append(entry.list[i]) }
            i += 1
        }
        return out
    }

    /// A deleted topic: its messages and their traces go (a topic created again under the name
    /// starts its queues at offset 0, and must not meet the old rows).
    func forgetTraces(ofTopic name: String) {
        traces.topics.remove(name)
        guard traces.records.values.contains(where: { $0.topic == name || $0.rows.contains { $0.queue.topic == name } }) else { return }
        let live = traces.order[traces.head...].filter { traces.records[$0] != nil }
        var kept: [MessageID] = []
        for id in live {
            var record = traces.records[id]!
            if record.topic == name {
                traces.records[id] = nil
                for c in record.copies { traces.aliases[c] = nil }
                continue
            }
            record.rows.removeAll { $0.queue.topic == name }
            traces.records[id] = record
            kept.append(id)
        }
        traces.order = kept
        traces.head = 0
        // The per-queue index again from what is left, as a restore builds it.
        rebuildTraceRows()
    }

    /// The per-queue index of traced positions, from the records, in offset order.
    func rebuildTraceRows() {
        var rows: [(queue: QueueRef, offset: UInt64, id: MessageID, order: Int)] = []
        for (k, id) in traces.order[traces.head...].enumerated() {
            guard let record = traces.records[id] else { continue }
            for row in record.rows { rows.append((row.queue, row.offset, row.id, k)) }
        }
        rows.sort { ($0.queue, $0.offset, $0.order) < ($1.queue, $1.offset, $1.order) }
        traces.rows = [:]
        for row in rows { traces.rows[row.queue, default: ([], 0)].list.append((row.offset, row.id)) }
    }

    /// Retention deleted the entries before `trimIndex`: the traces of messages stored there go.
    func trimTraces(before trimIndex: UInt64) {
        while traces.head < traces.order.count, traces.order[traces.head].entryIndex < trimIndex { evictOldestTrace() }
    }

    /// The trace of message `id` (or of the message it is a copy of); nil when none is kept.
    /// Its leader and term are left for the node to fill in from the log.
    public func messageTrace(_ id: MessageID) -> MessageTrace? {
        guard let origin = traces.origin(id), let record = traces.records[origin] else { return nil }
        return MessageTrace(id: origin, topic: record.topic, leader: "", term: 0, events: record.events, dropped: record.dropped)
    }

    /// Turns tracing of `topic` on or off (a command applied in log order).
    func setTracing(_ topic: String, on: Bool) -> ApplyOutcome {
        guard topics[topic] != nil else { return .failed(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(topic) does not exist")) }
        if on { traces.topics.insert(topic) } else { traces.topics.remove(topic) }
        return .done
    }
}

extension Broker {
    /// A give-back copy `id` in `topic` (a retry or dead-letter topic) of a message: when that one
    /// is traced, the copy joins its trace.
    func traceGiveBack(_ id: MessageID, origin: (id: MessageID, attempt: UInt32), topic: String, at: UInt64, index: UInt64) {
        guard traceCopy(id, of: origin.id) else { return }
        let dead = topic.hasPrefix("%DLQ%")
        let group = String(topic.dropFirst(dead ? 5 : 7))
        trace(id, TraceEvent(kind: dead ? .deadLettered : .retried, at: at, index: index, group: group, attempt: origin.attempt, copy: id))
    }
}

// Snapshot layout (version 7): traced topics: count, (name) sorted; traces in the order they were stored: count, (id, topic, dropped u32,
// events: count, (TraceEvent), rows: count, (topic, queue u32, offset u64, id), copies: count,
// (id)). The aliases and the per-queue rows are rebuilt from them.
extension Broker {
    func encodeTraces(into w: inout WireWriter) {
        w.strings(traces.topics.sorted())
        let live = traces.order[traces.head...].filter { traces.records[$0] != nil }
        w.u32(UInt32(live.count))
        for id in live {
            let record = traces.records[id]!
            w.messageID(id)
            w.string(record.topic)
            w.u32(record.dropped)
            w.u32(UInt32(record.events.count))
            for e in record.events { e.encode(into: &w) }
            w.u32(UInt32(record.rows.count))
            for row in record.rows {
                w.queueRef(row.queue)
                w.u64(row.offset)
                w.messageID(row.id)
            }
            w.u32(UInt32(record.copies.count))
            for c in record.copies { w.messageID(c) }
        }
    }

    func restoreTraces(from r: inout WireReader) throws(WireError) {
        traces = TraceStore()
        traces.topics = Set(try r.strings("traced topics"))
        for _ in 0..<(try r.u32("traces")) {
            let id = try r.messageID()
            var record = TraceRecord(topic: try r.string("traced topic"))
            record.dropped = try r.u32("dropped steps")
            for _ in 0..<(try r.u32("steps")) { record.events.append(try TraceEvent(from: &r)) }
            for _ in 0..<(try r.u32("traced rows")) { record.rows.append((try r.queueRef(), try r.u64("traced offset"), try r.messageID())) }
            for _ in 0..<(try r.u32("copies")) {
                let c = try r.messageID()
                record.copies.append(c)
                traces.aliases[c] = id
            }
            traces.records[id] = record
            traces.order.append(id)
        }
        rebuildTraceRows()
    }
}
