// Values that cross the Raft state machine's boundary: node ids, entries, messages, the hard
// state, the log it reads and appends through (and how that log fails), and the effects each
// step returns. TernRaft depends on no other target: the node adapts the commitlog to `RaftLog`.

/// One log entry as Raft sees it. `type` and `body` are opaque here, except the types Raft
/// writes itself (`RaftEntryType`).
public struct Entry: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var type: UInt8
    public var body: [UInt8]

    public init(index: UInt64, term: UInt64, type: UInt8 = 0, body: [UInt8]) {
        self.index = index
        self.term = term
        self.type = type
        self.body = body
    }
}

/// The log could not be read or written. Raft stops at once and passes it on; the node turns it
/// back into its storage error (`underlying`) and fails stop.
public struct LogFailure: Error, Sendable, CustomStringConvertible {
    public var underlying: any Error & Sendable
    public init(_ underlying: any Error & Sendable) { self.underlying = underlying }
    public var description: String { "\(underlying)" }
}

/// A member of the Raft group. Ordered, so that every iteration over members has one order.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let name: String
    public init(_ name: String) { self.name = name }
    public init(stringLiteral value: String) { name = value }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.name < b.name }
    public var description: String { name }
}

/// What must be on disk before any message of the same step is sent: the current term and the
/// vote cast in it.
public struct HardState: Equatable, Sendable {
    public var term: UInt64
    public var vote: NodeID?
    /// The node lost its disk and has not yet rejoined as a voter (docs/raft.md, "Rejoining
    /// after a lost disk"). Persisted, so a crash meanwhile does not end the abstention.
    public var rejoining: Bool
    /// This replica's incarnation (Membership.swift): drawn when its state file was first
    /// written, never changed after. 0 in tests that do not care.
    public var incarnation: UInt64
    public init(term: UInt64 = 0, vote: NodeID? = nil, rejoining: Bool = false, incarnation: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.rejoining = rejoining
        self.incarnation = incarnation
    }
}

/// Entry types the Raft layer itself writes. Applications use types from 16 up.
public enum RaftEntryType {
    /// Appended by a new leader at the start of its term (the paper's Figure 8 rule: a leader
    /// commits earlier-term entries only by committing one of its own).
    public static let noop: UInt8 = 1
    /// A whole configuration (`Membership.encode`); it takes effect when appended (RaftMembership.swift).
    public static let membership: UInt8 = 2
}

public enum Role: String, Sendable, Equatable {
    case follower, preCandidate, candidate, leader
}

/// A message between two members. `term` is the sender's term, except for pre-vote requests and
/// their grants, which carry the term the sender would campaign in.
public struct Message: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        case preVote(lastIndex: UInt64, lastTerm: UInt64)
        case preVoteResponse(granted: Bool)
        case vote(lastIndex: UInt64, lastTerm: UInt64, transfer: Bool)
        case voteResponse(granted: Bool)
        /// Entries after `prevIndex`; `commit` is the leader's commit index.
        case append(prevIndex: UInt64, prevTerm: UInt64, entries: [Entry], commit: UInt64)
        /// success: the follower's log matches the leader's through `index` and has it on disk.
        /// failure: `index` is the rejected `prevIndex`; the hint is where the follower's log
        /// diverges: the first index of its conflicting term `hintTerm`, or, with `hintTerm` 0,
        /// the index after its last entry (its log is shorter).
        case appendResponse(success: Bool, index: UInt64, hintIndex: UInt64, hintTerm: UInt64)
        /// `context` is the leader's tick count when sent; echoed back, it times the lease.
        case heartbeat(commit: UInt64, context: UInt64)
        case heartbeatResponse(context: UInt64)
        /// Leadership transfer: campaign now, skipping pre-vote.
        case timeoutNow
        /// From a member rejoining after a lost disk: "what is your term?" The answer's `term` is it.
        case termQuery
        case termQueryResponse
        /// Bytes `offset..<offset + data.count` of the snapshot stream at `index` (`total` bytes
        /// in all), for a follower that needs entries the leader no longer has. The stream's
        /// content is the node's business (NodeInstall.swift).
        case snapshotChunk(index: UInt64, offset: UInt64, total: UInt64, data: [UInt8])
        /// The follower holds the stream at `index` up to `nextOffset`, durably once it is whole.
        case snapshotChunkResponse(index: UInt64, nextOffset: UInt64)
    }

    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    public var kind: Kind
    /// The sender's incarnation: a member that lost its disk is not taken for what it was.
    public var incarnation: UInt64

    /// `hintTerm` of a rejection from a member rejoining after a lost disk: "my log ends at
    /// `hintIndex - 1`, before what I acknowledged to you earlier".
    public static let lostLogHintTerm = UInt64.max

    public init(from: NodeID, to: NodeID, term: UInt64, kind: Kind, incarnation: UInt64 = 0) {
        self.from = from
        self.to = to
        self.term = term
        self.kind = kind
        self.incarnation = incarnation
    }

    public var description: String {
        switch kind {
        case .append(let p, let pt, let es, let c):
            return
                "\(from)->\(to) t\(term) append(prev \(p)/t\(pt), \(es.count) entries\(es.isEmpty ? "" : " \(es.first!.index)...\(es.last!.index)"), commit \(c))"
        default:
            return "\(from)->\(to) t\(term) \(kind)"
        }
    }
}

