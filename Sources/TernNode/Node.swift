// A node: Raft (through `Replica`) and the broker, and the routing of client requests between
// them. Deterministic and synchronous: requests, peer messages, disk completions and ticks come
// in as calls with the time they happened; replies and peer messages go out as `NodeOutput`.
// The server shell and the simulator drive this same class.
//
// Writes (sends, topic changes, offset commits) are proposed to Raft by the leader and answered
// when their entry is applied, that is once a quorum has it on disk. Reads of applied state
// (pulls, topic lists, route queries) are answered by any replica. Consumer group membership is
// the leader's soft state.
//
// This file holds the node's types, state and inputs; its extensions route client requests
// (NodeRouting.swift), hold long polls (NodeLongPolls.swift), propose by the leader's clock
// (NodeTimers.swift) and apply what Raft returns (NodeApply.swift).
import TernBroker
import TernProtocol
import TernRaft
import TernStorage

public struct NodeConfig: Sendable {
    public var raft: RaftConfig
    /// Client endpoint ("host:port") of every member, for route answers and NOT_LEADER details.
    public var endpoints: [NodeID: String]
    public var broker = BrokerConfig()
    /// This node's RocketMQ 5 gRPC front ("host:port"; "" when none), reported in its status so
    /// that every front can list every node's in its route answers.
    public var grpcEndpoint = ""
    /// The broker group this node's Raft group is (`--broker-group`; docs/architecture.md, "Many
    /// groups"): reported in route and status answers and registered with the name servers.
    public var brokerGroup = BrokerGroupName.defaultName
    /// Writes waiting for their entry to commit, at most; more are refused with `busy`.
    public var maxPendingWrites = 100_000
    /// Check every client request against the replicated accounts (docs/security.md).
    public var aclEnabled = false
    /// Long polls held at once, at most.
    public var maxParkedPulls = 10_000
    /// Longest a pull is held (milliseconds).
    public var maxPullWaitMillis: UInt32 = 30_000
    public var sessionTimeoutMillis: UInt64 = 10_000
    /// Milliseconds per Raft tick (for reporting how long ago a member was heard from).
    public var tickMillis: UInt64 = 50
    /// Queue locks for orderly consumption last this long unless renewed; a new leader grants
    /// none until this long after it took over (its predecessor's may still be held).
    public var lockLeaseMillis: UInt64 = 3_000
    /// Receives held at once (long polling), and transaction check polls held at once, at most each.
    public var maxParkedReceives = 10_000
    /// Shortest and longest invisible time a receive or a change may ask for (milliseconds).
    public var invisibleMillisRange: ClosedRange<UInt64> = 100...(12 * 3600 * 1000)
    /// A broker snapshot is taken after applying each entry whose index is a multiple of this
    /// (0: never), so that every replica snapshots at the same indexes (NodeSnapshots.swift).
    public var snapshotEveryEntries: UInt64 = 100_000
    /// ... and after the entry with which the bytes of all entries applied cross a multiple of
    /// this (0: never), the same points on every replica too.
    public var snapshotEveryBytes: UInt64 = 64 << 20
    /// Rows per consume-queue file.
    public var queueFileRows: UInt64 = 1 << 18
    /// Retention (NodeRetention.swift): log segments whose newest message is older than this go
    /// (72 h, RocketMQ's fileReservedTime), and the oldest go while the log is larger than
    /// `retentionBytes` (nil: no size limit). Checked by the leader every `retentionCheckMillis`.
    public var retentionMillis: UInt64 = 72 * 3600 * 1000
    public var retentionBytes: UInt64?
    public var retentionCheckMillis: UInt64 = 250
    /// Disk use (a fraction, told by the shell) above which retention deletes the oldest
    /// eligible segments early, and above which the leader refuses sends.
    public var diskSoftLimit = 0.75
    public var diskHardLimit = 0.90

    public init(raft: RaftConfig, endpoints: [NodeID: String]) {
        self.raft = raft
        self.endpoints = endpoints
    }
}

/// A client request's return address: the connection it came on and its request id.
public struct ClientRef: Hashable, Sendable {
    public var connection: UInt64
    public var requestID: UInt64
    public init(connection: UInt64, requestID: UInt64) {
        self.connection = connection
        self.requestID = requestID
    }
}

public struct Reply: Sendable {
    public var to: ClientRef
    public var opcode: UInt16
    public var result: Result<[UInt8], ErrorBody>
}

