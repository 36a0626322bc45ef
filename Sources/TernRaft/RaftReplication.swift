// Replication: a follower's handling of appends and heartbeats and its acknowledgements; the
// leader's appends (probe and pipelined), its handling of their answers, and commitment; and
// the log lookups both sides use.

extension Raft {
    func handleAppend(from leader: NodeID, prevIndex: UInt64, prevTerm: UInt64, entries: [Entry], commit: UInt64) throws(LogFailure) {
        if prevIndex < commitIndex {
            // Everything up to the commit index matches already; skip what is below it.
            let skip = Int(min(UInt64(entries.count), commitIndex - prevIndex))
            if skip == entries.count {
                verifiedIndex = max(verifiedIndex, commitIndex)
                sendAck(to: leader)
                return
            }
            let rest = Array(entries[skip...])
            return try handleAppend(from: leader, prevIndex: rest[0].index - 1, prevTerm: try termAt(rest[0].index - 1) ?? 0, entries: rest, commit: commit)
        }
        guard let myPrevTerm = try termAt(prevIndex) else {
            send(to: leader, .appendResponse(success: false, index: prevIndex, hintIndex: log.lastIndex + 1, hintTerm: 0))
            return
        }
        guard myPrevTerm == prevTerm else {
            let first = try firstIndex(ofTerm: myPrevTerm, atOrBefore: prevIndex)
            send(to: leader, .appendResponse(success: false, index: prevIndex, hintIndex: first, hintTerm: myPrevTerm))
            return
        }
        // Find where the entries stop matching the log; truncate there, append the rest.
        var start = entries.count
        for (k, e) in entries.enumerated() {
            if e.index > log.lastIndex { start = k; break }
            if try termAt(e.index) != e.term {
                precondition(e.index > commitIndex, "conflict at \(e.index) at or below the commit index \(commitIndex)")
                if bugs.contains(.skipTruncation) {
                    start = entries.firstIndex { $0.index > log.lastIndex } ?? entries.count
                } else {
                    try truncateLog(after: e.index - 1)
                    start = k
                }
                break
            }
        }
        if start < entries.count { try appendToLog(Array(entries[start...])) }
        verifiedIndex = max(verifiedIndex, prevIndex + UInt64(entries.count))
        advanceCommit(to: min(commit, verifiedIndex))
        sendAck(to: leader)
        if rejoining {
            leaderCommitSeen = max(leaderCommitSeen, commit)
            maybeFinishRejoin()
        }
    }

    func handleHeartbeat(_ m: Message, commit: UInt64, context: UInt64) {
        if role != .follower || leader != m.from { becomeFollower(term: term, leader: m.from) }
        electionElapsed = 0
        if !rejoining && !bugs.contains(.heartbeatCommitCapped) {
            // The heartbeat's commit is at most this follower's match index as the leader
            // knows it: entries the follower acknowledged in this term, which were durable
            // and matched the leader's log when acknowledged. Only this term's leader
            // changes the log within the term and never below a match, so they still match,
            // also after a restart (the disk keeps what was durable). Capping this at
            // `verifiedIndex` (0 after a restart until an append arrives) left a follower
            // restarted on an idle group at commit 0 with its whole log on disk, serving
            // reads from an empty broker until the next write. A member rejoining after a
            // lost disk keeps the cap: its old acknowledgements are gone.
            verifiedIndex = max(verifiedIndex, min(commit, log.lastIndex))
        }
        advanceCommit(to: min(commit, verifiedIndex))
        send(to: m.from, .heartbeatResponse(context: context))
        if rejoining {
            leaderCommitSeen = max(leaderCommitSeen, commit)
            if verifiedIndex < commit {
                // The leader may still think this member holds what it held before the
                // disk was lost: say where its log ends now.
                send(to: m.from, .appendResponse(success: false, index: commit, hintIndex: log.lastIndex + 1, hintTerm: Message.lostLogHintTerm))
            }
            maybeFinishRejoin()
        }
    }

