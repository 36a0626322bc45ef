// Membership changes, Raft's part: single-server changes with learners (the Raft thesis,
// chapter 4, as etcd does them).
//
// - A configuration is a log entry (`RaftEntryType.membership`) holding the whole member list.
//   It takes effect on each member when appended to its log, committed or not, and is undone
//   when a truncation removes it. Taking effect at append is what makes single-server changes
//   safe: the leader counts the entry's own commitment under the new configuration, and any
//   majority of the old voters shares a member with any majority of the new (they differ by one
//   voter). Applying at commit would leave members deciding under different configurations for
//   as long as commitment takes to reach them.
// - One change at a time: a leader proposes one only when the last configuration in its log is
//   committed, and only once an entry of its own term is committed (otherwise a configuration
//   appended by a deposed leader and never committed could be followed by one that shares no
//   majority with it: the bug reported on raft-dev in 2015).
// - Learners receive the log and count in no quorum: not for commitment, elections,
//   check-quorum or the lease. A learner is promoted only once caught up: it holds what the
//   leader held at the last check-quorum point (at most an election timeout ago) and answered
//   within an election timeout.
// - A leader that removes itself keeps leading (without counting itself) until the removal
//   commits, then hands over to its most caught-up voter (TimeoutNow) and steps down.
// - Nodes outside their configuration, learners and strangers (see below) never campaign.
// - Incarnations: messages carry their sender's; a message from a member whose configuration
//   entry names another incarnation is dropped (a machine that came back with an empty disk is
//   not the voter it was). The leader stamps incarnations it does not know yet (founding
//   members, new learners) from the first messages it hears, with an entry that changes nothing
//   else; a learner is promoted with its incarnation stamped.

extension Raft {
    /// The configuration in effect: the last one in the log.
    public var membership: Membership { configs.last!.membership }
    /// The last committed configuration, and the index of its entry (0: the founding one).
    public var committedMembership: (index: UInt64, membership: Membership) { configs.first! }
    /// Index of the configuration in effect (0: the founding one).
    public var membershipIndex: UInt64 { configs.last!.index }

    /// Drops a message that would count for a member (a vote, an acknowledgement, an answer)
    /// when it comes from another incarnation than the configuration names. A leader's own
    /// messages (appends, heartbeats, snapshot chunks, TimeoutNow) pass: their authority is
    /// their term, and a follower whose configuration is stale must still receive the newer one
    /// (helper review: a member re-added with a new disk and elected was cut off from a follower
    /// that missed the change).
    func admit(_ m: Message) -> Bool {
        switch m.kind {
        case .append, .heartbeat, .snapshotChunk, .timeoutNow: return true
        default: break
        }
        guard let member = membership.member(m.from) else { return true }
        if member.incarnation != 0 {
            return member.incarnation == m.incarnation
        }
        if role == .leader && m.incarnation != 0 { heardIncarnations[m.from] = m.incarnation }
        return true
    }

    /// Recomputes what the configuration in effect decides: peers, voters, the quorum.
    func membershipChanged() {
        let m = membership
        // An incarnation heard is kept only for a member still waiting for its stamp (one
        // removed and added again must be heard anew).
        heardIncarnations = heardIncarnations.filter { m.member($0.key)?.incarnation == 0 }
        peers = m.ids.filter { $0 != id }
        isVoter = m.isVoter(id, incarnation: incarnation)
        counted = bugs.contains(.learnerInQuorum) ? peers : m.voters.filter { $0 != id }
        quorum = m.voters.count / 2 + 1
        if role == .leader {
            for peer in peers where progress[peer] == nil { progress[peer] = Progress(next: log.lastIndex + 1) }
            for gone in progress.keys.filter({ !peers.contains($0) }) { progress[gone] = nil }
            if let t = transferTarget, !counted.contains(t) { transferTarget = nil }
        }
    }

    /// Records the configurations among entries just appended.
    func noteConfigurations(in entries: [Entry]) {
        var changed = false
        for e in entries where e.type == RaftEntryType.membership {
            // A body that does not decode changes nothing, the same on every member. An entry at
            // or below the last configuration known is one an installed snapshot (or a restart)
            // accounted for already: the log is refilled after a snapshot's base with entries
            // whose effect the snapshot holds. Taking it again made an older configuration the
            // one in effect (simulator seed 38, found by the change-rule checker).
            guard let m = Membership.decode(e.body), e.index > configs.last!.index else { continue }
            configs.append((e.index, m))
            changed = true
        }
        if changed { membershipChanged() }
    }

    /// Removes the log's entries after `index`, and the configurations among them.
    func truncateLog(after index: UInt64) throws(LogFailure) {
        try log.truncate(after: index)
        if configs.count > 1 && configs.last!.index > index {
            let base = configs[0].index
            configs.removeAll { $0.index > index && $0.index > base }
            membershipChanged()
        }
    }

