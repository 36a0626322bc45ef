// The idle phase, after the checks: clients fall silent, a follower is restarted, and every
// member must reach the leader's commit index with nothing written.

extension World {
    /// After the checks: clients go silent, a follower is killed and restarted, and with
    /// nothing written every member must reach the leader's commit index within
    /// `idleCatchUpMicros` (a follower restarted on an idle group once stayed at commit 0 until
    /// the next write; planted bug `heartbeat-commit-capped`).
    func idlePhase() {
        idle = true
        // Let what is in flight settle first: the victim must go down holding everything, or
        // the leader's next appends would catch it up whatever the heartbeat says.
        // Delayed releases (due up to two seconds after their send) are the last writes: wait
        // until no member's log has grown for 2.5 virtual seconds (at most 20).
        let calmLimit = now + 20_000_000
        var quietSince = now
        var lastIndexes = nodes.map { $0.replica?.log.lastIndex ?? 0 }
        while checker.violations.isEmpty, let (time, event) = popEvent() {
            now = time
            events += 1
            handle(event)
            let indexes = nodes.map { $0.replica?.log.lastIndex ?? 0 }
            if indexes != lastIndexes {
                lastIndexes = indexes
                quietSince = now
            }
            if now >= quietSince + 2_500_000 || now >= calmLimit { break }
        }
        guard checker.violations.isEmpty else { return }
        let start = now
        guard let leader = nodes.first(where: { $0.node?.isLeader ?? false }) else {
            checker.violations.append("idle phase: no leader after the liveness phase")
            return
        }
        let followers = liveMembers.filter { $0 !== leader && $0.node != nil }
        guard !followers.isEmpty else { return }
        let victim = followers[Int(below(UInt64(followers.count)))]
        trace("idle phase: clients silent; crash and restart \(victim.id)")
        mixDigest(12, now, UInt64(victim.index))
        powerOff(victim)
        let restartAfter = 10_000 + below(300_000)
        schedule(.restart(victim.index), after: restartAfter)
        let deadline = start + restartAfter + World.idleCatchUpMicros
        func caughtUp() -> Bool {
            guard let target = nodes.compactMap({ $0.node }).first(where: { $0.isLeader })?.replica.raft.commitIndex else { return false }
            return liveMembers.allSatisfy { ($0.replica?.raft.commitIndex ?? 0) >= target && $0.appliedIndex >= target }
        }
        while checker.violations.isEmpty, let (time, event) = popEvent() {
            if time > deadline { break }
            now = time
            events += 1
            handle(event)
            if now > start + restartAfter && caughtUp() {
                trace("idle phase: every member at the leader's commit index \(Double(now - start - restartAfter) / 1e6) s after the restart")
                return
            }
        }
        guard checker.violations.isEmpty else { return }
        let states = nodes.map { n in
            guard let r = n.replica?.raft else { return "\(n.id) down" }
            return "\(n.id) \(r.role) commit \(r.commitIndex) applied \(n.appliedIndex) last \(n.replica!.log.lastIndex)"
        }.joined(separator: ", ")
        checker.violations.append(
            "idle liveness: with nothing written, not every member reached the leader's commit index within \(Double(World.idleCatchUpMicros) / 1e6) s of \(victim.id)'s restart (\(states))"
        )
    }
}