    /// Acknowledges what matches the leader and is durable; owes the rest until `persisted()`.
    func sendAck(to leader: NodeID) {
        let durable = bugs.contains(.ackBeforeFsync) ? log.lastIndex : log.durableIndex
        let acked = min(verifiedIndex, durable)
        ackOwed = acked < verifiedIndex
        send(to: leader, .appendResponse(success: true, index: acked, hintIndex: 0, hintTerm: 0))
    }

    func handleAppendResponse(_ m: Message, success: Bool, index: UInt64, hintIndex: UInt64, hintTerm: UInt64) throws(LogFailure) {
        guard role == .leader, var pr = progress[m.from] else { return }
        pr.recentActive = true
        pr.heardTick = ticks
        if success {
            if pr.installing && index > pr.match {
                pr.installing = false  // installed: appends continue after its new base
            }
            if index > pr.match {
                pr.match = index
                pr.next = max(pr.next, index + 1)
                pr.progressTick = ticks
                pr.probing = false
                pr.probeSent = false
            } else if pr.probing {
                // A stale acknowledgement (an earlier append's, or one whose entries are not
                // durable yet) says nothing about the probe in flight: wait for its answer.
                // Leaving the probe here sent a full window per stale ack, and a follower
                // catching up from an empty disk answered those with more stale acks: a
                // message storm (simulator seed 59).
                progress[m.from] = pr
                return
            }
            pr.inflight.removeAll { $0 <= index }
            progress[m.from] = pr
            try maybeCommit()
            if m.from == transferTarget && pr.match == log.lastIndex { send(to: m.from, .timeoutNow) }
        } else {
            if pr.installing {
                progress[m.from] = pr
                return  // an append's rejection from before the install: the install decides
            }
            if hintTerm == Message.lostLogHintTerm && hintIndex <= pr.match {
                // The follower's log ends before what it once acknowledged: it lost its disk
                // and is rejoining (it says so explicitly: an ordinary rejection of a reordered
                // append looks the same, and taking those for lost disks restarted the probe
                // on each, a message storm; simulator seed 1085). Start over from its end.
                pr.match = hintIndex - 1
                pr.next = hintIndex
                pr.probing = true
                pr.probeSent = false
                pr.inflight.removeAll()
                progress[m.from] = pr
                try sendAppend(to: m.from)
                return
            }
            if hintTerm == Message.lostLogHintTerm && pr.inflight.isEmpty && !(pr.probing && pr.probeSent) {
                // A rejoining member whose log reaches past what it acknowledged, restarted, has
                // verified nothing since: with nothing in flight to it (an idle group) no append
                // would ever verify it, and it stayed at commit 0 (simulator seed 1013, the idle
                // phase). Probe it from its match; the answer verifies its log.
                pr.next = pr.match + 1
                pr.probing = true
                pr.probeSent = false
                progress[m.from] = pr
                try sendAppend(to: m.from)
                return
            }
            guard index > pr.match, index < pr.next else { return }  // stale rejection
            // While probing, only the rejection of the probe in flight counts: the rest of an
            // earlier window (reordered appends the follower could not place yet) would
            // restart the probe once each (simulator seed 1085).
            if pr.probing && pr.probeSent && index != pr.next - 1 { return }
            var next = hintIndex
            if hintTerm > 0 && hintTerm != Message.lostLogHintTerm, let last = try lastIndex(ofTerm: hintTerm, atOrBefore: index) { next = last + 1 }
            pr.next = max(pr.match + 1, min(next, index))
            pr.probing = true
            pr.probeSent = false
            pr.inflight.removeAll()
            progress[m.from] = pr
        }
        try sendAppend(to: m.from)
    }