    /// After each step: configurations now committed become the base, and a leader whose
    /// removal committed hands over and steps down.
    func settleMembership() {
        while configs.count > 1 && configs[1].index <= commitIndex { configs.removeFirst() }
        guard role == .leader, configs.count == 1, !isVoter, !bugs.contains(.removedLeaderKeepsLeading) else { return }
        // The removal of this leader is committed: the voter with the longest log takes over at
        // once (it holds the removal; TimeoutNow lets it campaign without waiting out a timeout).
        if let next = counted.max(by: { (progress[$0]?.match ?? 0, $1) < (progress[$1]?.match ?? 0, $0) }),
            progress[next]?.match == log.lastIndex
        {
            send(to: next, .timeoutNow)
        }
        becomeFollower(term: term, leader: nil)
    }

    /// May a change be proposed now? Nil when yes.
    func changeBlocked() -> MembershipRefusal? {
        guard role == .leader else { return .notLeader(leader: leader, term: term) }
        if transferTarget != nil { return .invalid("leadership is being transferred; retry at the new leader") }
        if commitIndex < termStartIndex && !bugs.contains(.changeBeforeTermCommit) { return .termNotCommitted }
        if configs.count > 1 && !bugs.contains(.twoChangesPending) { return .changePending(index: configs.last!.index) }
        return nil
    }

    /// The leader's target for a learner to count as caught up, and whether `peer` reached it.
    public func catchUp(of peer: NodeID) -> (match: UInt64, target: UInt64, caughtUp: Bool) {
        guard role == .leader, let pr = progress[peer] else { return (0, 0, false) }
        let target = max(endMarks.latest, 1)
        let heard = ticks - pr.heardTick <= UInt64(config.electionTimeoutTicks) && pr.heardTick > 0
        return (pr.match, target, pr.match >= target && heard)
    }

    /// Leader: ticks since `peer` was last heard from; nil when never (in this term).
    public func heardTicksAgo(_ peer: NodeID) -> UInt64? {
        guard role == .leader, let pr = progress[peer], pr.heardTick > 0 else { return nil }
        return ticks - pr.heardTick
    }

    /// Proposes a membership change (the leader only; see the file's header for the rules).
    /// Returns the index of the configuration entry, answered once it commits.
    public func proposeMembership(_ change: MembershipChange) throws(LogFailure) -> (Result<UInt64, MembershipRefusal>, Effects) {
        if let refusal = changeBlocked() { return (.failure(refusal), finish()) }
        var next = membership
        switch change {
        case .addLearner(let peer, let endpoint):
            if next.member(peer) != nil { return (.failure(.alreadyMember(peer)), finish()) }
            if peer.name.isEmpty || peer.name.utf8.count > 255 || endpoint.isEmpty || endpoint.utf8.count > 255 {
                return (.failure(.invalid("a member needs an id and an endpoint of 1 to 255 bytes")), finish())
            }
            next.upsert(Member(id: peer, endpoint: endpoint, isLearner: true))
        case .promote(let peer):
            guard var m = next.member(peer) else { return (.failure(.unknownMember(peer)), finish()) }
            guard m.isLearner else { return (.failure(.notLearner(peer)), finish()) }
            let c = catchUp(of: peer)
            let heard = m.incarnation != 0 ? m.incarnation : (heardIncarnations[peer] ?? 0)
            guard c.caughtUp, heard != 0 else { return (.failure(.notCaughtUp(peer, match: c.match, target: c.target)), finish()) }
            m.isLearner = false
            m.incarnation = heard
            next.upsert(m)
        case .remove(let peer):
            guard let m = next.member(peer) else { return (.failure(.unknownMember(peer)), finish()) }
            if !m.isLearner && next.voters.count == 1 { return (.failure(.lastVoter(peer)), finish()) }
            next.remove(peer)
        }
        let index = try appendConfiguration(next)
        return (.success(index), finish())
    }

    private func appendConfiguration(_ m: Membership) throws(LogFailure) -> UInt64 {
        let index = log.lastIndex + 1
        try appendToLog([Entry(index: index, term: term, type: RaftEntryType.membership, body: m.encode())])
        try broadcastAppend()
        try maybeCommit()
        return index
    }

    /// Leader, each tick: stamps the incarnations of members the configuration does not know
    /// one of yet, when a change may be proposed (an entry that changes nothing else).
    func maybeStamp() throws(LogFailure) {
        guard changeBlocked() == nil else { return }
        var next = membership
        for var m in next.members where m.incarnation == 0 {
            let heard = m.id == id ? incarnation : heardIncarnations[m.id] ?? 0
            guard heard != 0 else { continue }
            m.incarnation = heard
            next.upsert(m)
        }
        if next != membership { _ = try appendConfiguration(next) }
    }

    /// The node restored its state: these are the configurations at its snapshot (or the
    /// founding one) and in its log after it, oldest first. Before any input.
    public func restoreMembership(_ history: [(index: UInt64, membership: Membership)]) {
        precondition(!history.isEmpty, "a membership history needs its base")
        configs = history
        membershipChanged()
    }
}
