// Raft as a state machine you step: no clock (time arrives as `tick`), no sockets (messages leave
// in `Effects`), no randomness but the seeded generator it is given, no threads. It reads and
// appends the log through `RaftLog`; the log's durability comes back through `persisted()`.
//
// Beyond the paper's core: pre-vote; a no-op at the start of each term and commitment only by
// counting current-term entries (Figure 8); pipelined appends (a bounded window per follower,
// a byte budget per message); fast back-off on conflicts; acknowledgements only for entries on
// disk, the leader counting itself only up to its own durable index; check-quorum with leader
// lease (followers that heard from a leader within an election timeout ignore vote requests);
// leadership transfer (catch up, then TimeoutNow) and an optional preferred leader.
//
// Invariants: commitIndex <= log.lastIndex; a follower acknowledges index i only when its log
// matches the current leader's through i and i <= log.durableIndex.

public struct RaftConfig: Sendable {
    public var id: NodeID
    /// Every voting member, this node included.
    public var members: [NodeID]
    public var electionTimeoutTicks = 10
    /// The randomized timeout is drawn from [timeout, timeout + jitter). Smaller jitter means
    /// more split votes (the simulator draws it to make elections collide).
    public var electionJitterTicks = 10
    public var heartbeatIntervalTicks = 2
    /// Appends in flight per follower in the replicate state.
    public var maxInflightAppends = 32
    /// Entry bytes per append message (at least one entry is sent).
    public var maxAppendBytes = 1 << 20
    public var preVote = true
    public var checkQuorum = true
    /// When set, a leader hands leadership to this member once it is caught up.
    public var preferredLeader: NodeID?
    /// Deliberate bugs for the simulator. Never set outside tests.
    public var plantedBugs: PlantedBugs = []

    public init(id: NodeID, members: [NodeID]) {
        precondition(members.contains(id), "a node must be one of the members")
        self.id = id
        self.members = members.sorted()
    }
}

/// The outcome of a proposal.
public enum ProposeResult: Equatable, Sendable {
    case accepted(firstIndex: UInt64, lastIndex: UInt64)
    /// Not the leader; `leader` is the one this node knows of, in `term`.
    case notLeader(leader: NodeID?, term: UInt64)
    /// Leadership is being handed over; retry at the new leader.
    case transferring
}

struct Progress {
    var match: UInt64 = 0
    var next: UInt64
    /// Probe: one append at a time until one succeeds. Replicate: up to the window in flight.
    var probing = true
    var probeSent = false
    /// Last index of each append in flight (replicate state), oldest first.
    var inflight: [UInt64] = []
    /// Heard from since the last check-quorum.
    var recentActive = false
    /// Highest leader tick this follower echoed in a heartbeat response.
    var echoedTick: UInt64 = 0
    /// Leader tick of the last acknowledgement that moved `match`.
    var progressTick: UInt64 = 0
}

public final class Raft {
    public private(set) var config: RaftConfig
    public let id: NodeID
    let log: any RaftLog
    let peers: [NodeID]
    let quorum: Int
    var bugs: PlantedBugs { config.plantedBugs }

    public private(set) var term: UInt64
    public private(set) var vote: NodeID?
    public private(set) var role: Role = .follower
    public private(set) var leader: NodeID?
    /// Invariant: commitIndex <= log.lastIndex.
    public private(set) var commitIndex: UInt64
    public private(set) var appliedIndex: UInt64

    var rng: SplitMix64
    var ticks: UInt64 = 0
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var votes: [NodeID: Bool] = [:]
    var progress: [NodeID: Progress] = [:]
    /// Follower: the log matches the current leader's through here (reset with the term).
    var verifiedIndex: UInt64 = 0
    /// Follower: an acknowledgement waits for the log to become durable.
    var ackOwed = false
    var transferTarget: NodeID?
    var transferElapsed = 0
    /// Leader: index of this term's no-op. Reads are served only once it is committed.
    var termStartIndex: UInt64 = 0
    /// Rejoining after a lost disk: no votes, no campaigns, until `rejoinFloor` is known (the
    /// highest term heard from every peer) and the log has caught up with a leader of a term at
    /// least that high.
    public private(set) var rejoining: Bool
    var heardTerms: [NodeID: UInt64] = [:]
    var rejoinFloor: UInt64?
    /// The highest commit index the current leader has told a rejoining node.
    var leaderCommitSeen: UInt64 = 0
    var out = Effects()
    var reportedCommit: UInt64

