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
//
// This file holds the configuration, the state, the inputs and the dispatch of messages; the
// extensions handle elections (RaftElection.swift), replication (RaftReplication.swift), what
// only a leader does (RaftLeader.swift) and rejoining after a lost disk (RaftRejoin.swift).

public struct RaftConfig: Sendable {
    public var id: NodeID
    /// The voters of a new group (`--peers`), and with their endpoints the first configuration
    /// (`founding`). Once a configuration is in the log or a snapshot, that one counts
    /// (RaftMembership.swift). Empty for a node that waits to be added.
    public var members: [NodeID]
    public var founding: Membership
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

    public init(id: NodeID, members: [NodeID], endpoints: [NodeID: String] = [:]) {
        self.id = id
        self.members = members.sorted()
        self.founding = Membership(voters: members, endpoints: endpoints)
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
    /// Leader tick of the last message from this follower.
    var heardTick: UInt64 = 0
    /// Highest leader tick this follower echoed in a heartbeat response.
    var echoedTick: UInt64 = 0
    /// Leader tick of the last acknowledgement that moved `match`.
    var progressTick: UInt64 = 0
    /// The follower needs entries this log no longer has: the node is sending it a snapshot
    /// (RaftSnapshots.swift); no appends until it installed it.
    var installing = false
    /// Leader tick of the last sign of progress of the install.
    var installTick: UInt64 = 0
}

public final class Raft {
    public private(set) var config: RaftConfig
    public let id: NodeID
    let log: any RaftLog
    /// Every other member, voters and learners (replicated to).
    var peers: [NodeID] = []
    /// The other voters: whose answers count in quorums.
    var counted: [NodeID] = []
    /// Votes needed, out of the voters of the active configuration.
    var quorum = 1
    /// This node votes in the active configuration (as its incarnation).
    public internal(set) var isVoter = false
    public let incarnation: UInt64
    /// Configurations in the log, oldest first. The first is committed (or the founding one, at
    /// index 0); the last is in effect: a configuration takes effect when appended.
    var configs: [(index: UInt64, membership: Membership)]
    /// Leader: incarnations heard from members the configuration does not know one of yet.
    var heardIncarnations: [NodeID: UInt64] = [:]
    /// Leader: its last index at the last two check-quorum points (one election timeout apart):
    /// a learner caught up holds at least `latest`.
    var endMarks: (previous: UInt64, latest: UInt64) = (0, 0)
    var bugs: PlantedBugs { config.plantedBugs }

    public internal(set) var term: UInt64
    public internal(set) var vote: NodeID?
    public internal(set) var role: Role = .follower
    public internal(set) var leader: NodeID?
    /// Since this process started: elections this member started (as a candidate, pre-votes not
    /// counted) and won (metrics read them; docs/operations.md).
    public internal(set) var electionsStarted: UInt64 = 0
    public internal(set) var leadershipsWon: UInt64 = 0
    /// Invariant: commitIndex <= log.lastIndex.
    public internal(set) var commitIndex: UInt64
    public internal(set) var appliedIndex: UInt64

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
    public internal(set) var rejoining: Bool
    var heardTerms: [NodeID: UInt64] = [:]
    var rejoinFloor: UInt64?
    /// The highest commit index the current leader has told a rejoining node.
    var leaderCommitSeen: UInt64 = 0
    var out = Effects()
    var reportedCommit: UInt64

    /// Entry bytes per append message from now on (the simulator ends its one-entry-per-append
    /// fault with this when its faults stop).
    public func setMaxAppendBytes(_ bytes: Int) { config.maxAppendBytes = max(1, bytes) }

    /// Starts as a follower from persisted state. `appliedIndex`: what the state machine applied
    /// before the restart (entries up to it are committed).
    public init(config: RaftConfig, log: any RaftLog, hardState: HardState, appliedIndex: UInt64 = 0, seed: UInt64) {
        self.config = config
        self.id = config.id
        self.log = log
        self.incarnation = hardState.incarnation
        self.configs = [(0, config.founding)]
        self.term = hardState.term
        self.vote = hardState.vote
        self.rejoining = hardState.rejoining
        self.commitIndex = min(appliedIndex, log.lastIndex)
        self.appliedIndex = appliedIndex
        self.reportedCommit = self.commitIndex
        self.rng = SplitMix64(seed: seed)
        membershipChanged()
        resetElectionTimer()
    }