public struct NodeOutput: Sendable {
    public var messages: [Message] = []
    public var replies: [Reply] = []
    /// Entries applied during this input, in order (for the simulator's checkers).
    public var applied: [LogEntry] = []
    /// Set when the Raft role changed.
    public var role: Role?
    /// A vote for another member was made durable during this input.
    public var votedNow = false
    /// Snapshots taken during this input: index and a digest of the body (replicas must agree).
    public var snapshots: [(index: UInt64, digest: UInt64)] = []
    /// Things the node wants logged (a snapshot that could not be written, an install).
    public var notices: [String] = []
    /// A snapshot was installed from the leader: the applied state jumped to `index` after the
    /// first `afterApplied` entries of `applied`.
    public var installed: (index: UInt64, afterApplied: Int)?
    /// Log segments were deleted: the log now starts here.
    public var compacted: UInt64?
    public init() {}
}

public final class Node {
    public let config: NodeConfig
    public let replica: Replica
    public internal(set) var broker: Broker!
    public let groups: ConsumerGroups
    public var id: NodeID { replica.id }
    /// Milliseconds, from the last input. Store timestamps and long-poll deadlines use it.
    public private(set) var now: UInt64 = 0

    enum Pending {
        case send(ClientRef, Opcode)
        /// A write answered, once applied, with a body fixed when it was proposed (often empty).
        case answer(ClientRef, Opcode, [UInt8])
        case offsets([ClientRef])
        /// The topic creation a send with auto-create proposed first; nobody waits on it.
        case internalWrite
        /// A receive, answered with what its entry granted.
        case receive(ClientRef)
        /// A change of invisible time, answered with the new time.
        case changeInvisible(ClientRef)
    }
    var pending: [UInt64: Pending] = [:]
    /// Whom each authenticated client connection speaks for (NodeAccess.swift).
    var principals: [UInt64: Principal] = [:]
    struct Parked {
        var client: ClientRef
        var request: PullRequest
        var deadline: UInt64
    }
    var parked: [Parked] = []
    /// Client traffic through this node, per topic (the shell's metrics read it).
    public internal(set) var traffic = Traffic()
    struct ParkedReceive {
        var client: ClientRef
        var request: ReceiveRequest
        var deadline: UInt64
    }
    /// Receives waiting for a message (leader only; retried every tick).
    var parkedReceives: [ParkedReceive] = []
    /// Receive choices proposed and not yet applied (leader soft state; see `chooseForReceive`).
    var receiveProposedNext: [String: [QueueRef: UInt64]] = [:]
    var receiveProposedAgain: Set<DeliveryKey> = []
    /// Per group and queue: receive entries proposed and not yet applied that name the queue,
    /// and when the last was proposed. A FIFO group's queue hands out nothing while one is in
    /// flight (for at most 10 s: one refused by a transfer is never applied).
    var receiveInFlight: [String: [QueueRef: (count: Int, at: UInt64)]] = [:]
    var receiveRotation: UInt32 = 0
    /// Transaction check polls of live producers, oldest first, and the checks each group has
    /// waiting for a poll (leader soft state).
    var checkPolls: [(client: ClientRef, group: String, deadline: UInt64)] = []
    var checkOutbox: [String: [MessageID]] = [:]
    var checkInFlight: UInt64?
    var offsetBuffer = OffsetCommit()
    var offsetWaiters: [ClientRef] = []
    /// Term of the last applied entry: a leader whose applied entries reach its own term has
    /// applied everything committed before it, and may answer reads that must not go back.
    var lastAppliedTerm: UInt64 = 0
    var wasLeader = false
    /// When this node last became leader (its clock), for fencing queue locks.
    var leaderSince: UInt64 = 0
    /// Group -> queue -> (holder, lease end). Leader soft state.
    var locks: [String: [QueueRef: (client: String, until: UInt64)]] = [:]
    /// Index of the release entry in flight; the next is proposed once it applied.
    var releaseInFlight: UInt64?
    var lastStamp: UInt64 = 0
    let brokerConfig: BrokerConfig
    let queueFiles: ConsumeQueueFiles
    let snapshots: SnapshotFiles
    /// Taken at its index, written once the log is durable through it.
    var pendingSnapshot: SnapshotFile?
    /// The queue bounds each snapshot on disk names (their files are kept).
    var keptSnapshotBounds: [UInt64: [QueueFileBounds]] = [:]
    /// The trim index each snapshot on disk holds: the log is compacted only below the oldest's.
    var keptSnapshotTrims: [UInt64: UInt64] = [:]
    public internal(set) var lastSnapshotIndex: UInt64 = 0
    /// When (the node's clock, ms) this process wrote or installed its latest snapshot; 0 when
    /// it has not since it started (the one it loaded at start is older).
    public internal(set) var lastSnapshotWrittenAt: UInt64 = 0
    /// What start-up loaded, for the log.
    public internal(set) var startReport: [String] = []
    /// Snapshot installs in progress (NodeInstall.swift): sent, as leader, and being received.
    var installsOut: [NodeID: OutgoingInstall] = [:]
    var installIn: IncomingInstall?
    var lastInstall: (leader: NodeID, index: UInt64, total: UInt64, base: LogBase)?
    /// The fraction of the data disk in use, and the bytes of this node's data directory, as the
    /// shell last measured them (0 in the simulator).
    public var diskUsedFraction = 0.0
    public var diskBytes: UInt64 = 0
    var nextRetentionCheck: UInt64 = 0
    /// Index of the trim or carry entry in flight; the next decision waits for it.
    var retentionInFlight: UInt64?
    let device: any StorageDevice
    let directory: String

