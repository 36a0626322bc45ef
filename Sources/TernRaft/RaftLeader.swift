// What only a leader does: its tick (heartbeats, check-quorum, handing over to a preferred
// leader), leadership transfer, and the lease under which it serves reads.

extension Raft {
    /// Hands leadership to `target`: replicate until it is caught up, then tell it to campaign.
    /// Proposals are refused meanwhile; the transfer is abandoned after an election timeout.
    public func transferLeadership(to target: NodeID) throws(LogFailure) -> Effects {
        guard role == .leader, target != id, progress[target] != nil, counted.contains(target) else { return finish() }
        transferTarget = target
        transferElapsed = 0
        if progress[target]!.match == log.lastIndex {
            send(to: target, .timeoutNow)
        } else {
            try sendAppend(to: target)
        }
        return finish()
    }

    /// True while this node may serve a linearizable read as leader without a round trip: its
    /// term's no-op is committed (so it knows every earlier commit) and a quorum echoed a
    /// heartbeat sent within the last election timeout, so no other leader can have been
    /// elected since (followers ignore votes that long after hearing from a leader). Assumes
    /// clocks that tick at nearly the same rate.
    public var hasLease: Bool {
        guard role == .leader, commitIndex >= termStartIndex else { return false }
        if bugs.contains(.noCheckQuorum) { return true }
        let horizon = ticks >= UInt64(config.electionTimeoutTicks) ? ticks - UInt64(config.electionTimeoutTicks) + 1 : 0
        // Only the voters of the active configuration count (RaftMembership.swift).
        var fresh = isVoter ? 1 : 0
        for peer in counted where progress[peer]!.echoedTick >= horizon && progress[peer]!.echoedTick > 0 { fresh += 1 }
        return fresh >= quorum
    }

    func tickLeader(_ count: Int) throws(LogFailure) {
        heartbeatElapsed += count
        electionElapsed += count
        if heartbeatElapsed >= config.heartbeatIntervalTicks {
            heartbeatElapsed = 0
            for peer in peers {
                send(to: peer, .heartbeat(commit: min(progress[peer]!.match, commitIndex), context: ticks))
            }
        }
        if electionElapsed >= config.electionTimeoutTicks {
            // Check-quorum at every multiple of the election timeout. A catch-up step that
            // passes two or more of those points holds a whole window in which nobody could
            // have been heard from (inputs wait behind this step), so the check then fails
            // whatever `recentActive` says. Ticks past the last point count toward the next.
            let windows = electionElapsed / config.electionTimeoutTicks
            electionElapsed %= config.electionTimeoutTicks
            if config.checkQuorum && !bugs.contains(.noCheckQuorum) {
                let own = isVoter ? 1 : 0
                let active = windows > 1 ? own : own + counted.filter { progress[$0]!.recentActive }.count
                if active < quorum {
                    becomeFollower(term: term, leader: nil)
                    return
                }
            }
            for peer in peers { progress[peer]!.recentActive = false }
            endMarks = (endMarks.latest, log.lastIndex)
        }
        try maybeStamp()
        if transferTarget != nil {
            transferElapsed += count
            if transferElapsed >= config.electionTimeoutTicks { transferTarget = nil }
        } else if let preferred = config.preferredLeader, preferred != id, counted.contains(preferred), let pr = progress[preferred],
            pr.recentActive, pr.match == log.lastIndex
        {
            transferTarget = preferred
            transferElapsed = 0
            send(to: preferred, .timeoutNow)
        }
    }
}