    /// Starts as a follower from persisted state. `appliedIndex`: what the state machine applied
    /// before the restart (entries up to it are committed).
    /// Entry bytes per append message from now on (the simulator ends its one-entry-per-append
    /// fault with this when its faults stop).
    public func setMaxAppendBytes(_ bytes: Int) { config.maxAppendBytes = max(1, bytes) }

    public init(config: RaftConfig, log: any RaftLog, hardState: HardState, appliedIndex: UInt64 = 0, seed: UInt64) {
        self.config = config
        self.id = config.id
        self.log = log
        self.peers = config.members.filter { $0 != config.id }
        self.quorum = config.members.count / 2 + 1
        self.term = hardState.term
        self.vote = hardState.vote
        self.rejoining = hardState.rejoining
        self.commitIndex = min(appliedIndex, log.lastIndex)
        self.appliedIndex = appliedIndex
        self.reportedCommit = self.commitIndex
        self.rng = SplitMix64(seed: seed)
        resetElectionTimer()
    }

    public var hardState: HardState { HardState(term: term, vote: vote, rejoining: rejoining) }

    // MARK: Inputs

    /// Advances time by `count` ticks at once. A driver that was paused (SIGSTOP, a stall)
    /// delivers every tick that fell due in one call, before any message that queued meanwhile:
    /// a leader then sees its lease gone and a quorum check missed, as if it had ticked through
    /// the pause one tick at a time (docs/raft.md, "Time").
    public func tick(_ count: Int = 1) throws(LogFailure) -> Effects {
        precondition(count >= 1, "tick count \(count) must be positive")
        ticks += UInt64(count)
        switch role {
        case .follower, .preCandidate, .candidate:
            let before = electionElapsed
            electionElapsed += count
            let heartbeatDue = crossed(before, electionElapsed, every: config.heartbeatIntervalTicks)
            if rejoining && rejoinFloor == nil && heartbeatDue {
                for peer in peers where heardTerms[peer] == nil { send(to: peer, .termQuery) }
            }
            if electionElapsed >= randomizedElectionTimeout {
                if rejoining {
                    resetElectionTimer()  // a node without its old disk does not campaign
                } else {
                    try campaign(transfer: false)
                }
            } else if role != .follower && heartbeatDue {
                try resendVoteRequests()
            }
        case .leader:
            try tickLeader(count)
        }
        return finish()
    }

    /// True when a multiple of `every` lies in (before, after]: the step crossed an interval's end.
    private func crossed(_ before: Int, _ after: Int, every: Int) -> Bool {
        let step = max(1, every)
        return after / step > before / step
    }

    /// Handles a message from a peer.
    public func step(_ m: Message) throws(LogFailure) -> Effects {
        precondition(m.to == id, "message for \(m.to) stepped into \(id)")
        try handle(m)
        return finish()
    }

    /// Appends entries with the given types and bodies, if this node leads.
    public func propose(_ entries: [(type: UInt8, body: [UInt8])]) throws(LogFailure) -> (ProposeResult, Effects) {
        guard role == .leader else { return (.notLeader(leader: leader, term: term), finish()) }
        guard transferTarget == nil else { return (.transferring, finish()) }
        let first = log.lastIndex + 1
        var index = first
        let made = entries.map { e -> Entry in
            defer { index += 1 }
            return Entry(index: index, term: term, type: e.type, body: e.body)
        }
        try appendToLog(made)
        try broadcastAppend()
        try maybeCommit()
        return (.accepted(firstIndex: first, lastIndex: index - 1), finish())
    }

    /// The log's durable index may have moved: acknowledge what is now on disk.
    public func persisted() throws(LogFailure) -> Effects {
        if role == .leader {
            try maybeCommit()
        } else if ackOwed, let leader {
            sendAck(to: leader)
        }
        if rejoining { maybeFinishRejoin() }
        return finish()
    }

    /// The state machine applied entries up to `index`.
    public func applied(_ index: UInt64) {
        precondition(index <= max(commitIndex, reportedCommit), "applied \(index) beyond the commit index \(commitIndex)")
        appliedIndex = max(appliedIndex, index)
    }

    /// Hands leadership to `target`: replicate until it is caught up, then tell it to campaign.
    /// Proposals are refused meanwhile; the transfer is abandoned after an election timeout.
    public func transferLeadership(to target: NodeID) throws(LogFailure) -> Effects {
        guard role == .leader, target != id, progress[target] != nil else { return finish() }
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
        var fresh = 1
        for peer in peers where progress[peer]!.echoedTick >= horizon && progress[peer]!.echoedTick > 0 { fresh += 1 }
        return fresh >= quorum
    }