    public init(
        config: NodeConfig, device: any StorageDevice, directory: String, logOptions: CommitlogOptions = CommitlogOptions(), seed: UInt64,
        lostDisk: Bool = false
    ) throws(StorageError) {
        self.config = config
        self.device = device
        self.directory = directory
        var raftConfig = config.raft
        if raftConfig.founding.members.allSatisfy({ $0.endpoint.isEmpty }) {
            raftConfig.founding = Membership(voters: raftConfig.members, endpoints: config.endpoints)
        }
        replica = try Replica(config: raftConfig, device: device, directory: directory, logOptions: logOptions, seed: seed, lostDisk: lostDisk)
        groups = ConsumerGroups(sessionTimeoutMillis: config.sessionTimeoutMillis)
        var brokerConfig = config.broker
        let bugs: [(PlantedBugs, BrokerPlantedBugs)] = [
            (.dedupeOff, .dedupeOff), (.reverseBatch, .reverseBatch), (.readWrongSlot, .readWrongSlot),
            (.releaseTwice, .releaseTwice), (.sendBackTwice, .sendBackTwice), (.deliverHalf, .deliverHalf),
            (.redeliverEarly, .redeliverEarly), (.snapshotDropsDedupe, .snapshotDropsDedupe),
        ]
        for (bug, brokerBug) in bugs where config.raft.plantedBugs.contains(bug) { brokerConfig.plantedBugs.insert(brokerBug) }
        self.brokerConfig = brokerConfig
        queueFiles = try ConsumeQueueFiles(device: device, directory: directory + "/cq", rowsPerFile: config.queueFileRows)
        snapshots = try SnapshotFiles(device: device, directory: directory + "/snapshots")
        broker = Broker(config: brokerConfig, source: self, queueFiles: queueFiles)
        // A partial install stream from before a restart cannot be trusted (which of its bytes
        // reached the disk is unknown): a new one starts from the beginning.
        try device.removeFile(directory + "/install-stream")
        try restoreState()
    }

    public var role: Role { replica.raft.role }
    /// Long polls held now: pulls waiting for messages, receives waiting for deliveries.
    public var heldPolls: (pulls: Int, receives: Int) { (parked.count, parkedReceives.count) }
    /// Whether reads of the broker state answer: not while a snapshot installed ahead of the
    /// commit index is being caught up to.
    public var brokerReadable: Bool { stateReadable }
    public var isLeader: Bool { replica.raft.role == .leader }
    /// Leader with every earlier-term committed entry applied.
    public var isReadyLeader: Bool { isLeader && lastAppliedTerm == replica.raft.term }

    public var status: NodeStatus {
        let r = replica.raft
        var s = NodeStatus(
            id: id.name, role: r.role.rawValue, term: r.term, leader: r.leader?.name ?? "", commitIndex: r.commitIndex, lastIndex: replica.log.lastIndex,
            appliedIndex: r.appliedIndex, durableIndex: replica.log.durableIndex)
        s.syncedBatches = UInt64(replica.log.stats.batches)
        s.bytesWritten = UInt64(replica.log.stats.bytesWritten)
        s.firstIndex = replica.log.firstIndex
        s.snapshotIndex = lastSnapshotIndex
        s.diskBytes = diskBytes
        s.trimIndex = broker.trimIndex
        s.grpcEndpoint = config.grpcEndpoint
        s.brokerGroup = config.brokerGroup
        return s
    }

    /// What this node registers with the name servers while it leads with its term's entries
    /// applied (its topic list is then the group's); nil otherwise.
    public var registration: GroupRegistration? {
        guard isReadyLeader else { return nil }
        let members = replica.raft.membership.ids.map { GroupMember(id: $0.name, endpoint: endpoint(of: $0) ?? "") }
        let topics = broker.topics.map { RegisteredTopic(name: $0.key, queues: $0.value, type: broker.topicTypes[$0.key] ?? .mixed) }
        var r = GroupRegistration(
            group: config.brokerGroup, leader: id.name, term: replica.raft.term, version: broker.appliedIndex, members: members, topics: topics)
        r.sentAt = now
        return r
    }