    public var hardState: HardState { HardState(term: term, vote: vote, rejoining: rejoining, incarnation: incarnation) }

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
                for peer in counted where heardTerms[peer] == nil { send(to: peer, .termQuery) }
            }
            if electionElapsed >= randomizedElectionTimeout {
                if rejoining || !isVoter {
                    // A node without its old disk, a learner, a removed or not yet added node
                    // does not campaign.
                    resetElectionTimer()
                } else {
                    try campaign(transfer: false)
                }
            } else if role != .follower && heartbeatDue {
                try resendVoteRequests()
            }
        case .leader:
            expireInstalls()
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
        // Handing over: to a transfer's target, or, once this leader's own removal is appended,
        // to the voter that will be caught up when the removal commits (helper review: under
        // load no voter matched the log's end then, and the group waited out an election).
        guard transferTarget == nil, isVoter else { return (.transferring, finish()) }
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

    /// The state machine was restored from a snapshot covering entries up to `index` at least
    /// (committed, in the log or its base), before this replica took any input: as if it had
    /// been started with that applied index.
    public func restoredSnapshot(at index: UInt64) {
        precondition(appliedIndex == 0 && commitIndex == 0, "a snapshot restored after entries were applied")
        precondition(index <= log.lastIndex && index + 1 >= log.firstIndex, "restored at \(index) outside the log \(log.firstIndex)...\(log.lastIndex)")
        commitIndex = index
        appliedIndex = index
        reportedCommit = index
    }

    /// The state machine applied entries up to `index`.
    public func applied(_ index: UInt64) {
        precondition(index <= max(commitIndex, reportedCommit), "applied \(index) beyond the commit index \(commitIndex)")
        appliedIndex = max(appliedIndex, index)
    }

    // MARK: Messages

    private func handle(_ m: Message) throws(LogFailure) {
        guard admit(m) else { return }
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
            case .append, .heartbeat, .timeoutNow, .snapshotChunk:
                becomeFollower(term: m.term, leader: m.from)
            default:
                becomeFollower(term: m.term, leader: nil)
            }
        } else if m.term < term {
            switch m.kind {
            case .append, .heartbeat, .snapshotChunk:
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
            try handlePreVote(m, lastIndex: lastIndex, lastTerm: lastTerm)
        case .vote(let lastIndex, let lastTerm, _):
            try handleVote(m, lastIndex: lastIndex, lastTerm: lastTerm)
        case .preVoteResponse(let granted):
            try handlePreVoteResponse(m, granted: granted)
        case .voteResponse(let granted):
            try handleVoteResponse(m, granted: granted)
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            if role != .follower || leader != m.from { becomeFollower(term: term, leader: m.from) }
            electionElapsed = 0
            try handleAppend(from: m.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .heartbeat(let commit, let context):
            handleHeartbeat(m, commit: commit, context: context)
        case .termQuery:
            send(to: m.from, .termQueryResponse)
        case .termQueryResponse:
            break  // noted on arrival (noteTermHeard)
        case .timeoutNow:
            // Only a voter campaigns (a learner, or a member whose log lacks its promotion, not).
            guard role == .follower, leader == m.from, isVoter, !rejoining else { return }
            try campaign(transfer: true)
        case .appendResponse(let success, let index, let hintIndex, let hintTerm):
            try handleAppendResponse(m, success: success, index: index, hintIndex: hintIndex, hintTerm: hintTerm)
        case .heartbeatResponse(let context):
            try handleHeartbeatResponse(m, context: context)
        case .snapshotChunk(let index, let offset, let total, let data):
            if role != .follower || leader != m.from { becomeFollower(term: term, leader: m.from) }
            electionElapsed = 0
            out.snapshotChunks.append(SnapshotChunk(from: m.from, index: index, offset: offset, total: total, data: data))
        case .snapshotChunkResponse(let index, let nextOffset):
            handleSnapshotChunkResponse(m, index: index, nextOffset: nextOffset)
        }
    }

    // MARK: Output

    func appendToLog(_ entries: [Entry]) throws(LogFailure) {
        try log.append(entries)
        noteConfigurations(in: entries)
    }

    func send(to peer: NodeID, term: UInt64? = nil, _ kind: Message.Kind) {
        out.messages.append(message(to: peer, kind, term: term))
    }

    /// A message from this node in its current term, carrying its incarnation: the one way
    /// messages are made, also by the node for what it sends beside Raft (snapshot chunks), so
    /// none leaves without the sender's incarnation (simulator seed 4: chunks once did).
    public func message(to peer: NodeID, _ kind: Message.Kind, term: UInt64? = nil) -> Message {
        Message(from: id, to: peer, term: term ?? self.term, kind: kind, incarnation: incarnation)
    }

    func finish() -> Effects {
        settleMembership()
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