/// The log Raft replicates. The commitlog implements it; tests use an in-memory one. Appends
/// and truncations take effect in memory at once; `durableIndex` says what is on disk, and
/// Raft learns it moved through `Raft.persisted()`.
public protocol RaftLog: AnyObject {
    var firstIndex: UInt64 { get }
    var lastIndex: UInt64 { get }
    var durableIndex: UInt64 { get }
    /// Term of entry `index`; 0 for index 0; nil when the entry is not in the log.
    func term(at index: UInt64) throws(LogFailure) -> UInt64?
    func read(from index: UInt64, maxBytes: Int) throws(LogFailure) -> [Entry]
    func append(_ entries: [Entry]) throws(LogFailure)
    func truncate(after index: UInt64) throws(LogFailure)
}

/// What one step asks the caller to do, in this order:
///  1. persist `hardState` when set (fsync) — before anything below;
///  2. send `messages` (their entries are already in the log; acknowledgements in them cover
///     only entries that are durable);
///  3. apply entries up to `commitIndex` (read them from the log), then report `applied`.
public struct Effects: Equatable, Sendable {
    public var hardState: HardState?
    public var messages: [Message] = []
    /// Set when the commit index moved: apply up to here.
    public var commitIndex: UInt64?
    /// Set when the role changed during the step.
    public var role: Role?
    /// Leader: peers that need a snapshot (their next entry was compacted away); the node starts
    /// sending one. Follower: chunks of a snapshot from the leader, for the node to store.
    public var snapshotRequests: [NodeID] = []
    public var snapshotChunks: [SnapshotChunk] = []
    /// Leader: how far followers hold the snapshot streams sent to them.
    public var snapshotProgress: [SnapshotProgress] = []

    public init() {}
    public var isEmpty: Bool {
        hardState == nil && messages.isEmpty && commitIndex == nil && role == nil && snapshotRequests.isEmpty && snapshotChunks.isEmpty
            && snapshotProgress.isEmpty
    }
}

public struct SnapshotChunk: Equatable, Sendable {
    public var from: NodeID
    public var index: UInt64
    public var offset: UInt64
    public var total: UInt64
    public var data: [UInt8]
}

public struct SnapshotProgress: Equatable, Sendable {
    public var peer: NodeID
    public var index: UInt64
    public var nextOffset: UInt64
}