    // MARK: Roles

    private func resetElectionTimer() {
        electionElapsed = 0
        randomizedElectionTimeout = config.electionTimeoutTicks + Int(rng.next() % UInt64(max(1, config.electionJitterTicks)))
    }

    private func setTerm(_ newTerm: UInt64) {
        precondition(newTerm >= term, "term going back from \(term) to \(newTerm)")
        if newTerm > term {
            term = newTerm
            vote = nil
            verifiedIndex = 0
            ackOwed = false
            out.hardState = hardState
        }
    }

    private func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
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

    private func campaign(transfer: Bool) throws(LogFailure) {
        if config.preVote && !transfer {
            role = .preCandidate
            out.role = .preCandidate
            leader = nil
            votes = [id: true]
            resetElectionTimer()
            if votes.count >= quorum { return try becomeCandidate(transfer: false) }
            let (lastIndex, lastTerm) = try lastEntry()
            for peer in peers { send(to: peer, term: term + 1, .preVote(lastIndex: lastIndex, lastTerm: lastTerm)) }
        } else {
            try becomeCandidate(transfer: transfer)
        }
    }

    private func becomeCandidate(transfer: Bool) throws(LogFailure) {
        setTerm(term + 1)
        vote = id
        out.hardState = hardState
        role = .candidate
        out.role = .candidate
        leader = nil
        votes = [id: true]
        resetElectionTimer()
        if votes.count >= quorum { return try becomeLeader() }
        let (lastIndex, lastTerm) = try lastEntry()
        for peer in peers { send(to: peer, .vote(lastIndex: lastIndex, lastTerm: lastTerm, transfer: transfer)) }
    }

    /// A (pre-)candidate asks again the members that have not answered: requests get lost, and
    /// the paper's RPCs are retried. Same term, so a member that already voted answers the same.
    private func resendVoteRequests() throws(LogFailure) {
        let (lastIndex, lastTerm) = try lastEntry()
        for peer in peers where votes[peer] == nil {
            if role == .preCandidate {
                send(to: peer, term: term + 1, .preVote(lastIndex: lastIndex, lastTerm: lastTerm))
            } else {
                send(to: peer, .vote(lastIndex: lastIndex, lastTerm: lastTerm, transfer: false))
            }
        }
    }

    private func becomeLeader() throws(LogFailure) {
        role = .leader
        out.role = .leader
        leader = id
        transferTarget = nil
        heartbeatElapsed = 0
        electionElapsed = 0
        progress = [:]
        for peer in peers { progress[peer] = Progress(next: log.lastIndex + 1) }
        termStartIndex = log.lastIndex + 1
        try appendToLog([Entry(index: termStartIndex, term: term, type: RaftEntryType.noop, body: [])])
        try broadcastAppend()
        try maybeCommit()
    }

    /// Term of entry `index`, 0 for index 0 (before the log), nil when the log lacks it.
    private func termAt(_ index: UInt64) throws(LogFailure) -> UInt64? {
        index == 0 ? 0 : try log.term(at: index)
    }

    private func lastEntry() throws(LogFailure) -> (UInt64, UInt64) {
        let last = log.lastIndex
        return (last, try termAt(last) ?? 0)
    }

    // MARK: Messages

