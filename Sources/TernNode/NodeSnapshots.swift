// Broker snapshots: the broker's state written at an applied index, so that a restart loads it
// and applies only the log after it.
//
// - Taken after applying each entry whose index is a multiple of `snapshotEveryEntries`: every
//   replica snapshots at the same indexes, and replicas that applied the same entries write the
//   same bytes (the simulator compares digests).
// - Written once the local log is durable through that index (a follower may apply entries its
//   own disk has not synced yet; a snapshot must never be ahead of the log a restart finds).
//   Before the file is written, the consume-queue files are synced, so every row the snapshot
//   counts is on disk. The last two snapshots are kept, with the queue files they name.
// - At start: the newest snapshot that reads back whole, matches the log (the term of its entry)
//   and whose queue files are whole is loaded; one that fails is set aside and the next older is
//   tried; with none, the queue files are removed and the broker is rebuilt from the whole log.
import TernBroker
import TernProtocol
import TernStorage

extension Node {
    func restoreState() throws(StorageError) {
        let log = replica.log
        var report: [String] = []
        if let r = replica.resetReport { report.append(r) }
        for index in try snapshots.indexes() {
            let file: SnapshotFile
            do throws(StorageError) {
                // A second read before giving up: a read error need not be in the file.
                if let first = try? snapshots.read(index) { file = first } else { file = try snapshots.read(index) }
            } catch  where error.code == .corruption {
                report.append("snapshot \(index) is damaged (\(error.message)); set aside")
                try snapshots.setAside(index)
                continue
            }
            // The log must continue the snapshot: start at or before the entry after it. Where
            // the log holds the snapshot's entry with its term, everything up to it is the
            // committed history; otherwise (after an interrupted install, or a log cut back by
            // a crash) only the log's base is known committed, and Raft learns the rest again.
            guard log.firstIndex <= index + 1 else {
                report.append("snapshot \(index) is older than the log's first entry \(log.firstIndex); set aside")
                try snapshots.setAside(index)
                continue
            }
            let term = index >= log.firstIndex && index <= log.lastIndex ? try log.term(at: index) : nil
            if term != nil && term != file.term {
                report.append("snapshot \(index) (term \(file.term)) does not match the log's entry \(index) (term \(term!)); set aside")
                try snapshots.setAside(index)
                continue
            }
            let candidate = Broker(config: brokerConfig, source: self, queueFiles: queueFiles)
            if let problem = try candidate.restore(file.body) {
                report.append("snapshot \(index) cannot be used: \(problem); set aside")
                try snapshots.setAside(index)
                continue
            }
            broker = candidate
            let committed = term != nil ? index : log.firstIndex - 1
            replica.raft.restoredSnapshot(at: committed)
            lastAppliedTerm = file.term
            lastSnapshotIndex = index
            keptSnapshotBounds = [:]
            keptSnapshotTrims = [:]
            var othersKnown = true
            for other in try snapshots.indexes() {
                if other == index {
                    keptSnapshotBounds[other] = (try? Broker.queueBounds(inSnapshot: file.body)) ?? []
                    keptSnapshotTrims[other] = broker.trimIndex
                } else if let f = try? snapshots.read(other), let b = try? Broker.queueBounds(inSnapshot: f.body),
                    let t = try? Broker.trimIndex(inSnapshot: f.body)
                {
                    keptSnapshotBounds[other] = b
                    keptSnapshotTrims[other] = t
                } else {
                    othersKnown = false
                }
            }
            // Clean up only when every kept snapshot's files are known (one that did not read
            // now may read later, and must still find its files).
            if othersKnown { try collectQueueFiles() }
            report.append(
                term != nil
                    ? "loaded snapshot \(index) (term \(file.term), \(file.body.count) bytes, \(broker.topics.count) topics); the log after it holds \(log.lastIndex - index) entries to apply"
                    : "loaded snapshot \(index) (term \(file.term), \(file.body.count) bytes); the log (\(log.firstIndex)...\(log.lastIndex)) does not reach it yet: reads wait until the leader's entries do"
            )
            startReport = report
            try restoreMembership()
            return
        }
        try queueFiles.wipe()
        if log.firstIndex > 1 {
            // The log was compacted and no snapshot covers its start: nothing here can rebuild
            // the state. Drop the log and rejoin as after a lost disk; the leader installs a
            // snapshot.
            report.append(
                "no usable snapshot and the log starts at \(log.firstIndex), compacted: the log is dropped and this member rejoins as after a lost disk (the leader sends a snapshot)"
            )
            _ = try replica.dropLogAndRejoin()
        } else {
            report.append(
                "no snapshot: the broker is rebuilt from the whole log (\(log.lastIndex >= log.firstIndex ? log.lastIndex - log.firstIndex + 1 : 0) entries)")
        }
        startReport = report
        try restoreMembership()
    }

    /// After applying `entry`: a snapshot when its index is due.
    func snapshotIfDue(_ entry: LogEntry, into out: inout NodeOutput) {
        let byEntries = config.snapshotEveryEntries > 0 && entry.index % config.snapshotEveryEntries == 0
        let every = config.snapshotEveryBytes, after = broker.appliedBytes
        let byBytes = every > 0 && after / every != (after - Broker.countedBytes(type: entry.type, entry.body.count)) / every
        guard byEntries || byBytes else { return }
        takeSnapshot(entry, into: &out)
    }

    /// A snapshot of the state just after applying `entry`, written once the log is durable
    /// through it.
    func takeSnapshot(_ entry: LogEntry, into out: inout NodeOutput) {
        let body = broker.snapshot()
        pendingSnapshot = SnapshotFile(index: entry.index, term: entry.term, body: body)
        out.snapshots.append((entry.index, Node.digest(body)))
    }

    /// Writes the snapshot taken last once the log is durable through its index. A failure to
    /// write it (a full disk) is reported and the next one is tried; the node goes on.
    func writePendingSnapshot(into out: inout NodeOutput) {
        guard let s = pendingSnapshot, replica.log.durableIndex >= s.index else { return }
        pendingSnapshot = nil
        do {
            try queueFiles.sync()
            // Named as kept before the file exists: a failure after its rename must not let a
            // clean-up remove files it needs.
            keptSnapshotBounds[s.index] = (try? Broker.queueBounds(inSnapshot: s.body)) ?? []
            keptSnapshotTrims[s.index] = (try? Broker.trimIndex(inSnapshot: s.body)) ?? 0
            let removed = try snapshots.write(s)
            for r in removed {
                keptSnapshotBounds[r] = nil
                keptSnapshotTrims[r] = nil
            }
            lastSnapshotIndex = max(lastSnapshotIndex, s.index)
            lastSnapshotWrittenAt = now
            try collectQueueFiles()
            compactLog(into: &out)
        } catch {
            out.notices.append("snapshot \(s.index) was not written: \(error)")
            if !snapshots.exists(s.index) {
                // Not on disk after all: it must not hold back compaction, nor keep files.
                keptSnapshotBounds[s.index] = nil
                keptSnapshotTrims[s.index] = nil
            }
        }
    }

    /// Removes queue files that neither a kept snapshot nor a live queue needs.
    func collectQueueFiles() throws(StorageError) {
        var keep = queueFiles.allBounds
        for index in keptSnapshotBounds.keys.sorted() { keep += keptSnapshotBounds[index]! }
        try queueFiles.collect(keeping: keep)
    }

    /// CRC32C of the body in the high half, its length in the low half.
    static func digest(_ body: [UInt8]) -> UInt64 {
        UInt64(body.withUnsafeBytes { crc32c($0) }) << 32 | UInt64(truncatingIfNeeded: body.count)
    }
}
