// The delay schedule on disk. A delayed message is scheduled into a bucket of one minute of due
// time (`delayBucketMillis`), not into memory: a row in the timer log (the reserved queue
// `#timers` 128 of the consume-queue files) links it to the bucket's previous row, and memory
// holds per bucket only its newest and oldest row, its oldest entry and its earliest due time.
// So memory grows with the number of minutes that hold delayed messages (at most the maximum
// delay's worth), not with the messages.
//
// A bucket is loaded into the in-memory timer (`TimerIndex`) when a release entry names one of
// its messages: the leader finds the due messages of a bucket by reading its rows, proposes
// their release, and every replica, applying that entry, loads the bucket and every earlier one
// (in the same order, so state stays deterministic). From then on that minute's messages, and
// those scheduled later into a minute already loaded, are in memory until released. A recall
// of a message still on disk is remembered by id and skipped at the load.
//
// Row in the timer log: entry index and slot (the message's id), the due time (in the stored
// index field), the previous row of the bucket plus one (0 for none: low half in the position
// field, high half in the tag hash field). The message's queue, place and tag are read from its
// entry at load; retention keeps that entry (`oldestPinnedEntry` counts every bucket's oldest).
// The timer log's minimum rises past rows of loaded buckets; its files go as queue files do.
import TernProtocol
import TernStorage

/// A minute of due times on disk: its rows form a chain in the timer log, newest first.
struct DelayBucket: Equatable {
    /// Offsets in the timer log of its newest and its oldest row.
    var head: UInt64
    var first: UInt64
    /// The entry of its oldest row (rows are appended as entries apply, so the lowest).
    var firstEntry: UInt64
    /// Its earliest due time.
    var minDue: UInt64
    var count: UInt32
}

extension Broker {
    public static let delayTopic = "#timers"
    /// Due times per bucket. Part of the format.
    public static let delayBucketMillis: UInt64 = 60_000
    /// Numbered after the key and late-place buckets (files are named by the creating entry and
    /// the queue's number, and a delayed send with keys creates a key bucket and the timer log).
    static var timerLog: QueueRef { QueueRef(topic: delayTopic, queueID: 2 * keyBuckets) }

    /// Delayed messages not yet released or recalled, in memory and on disk.
    public var delayedCount: Int {
        timers.count + delayBuckets.values.reduce(0) { $0 + Int($1.count) } - delayRecalled.count
    }

    /// The earliest due time of any pending delayed message.
    public var nextDelayDue: UInt64? {
        let disk = firstDelayBucket.flatMap { delayBuckets[$0]?.minDue }
        switch (timers.next, disk) {
        case (let a?, let b?): return Swift.min(a, b)
        case (let a, let b): return a ?? b
        }
    }

    /// Schedules a delayed message: into memory when its minute is loaded already, else on disk.
    func scheduleDelayed(_ t: PendingTimer, index: UInt64) throws(StorageError) {
        let key = t.deliverAt / Broker.delayBucketMillis
        if let loaded = delayLoadedThrough, key <= loaded {
            timers.schedule(t)
            return
        }
        if queues[Broker.timerLog] == nil { createQueue(Broker.timerLog, created: index) }
        let previous = delayBuckets[key].map { $0.head + 1 } ?? 0
        let offset = try appendRow(
            Broker.timerLog,
            QueueRow(
                entryIndex: t.id.entryIndex, storedIndex: t.deliverAt, position: UInt32(truncatingIfNeeded: previous), slot: t.id.slot,
                tagHash: UInt32(truncatingIfNeeded: previous >> 32)))
        if var b = delayBuckets[key] {
            b.head = offset
            b.minDue = Swift.min(b.minDue, t.deliverAt)
            b.count += 1
            delayBuckets[key] = b
        } else {
            delayBuckets[key] = DelayBucket(head: offset, first: offset, firstEntry: t.id.entryIndex, minDue: t.deliverAt, count: 1)
            if firstDelayBucket.map({ key < $0 }) ?? true { firstDelayBucket = key }
        }
    }

    /// The rows of a bucket on disk, oldest first: (id, due time).
    func bucketRows(_ b: DelayBucket) throws(StorageError) -> [(id: MessageID, at: UInt64)] {
        guard let file = queues[Broker.timerLog] else { throw StorageError(.corruption, "delay buckets without a timer log") }
        var out: [(id: MessageID, at: UInt64)] = []
        var at = b.head
        while true {
            guard let r = try queueFiles.row(file, at: at) else { throw StorageError(.corruption, "timer log row \(at) is missing") }
            out.append((MessageID(entryIndex: r.entryIndex, slot: r.slot), r.storedIndex))
            let previous = UInt64(r.tagHash) << 32 | UInt64(r.position)
            if previous == 0 { break }
            guard previous - 1 < at else { throw StorageError(.corruption, "timer log row \(at) links forward to \(previous - 1)") }
            at = previous - 1
        }
        return out.reversed()
    }

