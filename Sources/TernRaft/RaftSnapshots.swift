// Snapshot installs, Raft's part. A follower whose next entry the leader compacted away (log
// retention) cannot be caught up by appends: the leader marks it `installing` and asks the node
// to send it a snapshot stream (`Effects.snapshotRequests`). The stream travels as
// `snapshotChunk` messages, which carry the leader's term like appends: a follower takes them
// only from the leader of its term (resetting its election timer, as an append does) and hands
// them to its node (`Effects.snapshotChunks`); its node answers each with
// `acknowledgeSnapshotChunk`. Once the whole stream is durable and installed (the node reset
// the log to the snapshot's base and loaded the state), `installedSnapshot` acknowledges the
// base to the leader as an append would, and appends continue after it.
//
// What the stream holds, how it is cut and resumed, and when it is retransmitted is the node's
// business (NodeInstall.swift); Raft keeps only the `installing` mark, and drops it when the
// follower acknowledges past its old match, or when the install shows no progress for
// `installTimeoutTicks` (the next append attempt then asks for a snapshot again).

extension Raft {
    /// Ticks without progress after which an install is given up and asked for again.
    static let installTimeoutTicks: UInt64 = 200

    func startInstall(_ pr: inout Progress, _ peer: NodeID) {
        pr.installing = true
        pr.installTick = ticks
        pr.probing = true
        pr.probeSent = false
        pr.inflight.removeAll()
        out.snapshotRequests.append(peer)
    }

    func handleSnapshotChunkResponse(_ m: Message, index: UInt64, nextOffset: UInt64) {
        guard role == .leader, var pr = progress[m.from] else { return }
        pr.recentActive = true
        pr.heardTick = ticks
        pr.installTick = ticks
        progress[m.from] = pr
        out.snapshotProgress.append(SnapshotProgress(peer: m.from, index: index, nextOffset: nextOffset))
    }

    /// Leader: drops install marks that showed no progress for too long, so that the next append
    /// attempt asks for a snapshot again (called on every tick).
    func expireInstalls() {
        guard role == .leader else { return }
        for peer in peers {
            guard var pr = progress[peer], pr.installing, ticks - pr.installTick > Raft.installTimeoutTicks else { continue }
            pr.installing = false
            progress[peer] = pr
        }
    }

    /// Follower: the node stored the stream at `index` up to `nextOffset`.
    public func acknowledgeSnapshotChunk(to leader: NodeID, index: UInt64, nextOffset: UInt64) -> Effects {
        send(to: leader, .snapshotChunkResponse(index: index, nextOffset: nextOffset))
        return finish()
    }

    /// Follower: the node installed a snapshot, and its log continues after `base` (the last
    /// entry the leader compacted away; the log was reset to it unless it held it already).
    /// Everything up to the base is committed; the leader learns where this log stands as from an
    /// append's acknowledgement.
    /// `membership`: the configuration the snapshot holds (at its index); nil when it holds none
    /// (a snapshot from before configurations were replicated: the founding one stays).
    public func installedSnapshot(base: UInt64, membership: (index: UInt64, membership: Membership)? = nil) -> Effects {
        // Committed: the leader's base, and this log's own front when compacted further.
        let known = max(base, log.firstIndex - 1)
        precondition(log.lastIndex >= known, "installed at \(base) but the log is \(log.firstIndex)...\(log.lastIndex)")
        // Configurations in the log after the base and the snapshot's own stay; those at or
        // below them give way to the snapshot's: every entry up to the base is committed (the
        // snapshot's configuration covers it), and one this log held there was on a dead branch
        // when the log was reset (helper review: kept, it became the committed base).
        let above = max(membership?.index ?? 0, base)
        let later = configs.filter { $0.index > above && $0.index <= log.lastIndex }
        configs = [membership ?? configs[0]] + later
        membershipChanged()
        commitIndex = max(commitIndex, known)
        appliedIndex = max(appliedIndex, known)
        reportedCommit = max(reportedCommit, commitIndex)
        verifiedIndex = max(verifiedIndex, known)
        if role == .follower, let leader { sendAck(to: leader) }
        return finish()
    }
}
