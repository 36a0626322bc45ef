// Retention, the node's part (the broker's: Retention.swift). The leader decides, every
// `retentionCheckMillis`, how far the log may go: whole segments, oldest first, never the one
// being written, while the segment's newest message is older than `retentionMillis`, or the log
// is larger than `retentionBytes`, or the disk is above `diskSoftLimit`; never past the oldest
// entry a message still needs (`Broker.oldestPinnedEntry`), nor past what is applied. It
// proposes that as a trim entry with each queue's new minimum. Each member (the leader too)
// deletes segments below a trim index only once the older of its two kept snapshots holds that
// trim: whichever snapshot a restart loads (a damaged newest one falls back to the older), its
// queues start past every deleted entry. A trim past the newest snapshot takes one at the
// trim's own index on every replica.
import TernBroker
import TernProtocol
import TernStorage

extension Node {
    /// Leader, on each tick: a trim entry when retention allows the log's front to go.
    func proposeRetention(into out: inout NodeOutput) throws(StorageError) {
        guard isReadyLeader, retentionInFlight == nil, now >= nextRetentionCheck else { return }
        nextRetentionCheck = now + config.retentionCheckMillis
        let log = replica.log
        let ranges = log.segmentRanges
        guard ranges.count > 1 else { return }
        let segmentBytes = UInt64(log.options.segmentSizeBytes)
        // The log's files on disk: its segments and the retired ones kept for reuse (a deleted
        // segment joins those until they are `recycledSegmentsMax`; only then does deleting
        // free space). Without the recycled ones a 2 GiB limit held 2.9 GiB of files.
        // And the queue files beside them (about 3% of a log of 1 KiB messages): with them
        // `retentionBytes` bounds the data directory, not the log alone (a 2 GiB limit held up
        // to 2.6 GiB). They shrink as the trim goes; counted as they are now, the trim goes a
        // little further than needed.
        var live = UInt64(ranges.count), recycled = UInt64(log.recycledSegmentCount)
        let recycleMax = UInt64(log.options.recycledSegmentsMax)
        let queueBytes = queueFiles.storedBytes
        var logBytes: UInt64 { (live + recycled) * segmentBytes + queueBytes }
        var target = broker.trimIndex
        var early = diskUsedFraction > config.diskSoftLimit
        // Ages by the leader's clock (the store times are the leaders' clocks too), so that
        // messages age out of an idle group as well.
        let clock = max(now, broker.lastStoreTimestamp)
        for r in ranges.dropLast() where r.last >= r.first {
            guard r.last <= broker.appliedIndex else { break }
            let tooBig = config.retentionBytes.map { logBytes > $0 } ?? false
            var tooOld = false
            if let newest = try newestStoreTimestamp(first: r.first, last: r.last), newest + config.retentionMillis <= clock {
                tooOld = true
            }
            guard tooBig || tooOld || early else { break }
            early = false  // one segment early per check, above the soft limit
            target = max(target, r.last + 1)
            live -= 1
            recycled = min(recycleMax, recycled + 1)
        }
        if let pinned = try broker.oldestPinnedEntry(), !config.raft.plantedBugs.contains(.trimIgnoresPins) { target = min(target, pinned) }
        guard target > broker.trimIndex else { return }
        // The scan for each queue's new minimum is bounded; where it stops short, the trim stops
        // at the first entry it did not pass (a later trim goes on).
        let (minimums, reached) = try broker.trimMinimums(below: target)
        target = min(target, reached)
        guard target > broker.trimIndex else { return }
        let (result, output) = try replica.propose([(BrokerEntryType.trim, TrimEntry(index: target, minimums: minimums).encoded())])
        if case .accepted(let first, _) = result {
            retentionInFlight = first
            pending[first] = .internalWrite
        }
        try absorb(output, into: &out)
    }

    /// An upper bound on the store times of the segment's messages: the newest send among its
    /// last 64 entries, else the oldest among the next 64 entries after it (store times never
    /// go back along the log); nil when neither has a send.
    func newestStoreTimestamp(first: UInt64, last: UInt64) throws(StorageError) -> UInt64? {
        func stamp(_ i: UInt64) throws(StorageError) -> UInt64? {
            guard let e = try replica.log.read(from: i, maxBytes: 1).first, e.index == i, e.type == BrokerEntryType.messages, e.body.count >= 8 else {
                return nil
            }
            return e.body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        }
        var i = last
        while i >= first && last - i < 64 {
            if let t = try stamp(i) { return t }
            if i == 0 { break }
            i -= 1
        }
        var j = last + 1
        while j <= replica.log.lastIndex && j - last <= 64 {
            if let t = try stamp(j) { return t }
            j += 1
        }
        return nil
    }

    /// After a trim entry applied: a snapshot at its index when the newest one is older than the
    /// trim (so that segments can go once another follows), and the log compacted.
    func trimApplied(_ entry: LogEntry, into out: inout NodeOutput) {
        if retentionInFlight == entry.index { retentionInFlight = nil }
        let newest = max(keptSnapshotBounds.keys.max() ?? 0, pendingSnapshot?.index ?? 0)
        if broker.trimIndex > 0, newest + 1 < broker.trimIndex, pendingSnapshot?.index != entry.index {
            takeSnapshot(entry, into: &out)
        }
    }

    /// Deletes log segments below the trim index that the older kept snapshot holds: whichever
    /// snapshot a restart loads, its queues' minimums then lie past every deleted entry (a
    /// restart from a snapshot older than the trim served rows whose entries were gone:
    /// simulator seed 77).
    func compactLog(into out: inout NodeOutput) {
        var through: UInt64
        if config.raft.plantedBugs.contains(.compactPastApplied) {
            through = replica.log.durableIndex
        } else {
            guard keptSnapshotTrims.count >= 2, let older = keptSnapshotTrims.keys.min(), let trim = keptSnapshotTrims[older], trim > 1 else { return }
            through = min(trim - 1, older)
            // Not past the base of a stream being sent: its follower continues after that base.
            for t in installsOut.values { through = min(through, t.base) }
        }
        do {
            let removed = try replica.compact(through: through)
            if removed > 0 { out.compacted = replica.log.firstIndex }
        } catch {
            out.notices.append("could not delete log segments through \(through): \(error)")
        }
    }
}
