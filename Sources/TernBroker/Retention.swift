// Retention, the broker's part. The leader decides which old log entries go (by age, by the
// log's size, by disk use) and proposes it as a trim entry: the first index kept, and each
// queue's new minimum offset. Every replica applies the same entry, so every replica reports the
// same queue minimums, and a consumer sees the same minimum after a failover. Each member then
// deletes whole log segments below the trim index once its own snapshots cover them
// (NodeRetention.swift).
//
// A trim never passes a message that must still be delivered once: the leader's trim index is at
// most the oldest entry still holding a delayed message not yet due, an undecided half
// message, or a received message whose invisible time has not ended (`oldestPinnedEntry`).
// Rows below a queue's new minimum are gone for consumers. A message delivered later than it was
// stored (a released delayed message, a committed half message) is read from the copy its
// release or commit carries (Copies.swift), so the entries rows point at rise along each queue;
// a row whose entry is gone anyway (an old log's release by ids) reads as gone and is passed over.
import TernProtocol
import TernStorage

/// Layout: first index kept u64, count u32, then (topic, queue u32, the index of the entry that
/// created the queue u64, new minimum offset u64). A minimum for a queue created by another
/// entry (its topic was deleted and created again meanwhile) does not apply.
public struct TrimEntry: Equatable, Sendable {
    public struct Minimum: Equatable, Sendable {
        public var queue: QueueRef
        public var created: UInt64
        public var offset: UInt64
    }
    public var index: UInt64
    public var minimums: [Minimum]
    public init(index: UInt64, minimums: [Minimum]) {
        self.index = index
        self.minimums = minimums
    }
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.u64(index)
        w.u32(UInt32(minimums.count))
        for m in minimums {
            w.queueRef(m.queue)
            w.u64(m.created)
            w.u64(m.offset)
        }
        return w.bytes
    }
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> TrimEntry {
        var r = WireReader(bytes)
        let index = try r.u64("trim index")
        var minimums: [Minimum] = []
        for _ in 0..<(try r.u32("count")) {
            minimums.append(Minimum(queue: try r.queueRef(), created: try r.u64("created"), offset: try r.u64("minimum offset")))
        }
        try r.finish("trim entry")
        return TrimEntry(index: index, minimums: minimums)
    }
}

extension Broker {
    func applyTrim(_ t: TrimEntry) -> ApplyOutcome {
        trimIndex = max(trimIndex, t.index)
        trimTraces(before: trimIndex)
        for m in t.minimums {
            guard let key = queues[m.queue], key.created == m.created else { continue }
            queueFiles.raiseMinimum(key, to: m.offset)
            // Deliveries below the minimum are gone with their messages.
            for g in receiveGroups.keys.sorted() {
                guard var state = receiveGroups[g]?[m.queue] else { continue }
                let low = queue(m.queue)!.baseOffset
                state.invisible = state.invisible.filter { $0.key >= low }
                state.next = Swift.max(state.next, low)
                receiveGroups[g]![m.queue] = state
            }
        }
        return .done
    }

    /// The oldest log entry that must stay for a message still to be delivered once: a delayed
    /// message not yet released, an undecided half message, a delivery still invisible. nil when
    /// nothing is pinned.
    public func oldestPinnedEntry() throws(StorageError) -> UInt64? {
        var oldest: UInt64?
        func note(_ i: UInt64) { oldest = Swift.min(oldest ?? i, i) }
        for t in timers.pending.values { note(t.id.entryIndex) }
        for b in delayBuckets.values { note(b.firstEntry) }
        for t in checkTimers.pending.values { note(t.id.entryIndex) }
        for g in receiveGroups.keys.sorted() {
            for (q, state) in receiveGroups[g]! where !state.invisible.isEmpty {
                for o in state.invisible.keys.sorted() {
                    if let r = try row(q, at: o) { note(r.storedIndex) }
                }
            }
        }
        return oldest
    }

    /// Each queue's new minimum for trimming below `index`: the first offset, from the current
    /// minimum on, whose row's entry is at or after `index`, looking at most `maxScan` rows per
    /// queue (a later trim goes on from there). Queues in topic order.
    ///
    /// Returns the minimums and the first entry index the scans did not pass: where a scan hit
    /// its bound, the trim must stop there, or rows above a minimum would lose their entries.
    public func trimMinimums(below index: UInt64, maxScan: Int = 1 << 20) throws(StorageError) -> ([TrimEntry.Minimum], reached: UInt64) {
        var out: [TrimEntry.Minimum] = []
        var reached = index
        // The timer log's minimum follows its buckets (DelaySchedule.swift), not entries.
        for ref in queues.keys.sorted() where ref.topic != Broker.delayTopic {
            guard let q = storedQueue(ref) else { continue }
            var cursor = RowCursor(queueFiles, q.key)
            var at = q.baseOffset
            var scanned = 0
            while at < q.maxOffset, try cursor.row(at: at).0.storedIndex < index {
                if scanned == maxScan {
                    reached = Swift.min(reached, try cursor.row(at: at).0.storedIndex)
                    break
                }
                at += 1
                scanned += 1
            }
            if at > q.baseOffset { out.append(TrimEntry.Minimum(queue: ref, created: q.key.created, offset: at)) }
        }
        return (out, reached)
    }
}
