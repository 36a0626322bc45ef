// The broker's state as bytes, for snapshots: everything `apply` changed except the consume
// queues' rows (on disk, in `ConsumeQueueFiles`; the snapshot records each queue's bounds).
// Deterministic: maps are written in sorted key order and FIFO windows in their order, so two
// replicas that applied the same entries produce the same bytes (the simulator compares them).
// Caches (the last entry read, parsed SQL filters) are not state and are not written.
//
// Layout (version 4, WireWriter encodings): version u8; applied index u64; last store timestamp
// u64; trim index u64; applied bytes u64; queues (first, so a reader can find the files a snapshot needs without the rest): count
// u32, then per queue in (topic, queue) order: topic, queue u32, created u64, min u64, max u64;
// topics: count, (name, queues u32); offsets: groups, (group, count, (topic, queue u32, offset
// u64)); producers: count, (id u64, queues, (topic, queue u32, forgotten max u64, last used u64,
// results, (sequence u64, response))); give-backs: topics, (topic, count, (key, response));
// delay timers, released timers, check timers: count,
// (at u64, id, topic, queue u32, stored index u64, position u32, tag hash u32); half messages: count, (id, group,
// checks u32, stored at u64); decided: count, (id, decision u8); receive groups: count, (group,
// queues, (topic, queue u32, next u64, invisible, (offset u64, until u64, receive index u64,
// attempt u32))); delay schedule: loaded flag u8, loaded through u64, buckets: count, (minute u64,
// head u64, first u64, first entry u64, earliest due u64, count u32), recalled: count, (id);
// accounts (version 4; version 3 has none and is still read): count, (`Account` with its secret)
// in access key order; the last Raft configuration applied (version 5): present u8, index u64,
// body blob; topic types (version 6): count, (name, type u8) in name order; group settings
// (version 6): count, (name, fifo u8) in name order; message traces (version 7; Trace.swift). The
// key index and the delay schedule's rows are in the queues (KeyIndex.swift, DelaySchedule.swift).
import TernProtocol
import TernStorage

extension Broker {
    static let snapshotVersion: UInt8 = 7

    /// The state at `appliedIndex`, encoded.
    public func snapshot() -> [UInt8] {
        var w = WireWriter(capacity: 1 << 12)
        w.u8(Broker.snapshotVersion)
        w.u64(appliedIndex)
        w.u64(lastStoreTimestamp)
        w.u64(trimIndex)
        w.u64(appliedBytes)
        let refs = queues.keys.sorted()
        w.u32(UInt32(refs.count))
        for ref in refs {
            let key = queues[ref]!
            let b = queueFiles.bounds(key)!
            w.string(ref.topic)
            w.u32(ref.queueID)
            w.u64(key.created)
            w.u64(b.min)
            w.u64(b.max)
        }
        w.u32(UInt32(topics.count))
        for name in topics.keys.sorted() {
            w.string(name)
            w.u32(topics[name]!)
        }
        w.u32(UInt32(offsets.count))
        for g in offsets.keys.sorted() {
            w.string(g)
            let m = offsets[g]!
            w.u32(UInt32(m.count))
            for q in m.keys.sorted() {
                w.queueRef(q)
                w.u64(m[q]!)
            }
        }
        let dropDedupe = config.plantedBugs.contains(.snapshotDropsDedupe)
        w.u32(dropDedupe ? 0 : UInt32(producers.count))
        for id in producers.keys.sorted() where !dropDedupe {
            w.u64(id)
            let windows = producers[id]!
            w.u32(UInt32(windows.count))
            for q in windows.keys.sorted() {
                let window = windows[q]!
                w.queueRef(q)
                w.u64(window.forgottenMax)
                w.u64(window.lastUsed)
                let live = window.order[window.head...]
                w.u32(UInt32(live.count))
                for s in live {
                    w.u64(s)
                    window.results[s]!.encode(into: &w)
                }
            }
        }
        w.u32(UInt32(sendBacks.count))
        for topic in sendBacks.keys.sorted() {
            let book = sendBacks[topic]!
            w.string(topic)
            // Present keys only: the sendBackTwice planted bug can list a key twice.
            var seen = Set<String>()
            let live = book.order[book.head...].filter { book.keys[$0] != nil && seen.insert($0).inserted }
            w.u32(UInt32(live.count))
            for key in live {
                w.string(key)
                book.keys[key]!.encode(into: &w)
            }
        }
        for index in [timers.pending, timers.released, checkTimers.pending] {
            w.u32(UInt32(index.count))
            for id in index.keys.sorted() { w.timer(index[id]!) }
        }
        w.u32(UInt32(halfMessages.count))
        for id in halfMessages.keys.sorted() {
            let h = halfMessages[id]!
            w.messageID(id)
            w.string(h.group)
            w.u32(h.checks)
            w.u64(h.storedAt)
        }
        let decidedLive = decidedOrder[decidedHead...]
        w.u32(UInt32(decidedLive.count))
        for id in decidedLive {
            w.messageID(id)
            w.u8(decided[id]!.rawValue)
        }
        w.u32(UInt32(receiveGroups.count))
        for g in receiveGroups.keys.sorted() {
            w.string(g)
            let m = receiveGroups[g]!
            w.u32(UInt32(m.count))
            for q in m.keys.sorted() {
                let state = m[q]!
                w.queueRef(q)
                w.u64(state.next)
                w.u32(UInt32(state.invisible.count))
                for o in state.invisible.keys.sorted() {
                    let inv = state.invisible[o]!
                    w.u64(o)
                    w.u64(inv.until)
                    w.u64(inv.receiveIndex)
                    w.u32(inv.attempt)
                }
            }
        }
        w.u8(delayLoadedThrough == nil ? 0 : 1)
        w.u64(delayLoadedThrough ?? 0)
        w.u32(UInt32(delayBuckets.count))
        for key in delayBuckets.keys.sorted() {
            let b = delayBuckets[key]!
            w.u64(key)
            w.u64(b.head)
            w.u64(b.first)
            w.u64(b.firstEntry)
            w.u64(b.minDue)
            w.u32(b.count)
        }
        w.u32(UInt32(delayRecalled.count))
        for id in delayRecalled.sorted() { w.messageID(id) }
        w.u32(UInt32(accounts.count))
        for key in accounts.keys.sorted() { accounts[key]!.encode(into: &w) }
        w.u8(membership == nil ? 0 : 1)
        w.u64(membership?.index ?? 0)
        w.blob(membership?.body ?? [])
        w.u32(UInt32(topicTypes.count))
        for name in topicTypes.keys.sorted() {
            w.string(name)
            w.u8(topicTypes[name]!.rawValue)
        }
        w.u32(UInt32(groupSettings.count))
        for name in groupSettings.keys.sorted() {
            w.string(name)
            w.u8(groupSettings[name]! ? 1 : 0)
        }
        encodeTraces(into: &w)
        return w.bytes
    }

