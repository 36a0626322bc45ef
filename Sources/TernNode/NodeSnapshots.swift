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
        for index in try snapshots.indexes() {
            let file: SnapshotFile
            do {
                file = try snapshots.read(index)
            } catch  where error.code == .corruption {
                report.append("snapshot \(index) is damaged (\(error.message)); set aside")
                try snapshots.setAside(index)
                continue
            }
            let term = index >= log.firstIndex ? try log.term(at: index) : nil
            guard term == file.term else {
                report.append(
                    "snapshot \(index) (term \(file.term)) does not match the log (entry \(index): \(term.map { "term \($0)" } ?? "absent"), log \(log.firstIndex)...\(log.lastIndex)); set aside"
                )
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
            replica.raft.restoredSnapshot(at: index)
            lastAppliedTerm = file.term
            lastSnapshotIndex = index
            keptSnapshotBounds = [:]
            for other in try snapshots.indexes() {
                if other == index {
                    keptSnapshotBounds[other] = (try? Broker.queueBounds(inSnapshot: file.body)) ?? []
                } else if let f = try? snapshots.read(other), let b = try? Broker.queueBounds(inSnapshot: f.body) {
                    keptSnapshotBounds[other] = b
                }
            }
            try collectQueueFiles()
            report.append(
                "loaded snapshot \(index) (term \(file.term), \(file.body.count) bytes, \(broker.topics.count) topics); the log after it holds \(log.lastIndex - index) entries to apply"
            )
            startReport = report
            return
        }
        try queueFiles.wipe()
        report.append(
            "no snapshot: the broker is rebuilt from the whole log (\(log.lastIndex >= log.firstIndex ? log.lastIndex - log.firstIndex + 1 : 0) entries)")
        startReport = report
    }

    /// After applying `entry`: a snapshot when its index is due.
    func snapshotIfDue(_ entry: LogEntry, into out: inout NodeOutput) {
        guard config.snapshotEveryEntries > 0, entry.index % config.snapshotEveryEntries == 0 else { return }
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
            let removed = try snapshots.write(s)
            keptSnapshotBounds[s.index] = (try? Broker.queueBounds(inSnapshot: s.body)) ?? []
            for r in removed { keptSnapshotBounds[r] = nil }
            lastSnapshotIndex = s.index
            try collectQueueFiles()
        } catch {
            out.notices.append("snapshot \(s.index) was not written: \(error)")
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