    private func handle(_ m: Message) throws(LogFailure) {
        if rejoining { noteTermHeard(m) }
        // Votes: a member that heard from a leader within the election timeout ignores them
        // (unless the leader itself asked for the election by TimeoutNow), so a partitioned
        // node coming back cannot depose a working leader.
        switch m.kind {
        case .preVote, .vote:
            var isTransfer = false
            if case .vote(_, _, let t) = m.kind { isTransfer = t }
            let inLease = config.checkQuorum && !bugs.contains(.noCheckQuorum) && leader != nil && electionElapsed < config.electionTimeoutTicks
            if m.term > term && inLease && !isTransfer { return }
        default:
            break
        }

        if m.term > term {
            switch m.kind {
            case .preVote, .termQuery:
                break  // a pre-vote or a term query changes nothing here
            case .preVoteResponse(let granted) where granted:
                break  // carries the term the sender would vote in
            case .append, .heartbeat, .timeoutNow:
                becomeFollower(term: m.term, leader: m.from)
            default:
                becomeFollower(term: m.term, leader: nil)
            }
        } else if m.term < term {
            switch m.kind {
            case .append, .heartbeat:
                // A deposed leader: tell it the current term so it steps down.
                send(to: m.from, .heartbeatResponse(context: 0))
            case .preVote:
                send(to: m.from, .preVoteResponse(granted: false))
            case .termQuery:
                send(to: m.from, .termQueryResponse)
            default:
                break  // stale: drop
            }
            return
        }

        switch m.kind {
        case .preVote(let lastIndex, let lastTerm):
            let upToDate = try isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
            let granted = m.term > term && upToDate && !rejoining
            send(to: m.from, term: granted ? m.term : term, .preVoteResponse(granted: granted))
        case .vote(let lastIndex, let lastTerm, _):
            let canVote = (vote == nil || vote == m.from) && !rejoining
            let upToDate = try isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
            let granted = canVote && upToDate
            if granted {
                vote = m.from
                out.hardState = hardState
                resetElectionTimer()
            }
            send(to: m.from, .voteResponse(granted: granted))
        case .preVoteResponse(let granted):
            guard role == .preCandidate, m.term == term + 1 || !granted else { return }
            votes[m.from] = granted
            if votes.values.filter({ $0 }).count >= quorum {
                try becomeCandidate(transfer: false)
            } else if votes.values.filter({ !$0 }).count >= quorum {
                becomeFollower(term: term, leader: nil)
            }
        case .voteResponse(let granted):
            guard role == .candidate else { return }
            votes[m.from] = granted
            if votes.values.filter({ $0 }).count >= quorum {
                try becomeLeader()
            } else if votes.values.filter({ !$0 }).count >= quorum {
                becomeFollower(term: term, leader: nil)
            }
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            if role != .follower || leader != m.from { becomeFollower(term: term, leader: m.from) }
            electionElapsed = 0
            try handleAppend(from: m.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .heartbeat(let commit, let context):
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
        case .termQuery:
            send(to: m.from, .termQueryResponse)
        case .termQueryResponse:
            break  // noted on arrival (noteTermHeard)
        case .timeoutNow:
            guard role == .follower, leader == m.from else { return }
            try campaign(transfer: true)
        case .appendResponse(let success, let index, let hintIndex, let hintTerm):
            guard role == .leader, var pr = progress[m.from] else { return }
            pr.recentActive = true
            if success {
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
        case .heartbeatResponse(let context):
            guard role == .leader, var pr = progress[m.from] else { return }
            pr.recentActive = true
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
    }

    private func isUpToDate(lastIndex: UInt64, lastTerm: UInt64) throws(LogFailure) -> Bool {
        if bugs.contains(.voteWithoutLogCheck) { return true }
        let (myIndex, myTerm) = try lastEntry()
        return lastTerm > myTerm || (lastTerm == myTerm && lastIndex >= myIndex)
    }

    private func handleAppend(from leader: NodeID, prevIndex: UInt64, prevTerm: UInt64, entries: [Entry], commit: UInt64) throws(LogFailure) {
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
                    try log.truncate(after: e.index - 1)
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

    /// A rejoining node records the highest term each peer has shown. Every message carries at
    /// least its sender's current term, and a candidate persisted its term before asking for
    /// votes, so once every peer has been heard from, the maximum bounds every term this node
    /// could have voted in before it lost its disk.
    private func noteTermHeard(_ m: Message) {
        heardTerms[m.from] = max(heardTerms[m.from] ?? 0, m.term)
        if rejoinFloor == nil && peers.allSatisfy({ heardTerms[$0] != nil }) {
            rejoinFloor = peers.map { heardTerms[$0]! }.max()
        }
    }

    /// Ends the abstention once the log holds everything a leader of a term at or above the
    /// floor had committed: from then on this node's vote cannot help elect a leader that lacks
    /// a committed entry. The current term counts as voted in (its old self may have voted in
    /// it), so the first new vote is in a later term, above the floor.
    ///
    /// The leader's commit index counts only once it covers an entry of the leader's own term:
    /// a new leader does not know how far earlier terms committed until its no-op commits
    /// (found by the simulator: a member rejoined against such a leader, missing committed
    /// entries, and then helped elect a leader without them).
    private func maybeFinishRejoin() {
        guard role == .follower, leader != nil, let floor = rejoinFloor, term >= floor,
              leaderCommitSeen > 0, verifiedIndex >= leaderCommitSeen, log.durableIndex >= leaderCommitSeen,
              (try? termAt(leaderCommitSeen)) == term else { return }
        rejoining = false
        if vote == nil { vote = id }
        out.hardState = hardState
    }

    /// Acknowledges what matches the leader and is durable; owes the rest until `persisted()`.
    private func sendAck(to leader: NodeID) {
        let durable = bugs.contains(.ackBeforeFsync) ? log.lastIndex : log.durableIndex
        let acked = min(verifiedIndex, durable)
        ackOwed = acked < verifiedIndex
        send(to: leader, .appendResponse(success: true, index: acked, hintIndex: 0, hintTerm: 0))
    }

    /// First index in the log whose term is `t`, searching back from `index` (terms never
    /// decrease along the log, so a binary search).
    private func firstIndex(ofTerm t: UInt64, atOrBefore index: UInt64) throws(LogFailure) -> UInt64 {
        var lo = max(log.firstIndex, commitIndex + 1), hi = index
        if lo > hi { return hi }
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if (try termAt(mid) ?? 0) < t { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Last index at or before `index` whose term is `t`, nil when the leader has no such entry.
    private func lastIndex(ofTerm t: UInt64, atOrBefore index: UInt64) throws(LogFailure) -> UInt64? {
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

    // MARK: Leader

    private func tickLeader(_ count: Int) throws(LogFailure) {
        heartbeatElapsed += count
        electionElapsed += count
        if heartbeatElapsed >= config.heartbeatIntervalTicks {
            heartbeatElapsed = 0
            for peer in peers {
                send(to: peer, .heartbeat(commit: min(progress[peer]!.match, commitIndex), context: ticks))
            }
        }
        if electionElapsed >= config.electionTimeoutTicks {
            // Check-quorum once per election timeout. A catch-up step that spans more than one
            // timeout covers a whole window in which nobody could have been heard from (inputs
            // wait behind this step), so the check then fails whatever `recentActive` says.
            let windows = electionElapsed / config.electionTimeoutTicks
            electionElapsed = 0
            if config.checkQuorum && !bugs.contains(.noCheckQuorum) {
                let active = windows > 1 ? 1 : 1 + peers.filter { progress[$0]!.recentActive }.count
                if active < quorum {
                    becomeFollower(term: term, leader: nil)
                    return
                }
            }
            for peer in peers { progress[peer]!.recentActive = false }
        }
        if transferTarget != nil {
            transferElapsed += count
            if transferElapsed >= config.electionTimeoutTicks { transferTarget = nil }
        } else if let preferred = config.preferredLeader, preferred != id, let pr = progress[preferred],
                  pr.recentActive, pr.match == log.lastIndex {
            transferTarget = preferred
            transferElapsed = 0
            send(to: preferred, .timeoutNow)
        }
    }

    private func broadcastAppend() throws(LogFailure) {
        for peer in peers { try sendAppend(to: peer) }
    }

    /// Probe state: one append (possibly empty) until it is answered. Replicate state: appends
    /// until the window is full or the follower has everything.
    private func sendAppend(to peer: NodeID) throws(LogFailure) {
        guard var pr = progress[peer] else { return }
        defer { progress[peer] = pr }
        while true {
            if pr.probing && pr.probeSent { return }
            if !pr.probing && pr.inflight.count >= config.maxInflightAppends { return }
            let prevIndex = pr.next - 1
            guard let prevTerm = try termAt(prevIndex) else { return }  // compacted: needs a snapshot (not built yet)
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

    private func maybeCommit() throws(LogFailure) {
        guard role == .leader else { return }
        let own = bugs.contains(.ackBeforeFsync) ? log.lastIndex : log.durableIndex
        var matches = peers.map { progress[$0]!.match }
        matches.append(own)
        matches.sort(by: >)
        let candidate = matches[quorum - 1]
        guard candidate > commitIndex else { return }
        if !bugs.contains(.commitEarlierTerm) {
            guard try termAt(candidate) == term else { return }
        }
        advanceCommit(to: candidate)
    }

    private func advanceCommit(to index: UInt64) {
        if index > commitIndex { commitIndex = min(index, log.lastIndex) }
    }

    // MARK: Output

    private func appendToLog(_ entries: [Entry]) throws(LogFailure) {
        try log.append(entries)
    }

    private func send(to peer: NodeID, term: UInt64? = nil, _ kind: Message.Kind) {
        out.messages.append(Message(from: id, to: peer, term: term ?? self.term, kind: kind))
    }

    private func finish() -> Effects {
        var target = commitIndex
        if bugs.contains(.applyUncommitted) { target = max(target, log.lastIndex) }
        if target > reportedCommit {
            reportedCommit = target
            out.commitIndex = target
        }
        let done = out
        out = Effects()
        return done
    }
}