    /// The trim index a snapshot holds (entries before it were gone by retention then).
    public static func trimIndex(inSnapshot body: [UInt8]) throws(WireError) -> UInt64 {
        var r = WireReader(body)
        _ = try r.u8("snapshot version")
        _ = try r.u64("applied index")
        _ = try r.u64("last store timestamp")
        return try r.u64("trim index")
    }

    /// The queue bounds a snapshot names (its first section), for keeping their files.
    public static func queueBounds(inSnapshot body: [UInt8]) throws(WireError) -> [QueueFileBounds] {
        var r = WireReader(body)
        return try readQueues(&r).map(\.1)
    }

    private static func readQueues(_ r: inout WireReader) throws(WireError) -> [(QueueRef, QueueFileBounds)] {
        let version = try r.u8("snapshot version")
        guard (3...snapshotVersion).contains(version) else { throw WireError("snapshot version \(version) is not 3 to \(snapshotVersion)") }
        _ = try r.u64("applied index")
        _ = try r.u64("last store timestamp")
        _ = try r.u64("trim index")
        _ = try r.u64("applied bytes")
        var out: [(QueueRef, QueueFileBounds)] = []
        for _ in 0..<(try r.u32("queues")) {
            let ref = try r.queueRef()
            let key = QueueFileKey(created: try r.u64("created"), queueID: ref.queueID)
            let lo = try r.u64("min offset")
            let hi = try r.u64("max offset")
            guard lo <= hi else { throw WireError("queue \(ref): min offset \(lo) above max \(hi)") }
            out.append((ref, QueueFileBounds(key: key, minOffset: lo, maxOffset: hi)))
        }
        return out
    }

    /// Loads a snapshot into this broker, which must be new (nothing applied). Returns what is
    /// wrong when the snapshot does not decode or its queue files are not whole; the broker is
    /// then unusable, and the caller makes a new one.
    public func restore(_ body: [UInt8]) throws(StorageError) -> String? {
        precondition(appliedIndex == 0 && topics.isEmpty, "restore into a broker that applied entries")
        var r = WireReader(body)
        let bounds: [(QueueRef, QueueFileBounds)]
        do {
            bounds = try Broker.readQueues(&r)
            var header = WireReader(body)
            let version = try header.u8()
            appliedIndex = try header.u64()
            lastStoreTimestamp = try header.u64()
            trimIndex = try header.u64()
            appliedBytes = try header.u64()
            try restoreRest(&r, version: version)
        } catch {
            return "the snapshot does not decode: \(error)"
        }
        if let problem = try queueFiles.restore(bounds.map(\.1)) { return problem }
        for (ref, b) in bounds { queues[ref] = b.key }
        return nil
    }