/// Deliberate bugs for the simulator's checkers to catch. SPI: never set in production.
public struct PlantedBugs: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Commit by counting replicas of an earlier-term entry (the paper's Figure 8 mistake).
    public static let commitEarlierTerm = PlantedBugs(rawValue: 1 << 0)
    /// Acknowledge appends (and count the leader's own copy) before they are on disk.
    public static let ackBeforeFsync = PlantedBugs(rawValue: 1 << 1)
    /// Grant votes without checking that the candidate's log is up to date.
    public static let voteWithoutLogCheck = PlantedBugs(rawValue: 1 << 2)
    /// Do not truncate a follower's conflicting suffix; append over it.
    public static let skipTruncation = PlantedBugs(rawValue: 1 << 3)
    /// No check-quorum and no lease: a deposed leader keeps serving reads as leader.
    public static let noCheckQuorum = PlantedBugs(rawValue: 1 << 4)
    /// Report entries as committed as soon as they are appended.
    public static let applyUncommitted = PlantedBugs(rawValue: 1 << 5)
    /// Forget the persisted vote on restart (the shell's bug; listed here so one set names all).
    public static let losePersistedVote = PlantedBugs(rawValue: 1 << 6)
    /// The broker ignores producer ids: an idempotent retry is stored again.
    public static let dedupeOff = PlantedBugs(rawValue: 1 << 7)
    /// Offset commits acknowledged from the leader's memory, never replicated (the weakness of
    /// RocketMQ's DLedger mode).
    public static let offsetsInMemoryOnly = PlantedBugs(rawValue: 1 << 8)
    /// The broker indexes a batch's messages in reverse order.
    public static let reverseBatch = PlantedBugs(rawValue: 1 << 9)
    /// Pulls read the message after the one the consume queue names.
    public static let readWrongSlot = PlantedBugs(rawValue: 1 << 10)
    /// The leader releases delayed messages two seconds before they are due.
    public static let releaseEarly = PlantedBugs(rawValue: 1 << 11)
    /// The leader proposes a release every tick while one is in flight, and applying a release
    /// indexes a message again although it was released before (both guards off).
    public static let releaseTwice = PlantedBugs(rawValue: 1 << 12)
    /// A new leader grants queue locks at once, without waiting out the locks its predecessor
    /// may have granted, and without a lease of its own.
    public static let lockWithoutFence = PlantedBugs(rawValue: 1 << 13)
    /// A repeated give-back of the same delivery stores another retry copy.
    public static let sendBackTwice = PlantedBugs(rawValue: 1 << 14)
    /// A given-back message goes to the dead-letter queue one retry early.
    public static let deadLetterEarly = PlantedBugs(rawValue: 1 << 15)
    /// Half (transactional) messages go into their queue at once (and again when committed).
    public static let deliverHalf = PlantedBugs(rawValue: 1 << 16)
    /// A received message counts as visible again two seconds before its invisible time ends.
    public static let redeliverEarly = PlantedBugs(rawValue: 1 << 17)
    /// A follower caps a heartbeat's commit at what it verified since its restart (the old rule:
    /// a follower restarted on an idle group stayed at commit 0 until the next write).
    public static let heartbeatCommitCapped = PlantedBugs(rawValue: 1 << 18)
    /// The simulator's network loses the last byte of every append that carries entries (a
    /// peer codec bug), for showing its codec checker.
    public static let truncatePeerFrames = PlantedBugs(rawValue: 1 << 19)
    /// Broker snapshots leave out the producers' dedupe windows: a node restarted from one
    /// stores an idempotent retry again.
    public static let snapshotDropsDedupe = PlantedBugs(rawValue: 1 << 20)
    /// Each member deletes log segments up to what it has on disk, not only below what its
    /// snapshots and the replicated trim cover: entries not yet applied can go.
    public static let compactPastApplied = PlantedBugs(rawValue: 1 << 21)
    /// The leader's trim ignores messages that still need their entries (delayed messages not
    /// yet released, undecided half messages, invisible deliveries).
    public static let trimIgnoresPins = PlantedBugs(rawValue: 1 << 22)
    /// A follower installs a snapshot (resets its log to the base, loads the state) without
    /// first syncing the queue files and the snapshot it wrote: a crash then loses them.
    public static let installBeforeDurable = PlantedBugs(rawValue: 1 << 23)
    /// A leader proposes a membership change before an entry of its own term committed (the
    /// single-server change bug reported on raft-dev in 2015).
    public static let changeBeforeTermCommit = PlantedBugs(rawValue: 1 << 24)
    /// A leader proposes a membership change while the previous one is not committed.
    public static let twoChangesPending = PlantedBugs(rawValue: 1 << 25)
    /// Learners count in quorums (commit, elections, check-quorum, the lease) as voters do.
    public static let learnerInQuorum = PlantedBugs(rawValue: 1 << 26)
    /// A leader whose removal committed keeps leading.
    public static let removedLeaderKeepsLeading = PlantedBugs(rawValue: 1 << 27)
    /// A client of many broker groups uses a node without checking that it belongs to the group
    /// its route names (the simulator's routed client; `TernCluster` checks every connection).
    public static let skipGroupCheck = PlantedBugs(rawValue: 1 << 28)
    /// A client of many broker groups sends one message at a time over all of them, so a group
    /// it cannot reach holds up sends to the others (the simulator's routed producer).
    public static let stickyRouting = PlantedBugs(rawValue: 1 << 29)
    /// A client of many broker groups retries a send that timed out in another group (where the
    /// first group's dedupe cannot see it: stored twice when the first attempt landed).
    public static let retryOtherGroup = PlantedBugs(rawValue: 1 << 30)

    public static let all: [(String, PlantedBugs)] = [
        ("commit-earlier-term", .commitEarlierTerm), ("ack-before-fsync", .ackBeforeFsync),
        ("vote-without-log-check", .voteWithoutLogCheck), ("skip-truncation", .skipTruncation),
        ("no-check-quorum", .noCheckQuorum), ("apply-uncommitted", .applyUncommitted),
        ("lose-persisted-vote", .losePersistedVote), ("dedupe-off", .dedupeOff),
        ("offsets-in-memory-only", .offsetsInMemoryOnly), ("reverse-batch", .reverseBatch),
        ("read-wrong-slot", .readWrongSlot), ("release-early", .releaseEarly), ("release-twice", .releaseTwice),
        ("lock-without-fence", .lockWithoutFence), ("send-back-twice", .sendBackTwice),
        ("dead-letter-early", .deadLetterEarly), ("deliver-half", .deliverHalf), ("redeliver-early", .redeliverEarly),
        ("heartbeat-commit-capped", .heartbeatCommitCapped), ("truncate-peer-frames", .truncatePeerFrames),
        ("snapshot-drops-dedupe", .snapshotDropsDedupe), ("compact-past-applied", .compactPastApplied),
        ("trim-ignores-pins", .trimIgnoresPins), ("install-before-durable", .installBeforeDurable),
        ("change-before-term-commit", .changeBeforeTermCommit), ("two-changes-pending", .twoChangesPending),
        ("learner-in-quorum", .learnerInQuorum), ("removed-leader-keeps-leading", .removedLeaderKeepsLeading),
        ("skip-group-check", .skipGroupCheck), ("sticky-routing", .stickyRouting), ("retry-other-group", .retryOtherGroup),
    ]
}

/// SplitMix64: the seeded generator for election timeouts. Deterministic across platforms.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
