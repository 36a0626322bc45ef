// Roles and elections: terms, becoming follower, (pre-)candidate or leader, campaigns with
// pre-vote, and the handling of vote and pre-vote requests and responses.

extension Raft {
    func resetElectionTimer() {
        electionElapsed = 0
        randomizedElectionTimeout = config.electionTimeoutTicks + Int(rng.next() % UInt64(max(1, config.electionJitterTicks)))
    }

    func setTerm(_ newTerm: UInt64) {
        precondition(newTerm >= term, "term going back from \(term) to \(newTerm)")
        if newTerm > term {
            term = newTerm
            vote = nil
            verifiedIndex = 0
            ackOwed = false
            out.hardState = hardState
        }
    }

    func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
        setTerm(newTerm)
        if role != .follower { out.role = .follower }
        if newLeader != leader { verifiedIndex = 0; ackOwed = false; leaderCommitSeen = 0 }
        role = .follower
        leader = newLeader
        progress = [:]
        votes = [:]
        transferTarget = nil
        resetElectionTimer()
    }

    func campaign(transfer: Bool) throws(LogFailure) {
        if config.preVote && !transfer {
            role = .preCandidate
            out.role = .preCandidate
            leader = nil
            votes = [id: true]
            resetElectionTimer()
            if grantedVotes >= quorum { return try becomeCandidate(transfer: false) }
            let (lastIndex, lastTerm) = try lastEntry()
            for peer in counted { send(to: peer, term: term + 1, .preVote(lastIndex: lastIndex, lastTerm: lastTerm)) }
        } else {
            try becomeCandidate(transfer: transfer)
        }
    }

    func becomeCandidate(transfer: Bool) throws(LogFailure) {
        setTerm(term + 1)
        vote = id
        out.hardState = hardState
        role = .candidate
        out.role = .candidate
        electionsStarted += 1
        leader = nil
        votes = [id: true]
        resetElectionTimer()
        if grantedVotes >= quorum { return try becomeLeader() }
        let (lastIndex, lastTerm) = try lastEntry()
        for peer in counted { send(to: peer, .vote(lastIndex: lastIndex, lastTerm: lastTerm, transfer: transfer)) }
    }

    /// A (pre-)candidate asks again the members that have not answered: requests get lost, and
    /// the paper's RPCs are retried. Same term, so a member that already voted answers the same.
    func resendVoteRequests() throws(LogFailure) {
        let (lastIndex, lastTerm) = try lastEntry()
        for peer in counted where votes[peer] == nil {
            if role == .preCandidate {
                send(to: peer, term: term + 1, .preVote(lastIndex: lastIndex, lastTerm: lastTerm))
            } else {
                send(to: peer, .vote(lastIndex: lastIndex, lastTerm: lastTerm, transfer: false))
            }
        }
    }

    func becomeLeader() throws(LogFailure) {
        role = .leader
        leadershipsWon += 1
        out.role = .leader
        leader = id
        transferTarget = nil
        heartbeatElapsed = 0
        electionElapsed = 0
        progress = [:]
        for peer in peers { progress[peer] = Progress(next: log.lastIndex + 1) }
        heardIncarnations = [:]
        endMarks = (log.lastIndex, log.lastIndex)
        termStartIndex = log.lastIndex + 1
        // The no-op names its leader (the broker's message trace reads it; Raft ignores it).
        try appendToLog([Entry(index: termStartIndex, term: term, type: RaftEntryType.noop, body: Array(id.name.utf8))])
        try broadcastAppend()
        try maybeCommit()
    }

    func handlePreVote(_ m: Message, lastIndex: UInt64, lastTerm: UInt64) throws(LogFailure) {
        let upToDate = try isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
        var granted = m.term > term && upToDate && !rejoining
        if granted && role == .preCandidate {
            // Two members whose timers ran out together would grant each other, both become
            // candidates in the next term, vote for themselves and split it (one more election
            // timeout lost). A pre-candidate yields only to a longer log or, logs equal, to the
            // lower id. Pre-votes decide nothing about safety; this decides who goes first.
            // `upToDate` holds here: the candidate's log is at least this one; yield unless equal.
            let (myIndex, myTerm) = try lastEntry()
            granted = (lastIndex, lastTerm) != (myIndex, myTerm) || m.from < id
        }
        send(to: m.from, term: granted ? m.term : term, .preVoteResponse(granted: granted))
    }

    func handleVote(_ m: Message, lastIndex: UInt64, lastTerm: UInt64) throws(LogFailure) {
        let canVote = (vote == nil || vote == m.from) && !rejoining
        let upToDate = try isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
        let granted = canVote && upToDate
        if granted {
            vote = m.from
            out.hardState = hardState
            resetElectionTimer()
        }
        send(to: m.from, .voteResponse(granted: granted))
    }

    func handlePreVoteResponse(_ m: Message, granted: Bool) throws(LogFailure) {
        guard role == .preCandidate, m.term == term + 1 || !granted else { return }
        votes[m.from] = granted
        if grantedVotes >= quorum {
            try becomeCandidate(transfer: false)
        } else if refusedVotes >= quorum {
            becomeFollower(term: term, leader: nil)
        }
    }

    func handleVoteResponse(_ m: Message, granted: Bool) throws(LogFailure) {
        guard role == .candidate else { return }
        votes[m.from] = granted
        if grantedVotes >= quorum {
            try becomeLeader()
        } else if refusedVotes >= quorum {
            becomeFollower(term: term, leader: nil)
        }
    }

    /// Votes that count: this node's own (when it votes) and the other voters'.
    var grantedVotes: Int { (isVoter ? 1 : 0) + counted.filter { votes[$0] == true }.count }
    var refusedVotes: Int { counted.filter { votes[$0] == false }.count }

    func isUpToDate(lastIndex: UInt64, lastTerm: UInt64) throws(LogFailure) -> Bool {
        if bugs.contains(.voteWithoutLogCheck) { return true }
        let (myIndex, myTerm) = try lastEntry()
        return lastTerm > myTerm || (lastTerm == myTerm && lastIndex >= myIndex)
    }
}