    private func restoreRest(_ r: inout WireReader, version: UInt8) throws(WireError) {
        for _ in 0..<(try r.u32("topics")) {
            let name = try r.string("topic")
            topics[name] = try r.u32("queue count")
        }
        for _ in 0..<(try r.u32("offset groups")) {
            let g = try r.string("group")
            var m: [QueueRef: UInt64] = [:]
            for _ in 0..<(try r.u32("offsets")) { m[try r.queueRef()] = try r.u64("offset") }
            offsets[g] = m
        }
        for _ in 0..<(try r.u32("producers")) {
            let id = try r.u64("producer")
            var windows: [QueueRef: DedupeWindow] = [:]
            for _ in 0..<(try r.u32("windows")) {
                let q = try r.queueRef()
                var window = DedupeWindow()
                window.forgottenMax = try r.u64("forgotten max")
                window.lastUsed = try r.u64("last used")
                for _ in 0..<(try r.u32("results")) {
                    let s = try r.u64("sequence")
                    window.results[s] = try SendResponse(from: &r)
                    window.order.append(s)
                }
                windows[q] = window
            }
            producers[id] = windows
        }
        for _ in 0..<(try r.u32("give-back topics")) {
            let topic = try r.string("topic")
            var book: (keys: [String: SendResponse], order: [String], head: Int) = ([:], [], 0)
            for _ in 0..<(try r.u32("give-backs")) {
                let key = try r.string("retry key")
                book.keys[key] = try SendResponse(from: &r)
                book.order.append(key)
            }
            sendBacks[topic] = book
        }
        for _ in 0..<(try r.u32("timers")) { timers.schedule(try r.timer()) }
        for _ in 0..<(try r.u32("released timers")) {
            let t = try r.timer()
            timers.released[t.id] = t
        }
        for _ in 0..<(try r.u32("check timers")) { checkTimers.schedule(try r.timer()) }
        for _ in 0..<(try r.u32("half messages")) {
            let id = try r.messageID()
            halfMessages[id] = (try r.string("group"), try r.u32("checks"), try r.u64("stored at"))
        }
        for _ in 0..<(try r.u32("decided")) {
            let id = try r.messageID()
            let d = try r.u8("decision")
            guard let decision = TransactionDecision(rawValue: d) else { throw WireError("transaction decision \(d) is unknown") }
            decided[id] = decision
            decidedOrder.append(id)
        }
        for _ in 0..<(try r.u32("receive groups")) {
            let g = try r.string("group")
            var m: [QueueRef: ReceiveQueue] = [:]
            for _ in 0..<(try r.u32("receive queues")) {
                let q = try r.queueRef()
                var state = ReceiveQueue(next: try r.u64("next"))
                for _ in 0..<(try r.u32("invisible")) {
                    let o = try r.u64("offset")
                    state.invisible[o] = Invisible(until: try r.u64("until"), receiveIndex: try r.u64("receive index"), attempt: try r.u32("attempt"))
                }
                m[q] = state
            }
            receiveGroups[g] = m
        }
        let loaded = try r.u8("delay loaded flag")
        let through = try r.u64("delay loaded through")
        delayLoadedThrough = loaded == 0 ? nil : through
        for _ in 0..<(try r.u32("delay buckets")) {
            let key = try r.u64("bucket")
            delayBuckets[key] = DelayBucket(
                head: try r.u64("head"), first: try r.u64("first"), firstEntry: try r.u64("first entry"), minDue: try r.u64("earliest due"),
                count: try r.u32("count"))
        }
        firstDelayBucket = delayBuckets.keys.min()
        for _ in 0..<(try r.u32("recalled")) { delayRecalled.insert(try r.messageID()) }
        if version >= 4 {
            for _ in 0..<(try r.u32("accounts")) {
                let a = try Account(from: &r)
                accounts[a.accessKey] = a
            }
        }
        if version >= 5 {
            let present = try r.u8("membership present")
            let index = try r.u64("membership index")
            let body = try r.blob("membership")
            if present == 1 { membership = (index, body) }
        }
        if version >= 6 {
            for _ in 0..<(try r.u32("topic types")) {
                let name = try r.string("typed topic")
                topicTypes[name] = try TopicType.decode(r.u8("topic type"))
            }
            for _ in 0..<(try r.u32("group settings")) {
                let name = try r.string("group")
                groupSettings[name] = try r.u8("fifo") == 1
            }
        }
        if version >= 7 { try restoreTraces(from: &r) }
        try r.finish("broker snapshot")
    }
}

extension WireWriter {
    mutating func queueRef(_ q: QueueRef) {
        string(q.topic)
        u32(q.queueID)
    }

    mutating func timer(_ t: PendingTimer) {
        u64(t.deliverAt)
        messageID(t.id)
        queueRef(t.queue)
        u64(t.storedIndex)
        u32(t.position)
        u32(t.tagHash)
    }
}

extension WireReader {
    mutating func queueRef() throws(WireError) -> QueueRef {
        QueueRef(topic: try string("topic"), queueID: try u32("queue"))
    }

    mutating func timer() throws(WireError) -> PendingTimer {
        let at = try u64("due time")
        let id = try messageID()
        return PendingTimer(
            deliverAt: at, id: id, queue: try queueRef(), storedIndex: try u64("stored index"), position: try u32("position"), tagHash: try u32("tag hash"))
    }
}