    func handleHeartbeatResponse(_ m: Message, context: UInt64) throws(LogFailure) {
        guard role == .leader, var pr = progress[m.from] else { return }
        pr.recentActive = true
        pr.heardTick = ticks
        pr.echoedTick = max(pr.echoedTick, context)
        if pr.match < log.lastIndex && (pr.probing || ticks - pr.progressTick >= UInt64(2 * config.heartbeatIntervalTicks)) {
            // Behind and not moving: appends were lost (nothing tells us otherwise).
            // Probe again from what it has acknowledged.
            pr.probing = true
            pr.probeSent = false
            pr.inflight.removeAll()
            pr.next = pr.match + 1
        }
        progress[m.from] = pr
        if pr.match < log.lastIndex { try sendAppend(to: m.from) }
    }

    func broadcastAppend() throws(LogFailure) {
        for peer in peers { try sendAppend(to: peer) }
    }

    /// Probe state: one append (possibly empty) until it is answered. Replicate state: appends
    /// until the window is full or the follower has everything.
    func sendAppend(to peer: NodeID) throws(LogFailure) {
        guard var pr = progress[peer] else { return }
        defer { progress[peer] = pr }
        while true {
            if pr.probing && pr.probeSent { return }
            if !pr.probing && pr.inflight.count >= config.maxInflightAppends { return }
            if pr.installing { return }
            let prevIndex = pr.next - 1
            guard pr.next >= log.firstIndex, let prevTerm = try termAt(prevIndex) else {
                // The entries this follower needs were compacted away: it gets a snapshot.
                startInstall(&pr, peer)
                return
            }
            let entries = pr.next <= log.lastIndex ? try log.read(from: pr.next, maxBytes: config.maxAppendBytes) : []
            if !pr.probing && entries.isEmpty { return }
            send(to: peer, .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commitIndex))
            if pr.probing {
                pr.probeSent = true
                return
            }
            pr.inflight.append(entries.last!.index)
            pr.next = entries.last!.index + 1
        }
    }

    func maybeCommit() throws(LogFailure) {
        guard role == .leader else { return }
        let own = bugs.contains(.ackBeforeFsync) ? log.lastIndex : log.durableIndex
        // Only voters of the active configuration count; a leader being removed counts itself no more.
        var matches = counted.map { progress[$0]!.match }
        if isVoter { matches.append(own) }
        guard matches.count >= quorum else { return }
        matches.sort(by: >)
        let candidate = matches[quorum - 1]
        guard candidate > commitIndex else { return }
        if !bugs.contains(.commitEarlierTerm) {
            guard try termAt(candidate) == term else { return }
        }
        advanceCommit(to: candidate)
    }

    func advanceCommit(to index: UInt64) {
        if index > commitIndex { commitIndex = min(index, log.lastIndex) }
    }

    /// Term of entry `index`, 0 for index 0 (before the log), nil when the log lacks it.
    func termAt(_ index: UInt64) throws(LogFailure) -> UInt64? {
        index == 0 ? 0 : try log.term(at: index)
    }

    func lastEntry() throws(LogFailure) -> (UInt64, UInt64) {
        let last = log.lastIndex
        return (last, try termAt(last) ?? 0)
    }

    /// First index in the log whose term is `t`, searching back from `index` (terms never
    /// decrease along the log, so a binary search).
    func firstIndex(ofTerm t: UInt64, atOrBefore index: UInt64) throws(LogFailure) -> UInt64 {
        var lo = max(log.firstIndex, commitIndex + 1), hi = index
        if lo > hi { return hi }
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if (try termAt(mid) ?? 0) < t { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Last index at or before `index` whose term is `t`, nil when the leader has no such entry.
    func lastIndex(ofTerm t: UInt64, atOrBefore index: UInt64) throws(LogFailure) -> UInt64? {
        var lo = log.firstIndex, hi = min(index, log.lastIndex)
        guard lo <= hi else { return nil }
        // Largest i in [lo, hi] with term(i) <= t.
        if (try termAt(lo) ?? 0) > t { return nil }
        while lo < hi {
            let mid = lo + (hi - lo + 1) / 2
            if (try termAt(mid) ?? 0) <= t { lo = mid } else { hi = mid - 1 }
        }
        return (try termAt(lo)) == t ? lo : nil
    }
}