    // MARK: Inputs

    /// `ticks` Raft ticks fell due since the last call (more than one after a pause: they
    /// arrive as one catch-up step, before any input that queued meanwhile).
    public func tick(now: UInt64, ticks: Int = 1) throws(StorageError) -> NodeOutput {
        self.now = max(self.now, now)
        var out = NodeOutput()
        try absorb(replica.tick(ticks), into: &out)
        if isLeader { groups.expire(now: self.now) }
        try releaseDue(into: &out)
        try checkTransactions(into: &out)
        try serveParkedReceives(into: &out)
        expireParked(into: &out)
        retryInstalls(into: &out)
        try proposeRetention(into: &out)
        return out
    }

    public func receive(_ messages: [Message], now: UInt64) throws(StorageError) -> NodeOutput {
        self.now = max(self.now, now)
        var out = NodeOutput()
        for m in messages { try absorb(replica.receive(m), into: &out) }
        return out
    }

    public func diskCompleted(now: UInt64) throws(StorageError) -> NodeOutput {
        self.now = max(self.now, now)
        var out = NodeOutput()
        try absorb(replica.diskCompleted(), into: &out)
        return out
    }

    public func transferLeadership(to target: NodeID) throws(StorageError) -> NodeOutput {
        var out = NodeOutput()
        try absorb(replica.transferLeadership(to: target), into: &out)
        return out
    }

    /// The connection is gone: forget its long polls (replies to it would go nowhere).
    public func connectionClosed(_ connection: UInt64) {
        principals[connection] = nil
        parked.removeAll { $0.client.connection == connection }
        parkedReceives.removeAll { $0.client.connection == connection }
        checkPolls.removeAll { $0.client.connection == connection }
    }

    /// Client requests that arrived together. Writes among them are proposed as one batch.
    public func handle(_ requests: [(ClientRef, Frame)], now: UInt64) throws(StorageError) -> NodeOutput {
        self.now = max(self.now, now)
        var out = NodeOutput()
        var proposals: [(type: UInt8, body: [UInt8])] = []
        var owners: [Pending] = []
        for (client, frame) in requests {
            guard let op = Opcode(rawValue: frame.opcode), op.rawValue < Opcode.raft.rawValue else {
                out.replies.append(
                    Reply(
                        to: client, opcode: frame.opcode,
                        result: .failure(ErrorBody(code: ErrorCode.unknownOpcode, message: "opcode \(frame.opcode) is not a client request"))))
                continue
            }
            do {
                try route(op, client: client, body: frame.body, proposals: &proposals, owners: &owners, out: &out)
            } catch let e as WireError {
                out.replies.append(Reply(to: client, opcode: frame.opcode, result: .failure(ErrorBody(code: ErrorCode.badBody, message: e.description))))
            } catch let e as StorageError {
                throw e
            } catch {
                preconditionFailure("unexpected error \(error)")
            }
        }
        if !offsetWaiters.isEmpty, isLeader {
            offsetBuffer.at = stamp
            proposals.append((BrokerEntryType.offsets, offsetBuffer.encoded()))
            owners.append(.offsets(offsetWaiters))
            offsetBuffer = OffsetCommit()
            offsetWaiters = []
        }
        if !proposals.isEmpty { try propose(proposals, owners: owners, into: &out) }
        return out
    }

    /// Requests only the leader answers: writes, and reads of its soft state or that must be linearizable.
    static let leaderOnly: Set<Opcode> = [
        .send, .createTopic, .updateTopic, .deleteTopic, .resetOffset, .recall, .lockQueues, .unlockQueues,
        .sendBack, .commitOffset, .heartbeat, .unregister, .transferLeader, .queryOffset,
        .endTransaction, .pollTransactionChecks, .receive, .ack, .changeInvisible, .aclChange, .memberChange,
        .createGroup, .listGroups, .groupProgress, .traceTopic,
    ]
}

extension Node: EntrySource {
    public func entryBody(at index: UInt64) throws(StorageError) -> [UInt8] {
        if index < replica.log.firstIndex {
            throw StorageError(.invalidArgument, "entry \(index) was deleted by retention (the log starts at \(replica.log.firstIndex))")
        }
        guard let e = try replica.log.read(from: index, maxBytes: 1).first, e.index == index else {
            throw StorageError(.corruption, "entry \(index) is not in the log (first \(replica.log.firstIndex), last \(replica.log.lastIndex))")
        }
        return e.body
    }
}
