// The latencies only the shell can time (docs/operations.md, "Metrics"): how long the leader's
// entries take to reach its own disk (append) and a quorum (commit), how long each disk batch
// (the writes and their fdatasync) takes, and how large batches are. The node stays clockless:
// after each step the shell compares the log's indexes and counters with what it saw before, on
// the monotonic clock. One entry per step and per batch, never per request, so that measuring
// costs next to nothing on the append path. Recorded through swift-metrics into the factory the
// launcher gives (Prometheus, exposed by the HTTP listener).
import CoreMetrics
import DequeModule
import Foundation
import TernNode

final class LoopMeter {
    let appendLatency: CoreMetrics.Timer
    let commitLatency: CoreMetrics.Timer
    let batchLatency: CoreMetrics.Timer
    let batchEntries: Recorder
    let batchBytes: Recorder
    let leaderChanges: Counter

    /// Indexes this leader appended, with when (monotonic ns): the newest first reached by
    /// `lastIndex` at the end of a step. Cleared when the node stops leading.
    private var appended: Deque<(index: UInt64, at: UInt64)> = []
    private var awaitingDisk: Deque<(index: UInt64, at: UInt64)> = []
    /// Submission times of batches not yet seen complete, oldest first.
    private var batches: Deque<UInt64> = []
    private var seenBatches = 0
    private var seenEntries = 0
    private var seenBytes = 0
    private var seenLastIndex: UInt64 = 0
    /// The last leader known (never reset to none).
    private var seenLeader: String?
    /// Commits timed so far and their total time, for the console's chart.
    private(set) var commits: (count: UInt64, nanos: UInt64) = (0, 0)

    init(factory: any MetricsFactory) {
        appendLatency = Timer(label: "tern_raft_append_latency_seconds", factory: factory)
        commitLatency = Timer(label: "tern_raft_commit_latency_seconds", factory: factory)
        batchLatency = Timer(label: "tern_disk_batch_latency_seconds", factory: factory)
        batchEntries = Recorder(label: "tern_disk_batch_entries", factory: factory)
        batchBytes = Recorder(label: "tern_disk_batch_bytes", factory: factory)
        leaderChanges = Counter(label: "tern_raft_leader_changes_total", factory: factory)
    }

    /// After each step of the node (on the loop).
    func observe(_ node: Node, batchesInFlight: Int) {
        let now = DispatchTime.now().uptimeNanoseconds
        let raft = node.replica.raft
        let log = node.replica.log
        // A change to a new leader; not losing one (a pre-vote forgets it) and hearing it again.
        if let leader = raft.leader?.name, leader != seenLeader {
            leaderChanges.increment()
            seenLeader = leader
        }
        // Batches: each submitted one is timed until the device has no more than the rest in flight.
        let stats = log.stats
        if stats.batches > seenBatches {
            let count = stats.batches - seenBatches
            for _ in 0..<count { batches.append(now) }
            let entries = (stats.entriesWritten - seenEntries) / count
            let bytes = (stats.bytesWritten - seenBytes) / count
            for _ in 0..<count {
                batchEntries.record(entries)
                batchBytes.record(bytes)
            }
            seenBatches = stats.batches
            seenEntries = stats.entriesWritten
            seenBytes = stats.bytesWritten
        }
        while batches.count > batchesInFlight, let submitted = batches.popFirst() {
            batchLatency.recordNanoseconds(Int64(now - submitted))
        }
        // Entries: timed from the step that appended them as leader.
        guard raft.role == .leader else {
            appended.removeAll()
            awaitingDisk.removeAll()
            seenLastIndex = log.lastIndex
            return
        }
        if log.lastIndex > seenLastIndex {
            appended.append((log.lastIndex, now))
            awaitingDisk.append((log.lastIndex, now))
        }
        seenLastIndex = log.lastIndex
        while let first = awaitingDisk.first, first.index <= log.durableIndex {
            appendLatency.recordNanoseconds(Int64(now - first.at))
            awaitingDisk.removeFirst()
        }
        while let first = appended.first, first.index <= raft.commitIndex {
            commitLatency.recordNanoseconds(Int64(now - first.at))
            commits = (commits.count + 1, commits.nanos + (now - first.at))
            appended.removeFirst()
        }
    }
}