    /// The timer of a delayed message, read from the entry that stored it (which retention keeps
    /// while the message is pending).
    func storedTimer(_ id: MessageID, deliverAt: UInt64) throws(StorageError) -> PendingTimer {
        let body = try source.entryBody(at: id.entryIndex)
        do throws(WireError) {
            var r = WireReader(body)
            _ = try r.u64("store timestamp")
            let header = try SendHeader(from: &r)
            for k in 0...Int(id.slot) {
                let start = UInt32(r.position)
                let m = try WireMessage.meta(from: &r)
                if k == Int(id.slot) {
                    return PendingTimer(
                        deliverAt: deliverAt, id: id, queue: QueueRef(topic: header.topic, queueID: header.queueID), position: start, tagHash: tagHash(m.tag))
                }
            }
        } catch {
            throw StorageError(.corruption, "entry \(id.entryIndex) does not hold the delayed message \(id): \(error)")
        }
        throw StorageError(.corruption, "entry \(id.entryIndex) does not hold the delayed message \(id)")
    }

    /// Delayed messages due at `now`, earliest first, at most `max`: those in memory and those
    /// of buckets on disk that hold a due one (read, not loaded: loading is the release's work).
    public func dueTimers(now: UInt64, max: Int) throws(StorageError) -> [PendingTimer] {
        var out = timers.due(now: now, max: max)
        for key in delayBuckets.keys.sorted() {
            let b = delayBuckets[key]!
            guard b.minDue <= now else { break }  // later buckets are due later still
            for row in try bucketRows(b) where row.at <= now && !delayRecalled.contains(row.id) {
                out.append(try storedTimer(row.id, deliverAt: row.at))
            }
        }
        out.sort { ($0.deliverAt, $0.id) < ($1.deliverAt, $1.id) }
        return Array(out.prefix(max))
    }

    /// Loads into memory the bucket that holds `id` (when it is on disk) and every earlier one.
    /// The bucket comes from the message's entry; an id that is not a delayed message on disk
    /// loads nothing.
    func loadDelayBucket(holding id: MessageID) throws(StorageError) {
        guard timers.pending[id] == nil, let key = try diskBucket(holding: id) else { return }
        for k in delayBuckets.keys.sorted() where k <= key {
            let b = delayBuckets.removeValue(forKey: k)!
            for row in try bucketRows(b) where delayRecalled.remove(row.id) == nil {
                timers.schedule(try storedTimer(row.id, deliverAt: row.at))
            }
        }
        delayLoadedThrough = Swift.max(delayLoadedThrough ?? key, key)
        firstDelayBucket = delayBuckets.keys.min()
        // Rows of loaded buckets are no longer needed.
        if let file = queues[Broker.timerLog], let bounds = queueFiles.bounds(file) {
            queueFiles.raiseMinimum(file, to: delayBuckets.values.map(\.first).min() ?? bounds.max)
        }
    }

    /// The key of the bucket on disk holding the delayed message `id`, nil when none does.
    func diskBucket(holding id: MessageID) throws(StorageError) -> UInt64? {
        guard !delayBuckets.isEmpty else { return nil }
        let body: [UInt8]
        do {
            body = try source.entryBody(at: id.entryIndex)
        } catch  where error.code == .invalidArgument {
            return nil
        }
        var r = WireReader(body)
        guard let stored = try? r.u64(), let header = try? SendHeader(from: &r), id.slot < header.count else { return nil }
        for _ in 0..<Int(id.slot) { guard (try? WireMessage.meta(from: &r)) != nil else { return nil } }
        guard let m = try? WireMessage.meta(from: &r),
            case .success(let due?) = Delay.deliverAt(m.properties, storeTimestamp: stored, maxDelayMillis: .max)
        else { return nil }
        let key = due / Broker.delayBucketMillis
        guard let b = delayBuckets[key], try bucketRows(b).contains(where: { $0.id == id }) else { return nil }
        return key
    }

    /// Whether `id` is a delayed message still pending (in memory, or on disk and not recalled).
    func isDelayPending(_ id: MessageID) throws(StorageError) -> Bool {
        if timers.pending[id] != nil { return true }
        if delayRecalled.contains(id) { return false }
        return try diskBucket(holding: id) != nil
    }

    func recallDelayed(_ id: MessageID) throws(StorageError) {
        if timers.pending[id] != nil {
            timers.recall(id)
        } else if try diskBucket(holding: id) != nil {
            delayRecalled.insert(id)
        }
    }
}
