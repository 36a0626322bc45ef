// A node: Raft (through `Replica`) and the broker, and the routing of client requests between
// them. Deterministic and synchronous: requests, peer messages, disk completions and ticks come
// in as calls with the time they happened; replies and peer messages go out as `NodeOutput`.
// The server shell and the simulator drive this same class.
//
// Writes (sends, topic changes, offset commits) are proposed to Raft by the leader and answered
// when their entry is applied, that is once a quorum has it on disk. Reads of applied state
// (pulls, topic lists, route queries) are answered by any replica. Consumer group membership is
// the leader's soft state.
import TernBroker
import TernProtocol
import TernRaft
import TernStorage

public struct NodeConfig: Sendable {
    public var raft: RaftConfig
    /// Client endpoint ("host:port") of every member, for route answers and NOT_LEADER details.
    public var endpoints: [NodeID: String]
    public var broker = BrokerConfig()
    /// Writes waiting for their entry to commit, at most; more are refused with `busy`.
    public var maxPendingWrites = 100_000
    /// Long polls held at once, at most.
    public var maxParkedPulls = 10_000
    /// Longest a pull is held (milliseconds).
    public var maxPullWaitMillis: UInt32 = 30_000
    public var sessionTimeoutMillis: UInt64 = 10_000
    /// Queue locks for orderly consumption last this long unless renewed; a new leader grants
    /// none until this long after it took over (its predecessor's may still be held).
    public var lockLeaseMillis: UInt64 = 3_000
    /// Receives held at once (long polling), and transaction check polls held at once, at most each.
    public var maxParkedReceives = 10_000
    /// Shortest and longest invisible time a receive or a change may ask for (milliseconds).
    public var invisibleMillisRange: ClosedRange<UInt64> = 100...(12 * 3600 * 1000)

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
    public init() {}
}

public final class Node {
    public let config: NodeConfig
    public let replica: Replica
    public private(set) var broker: Broker!
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
    struct Parked {
        var client: ClientRef
        var request: PullRequest
        var deadline: UInt64
    }
    var parked: [Parked] = []
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
    private var receiveRotation: UInt32 = 0
    /// Transaction check polls of live producers, oldest first, and the checks each group has
    /// waiting for a poll (leader soft state).
    var checkPolls: [(client: ClientRef, group: String, deadline: UInt64)] = []
    var checkOutbox: [String: [MessageID]] = [:]
    private var checkInFlight: UInt64?
    var offsetBuffer = OffsetCommit()
    var offsetWaiters: [ClientRef] = []
    /// Term of the last applied entry: a leader whose applied entries reach its own term has
    /// applied everything committed before it, and may answer reads that must not go back.
    var lastAppliedTerm: UInt64 = 0
    private var wasLeader = false
    /// When this node last became leader (its clock), for fencing queue locks.
    private var leaderSince: UInt64 = 0
    /// Group -> queue -> (holder, lease end). Leader soft state.
    private var locks: [String: [QueueRef: (client: String, until: UInt64)]] = [:]
    /// Index of the release entry in flight; the next is proposed once it applied.
    private var releaseInFlight: UInt64?
    private var lastStamp: UInt64 = 0

    public init(config: NodeConfig, device: any StorageDevice, directory: String, logOptions: CommitlogOptions = CommitlogOptions(), seed: UInt64, lostDisk: Bool = false) throws(StorageError) {
        self.config = config
        replica = try Replica(config: config.raft, device: device, directory: directory, logOptions: logOptions, seed: seed, lostDisk: lostDisk)
        groups = ConsumerGroups(sessionTimeoutMillis: config.sessionTimeoutMillis)
        var brokerConfig = config.broker
        let bugs: [(PlantedBugs, BrokerPlantedBugs)] = [(.dedupeOff, .dedupeOff), (.reverseBatch, .reverseBatch), (.readWrongSlot, .readWrongSlot),
                                                         (.releaseTwice, .releaseTwice), (.sendBackTwice, .sendBackTwice), (.deliverHalf, .deliverHalf),
                                                         (.redeliverEarly, .redeliverEarly)]
        for (bug, brokerBug) in bugs where config.raft.plantedBugs.contains(bug) { brokerConfig.plantedBugs.insert(brokerBug) }
        broker = Broker(config: brokerConfig, source: self)
    }

    public var role: Role { replica.raft.role }
    public var isLeader: Bool { replica.raft.role == .leader }
    /// Leader with every earlier-term committed entry applied.
    public var isReadyLeader: Bool { isLeader && lastAppliedTerm == replica.raft.term }

    public var status: NodeStatus {
        let r = replica.raft
        var s = NodeStatus(id: id.name, role: r.role.rawValue, term: r.term, leader: r.leader?.name ?? "", commitIndex: r.commitIndex, lastIndex: replica.log.lastIndex, appliedIndex: r.appliedIndex, durableIndex: replica.log.durableIndex)
        s.syncedBatches = UInt64(replica.log.stats.batches)
        s.bytesWritten = UInt64(replica.log.stats.bytesWritten)
        return s
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
            guard let op = Opcode(rawValue: frame.opcode), op != .raft else {
                out.replies.append(Reply(to: client, opcode: frame.opcode, result: .failure(ErrorBody(code: ErrorCode.unknownOpcode, message: "opcode \(frame.opcode) is not a client request"))))
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
            proposals.append((BrokerEntryType.offsets, offsetBuffer.encoded()))
            owners.append(.offsets(offsetWaiters))
            offsetBuffer = OffsetCommit()
            offsetWaiters = []
        }
        if !proposals.isEmpty { try propose(proposals, owners: owners, into: &out) }
        return out
    }

    // MARK: Routing

    /// Requests only the leader answers: writes, and reads of its soft state or that must be linearizable.
    static let leaderOnly: Set<Opcode> = [.send, .createTopic, .updateTopic, .deleteTopic, .resetOffset, .recall, .lockQueues, .unlockQueues,
                                          .sendBack, .commitOffset, .heartbeat, .unregister, .transferLeader, .queryOffset,
                                          .endTransaction, .pollTransactionChecks, .receive, .ack, .changeInvisible]

    /// Proposes the creation of `topic` ahead of a write that needs it, unless it exists or is
    /// already proposed in this batch. Nobody waits on the creation itself.
    private func ensureTopic(_ topic: String, queues: UInt32, proposals: inout [(type: UInt8, body: [UInt8])], owners: inout [Pending]) {
        let create = AdminCommand.createTopic(name: topic, queues: queues)
        guard broker.topics[topic] == nil, !proposals.contains(where: { $0.type == BrokerEntryType.admin && (try? AdminCommand.decode($0.body)) == create }) else { return }
        proposals.append((BrokerEntryType.admin, create.encoded()))
        owners.append(.internalWrite)
    }

    /// A messages entry: the store timestamp, then the send body. Store timestamps ascend along
    /// the log as far as this leader can tell (offset resets search them): never below what was
    /// applied or proposed before.
    private func messagesEntry(_ send: [UInt8]) -> (type: UInt8, body: [UInt8]) {
        lastStamp = max(now, lastStamp, broker.lastStoreTimestamp)
        var entry: [UInt8] = []
        entry.reserveCapacity(8 + send.count)
        withUnsafeBytes(of: lastStamp.littleEndian) { entry.append(contentsOf: $0) }
        entry.append(contentsOf: send)
        return (BrokerEntryType.messages, entry)
    }

    private func route(_ op: Opcode, client: ClientRef, body: [UInt8], proposals: inout [(type: UInt8, body: [UInt8])], owners: inout [Pending], out: inout NodeOutput) throws -> Void {
        func reply(_ v: some WireCodable) { out.replies.append(Reply(to: client, opcode: op.rawValue, result: .success(v.encoded()))) }
        func fail(_ e: ErrorBody) { out.replies.append(Reply(to: client, opcode: op.rawValue, result: .failure(e))) }
        if Node.leaderOnly.contains(op) {
            if let e = notLeader() { return fail(e) }
            if pending.count + proposals.count >= config.maxPendingWrites {
                return fail(ErrorBody(code: ErrorCode.busy, message: "\(pending.count) writes are waiting to commit; retry later"))
            }
        }
        switch op {
        case .queryRoute:
            let topic = try NameRequest.decode(body).name
            let nodes = config.raft.members.map { (id: $0.name, endpoint: config.endpoints[$0] ?? "") }
            reply(RouteResponse(leader: replica.raft.leader?.name ?? "", term: replica.raft.term, nodes: nodes, topicQueues: broker.topics[topic] ?? 0))
        case .send:
            var r = WireReader(body)
            let header = try SendHeader(from: &r)
            let autoCreating = broker.topics[header.topic] == nil && config.broker.autoCreateTopics && Broker.validateTopicName(header.topic) == nil
            if autoCreating {
                guard header.queueID < config.broker.defaultQueues else {
                    return fail(ErrorBody(code: ErrorCode.queueNotFound, message: "topic \(header.topic) is created with \(config.broker.defaultQueues) queues; queue \(header.queueID) does not exist"))
                }
                ensureTopic(header.topic, queues: config.broker.defaultQueues, proposals: &proposals, owners: &owners)
            } else if let e = broker.validate(header) {
                return fail(e)
            }
            proposals.append(messagesEntry(body))
            owners.append(.send(client, op))
        case .pull:
            var request = try PullRequest.decode(body)
            request.maxMessages = max(1, min(request.maxMessages, 1024))
            let result = try broker.pull(request)
            if case .success(let response) = result, response.messages.isEmpty, request.maxWaitMillis > 0, response.nextOffset >= response.maxOffset {
                guard parked.count < config.maxParkedPulls else {
                    return fail(ErrorBody(code: ErrorCode.busy, message: "\(parked.count) pulls are already held; retry later"))
                }
                request.offset = response.nextOffset
                parked.append(Parked(client: client, request: request, deadline: now + UInt64(min(request.maxWaitMillis, config.maxPullWaitMillis))))
                return
            }
            switch result {
            case .success(let response): reply(response)
            case .failure(let e): fail(e)
            }
        case .heartbeat:
            let request = try HeartbeatRequest.decode(body)
            if !request.sqlFilter.isEmpty, case .failure(let e) = broker.sqlFilter(request.sqlFilter) { return fail(e) }
            reply(groups.heartbeat(request, now: now, queuesOf: { self.broker.topics[$0] }))
        case .unregister:
            let request = try UnregisterRequest.decode(body)
            groups.unregister(group: request.group, clientID: request.clientID)
            reply(Empty())
        case .commitOffset:
            let request = try CommitOffsetRequest.decode(body)
            if config.raft.plantedBugs.contains(.offsetsInMemoryOnly) {
                broker.plantedSetOffsets(group: request.group, request.offsets)
                return reply(Empty())
            }
            offsetBuffer.merge(group: request.group, offsets: request.offsets)
            offsetWaiters.append(client)
        case .queryOffset:
            let request = try QueryOffsetRequest.decode(body)
            // A linearizable read: only a leader that applied its own term's entry (so every
            // earlier commit) and holds a lease (so no newer leader can have taken a commit).
            guard isReadyLeader, replica.raft.hasLease else {
                return fail(ErrorBody(code: ErrorCode.busy, message: "the leader is still applying earlier entries or has no lease; retry"))
            }
            reply(QueryOffsetResponse(offset: broker.committedOffset(group: request.group, queue: request.queue)))
        case .createTopic:
            let request = try TopicRequest.decode(body)
            if let e = Broker.validateTopicName(request.name) { return fail(e) }
            guard request.queues >= 1, request.queues <= config.broker.maxQueues else {
                return fail(ErrorBody(code: ErrorCode.badRequest, message: "a topic has 1 to \(config.broker.maxQueues) queues, not \(request.queues)"))
            }
            if let existing = broker.topics[request.name], existing != request.queues {
                return fail(ErrorBody(code: ErrorCode.topicExists, message: "topic \(request.name) exists with \(existing) queues"))
            }
            proposals.append((BrokerEntryType.admin, AdminCommand.createTopic(name: request.name, queues: request.queues).encoded()))
            owners.append(.answer(client, op, []))
        case .updateTopic:
            let request = try TopicRequest.decode(body)
            guard let existing = broker.topics[request.name] else {
                return fail(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(request.name) does not exist"))
            }
            guard request.queues >= existing, request.queues <= config.broker.maxQueues else {
                return fail(ErrorBody(code: ErrorCode.badRequest, message: "topic \(request.name) has \(existing) queues; it may grow to at most \(config.broker.maxQueues), never shrink"))
            }
            proposals.append((BrokerEntryType.admin, AdminCommand.updateTopic(name: request.name, queues: request.queues).encoded()))
            owners.append(.answer(client, op, []))
        case .deleteTopic:
            let request = try TopicRequest.decode(body)
            guard broker.topics[request.name] != nil else {
                return fail(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(request.name) does not exist"))
            }
            proposals.append((BrokerEntryType.admin, AdminCommand.deleteTopic(name: request.name).encoded()))
            owners.append(.answer(client, op, []))
        case .queryMessage:
            let request = try QueryMessageRequest.decode(body)
            if let id = request.id {
                guard let m = try broker.message(id) else {
                    return fail(ErrorBody(code: ErrorCode.messageNotFound, message: "no message \(id) on \(self.id) (not stored, not yet applied here, or deleted)"))
                }
                reply(MessageList(messages: [m]))
            } else {
                reply(MessageList(messages: try broker.messages(topic: request.topic, key: request.key, max: Int(min(request.max, 1024)))))
            }
        case .lockQueues:
            let request = try LockRequest.decode(body)
            let unfenced = config.raft.plantedBugs.contains(.lockWithoutFence)
            var granted: [QueueRef] = []
            // Only a leader that holds a Raft lease (no other leader can exist) and has outlived
            // every lock its predecessors may have granted.
            if unfenced || (isReadyLeader && replica.raft.hasLease && now >= leaderSince + config.lockLeaseMillis) {
                for q in request.queues.sorted() where broker.topics[q.topic].map({ q.queueID < $0 }) ?? false {
                    if let held = locks[request.group]?[q], held.client != request.clientID, held.until > now { continue }
                    locks[request.group, default: [:]][q] = (request.clientID, now + config.lockLeaseMillis)
                    granted.append(q)
                }
            }
            reply(LockResponse(locked: granted, leaseMillis: UInt32(config.lockLeaseMillis)))
        case .unlockQueues:
            let request = try LockRequest.decode(body)
            for q in request.queues where locks[request.group]?[q]?.client == request.clientID { locks[request.group]?[q] = nil }
            reply(Empty())
        case .sendBack:
            let request = try SendBackRequest.decode(body)
            guard isReadyLeader else {
                return fail(ErrorBody(code: ErrorCode.busy, message: "the new leader is still applying earlier entries; retry"))
            }
            guard let m = try broker.message(request.id) else {
                return fail(ErrorBody(code: ErrorCode.messageNotFound, message: "no message \(request.id) to give back"))
            }
            let early = config.raft.plantedBugs.contains(.deadLetterEarly) && request.maxReconsumeTimes > 0
            let copy = Broker.sendBack(m, group: request.group, delayMillis: request.delayMillis, maxReconsumeTimes: request.maxReconsumeTimes - (early ? 1 : 0))
            ensureTopic(copy.topic, queues: 1, proposals: &proposals, owners: &owners)
            proposals.append(messagesEntry(copy.encoded()))
            owners.append(.send(client, op))
        case .recall:
            let ids = try MessageIDRequest.decode(body).ids
            guard !ids.isEmpty, ids.count <= 1024 else { return fail(ErrorBody(code: ErrorCode.badRequest, message: "recall 1 to 1,024 messages")) }
            proposals.append((BrokerEntryType.recall, MessageIDList(ids: ids).encoded()))
            owners.append(.answer(client, op, []))
        case .resetOffset:
            let request = try ResetOffsetRequest.decode(body)
            guard isReadyLeader else {
                return fail(ErrorBody(code: ErrorCode.busy, message: "the new leader is still applying earlier entries; retry"))
            }
            var topics = request.topic.isEmpty ? Set((broker.offsets[request.group] ?? [:]).keys.map(\.topic)).sorted() : [request.topic]
            topics = topics.filter { broker.topics[$0] != nil }
            if !request.topic.isEmpty && topics.isEmpty {
                return fail(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(request.topic) does not exist"))
            }
            var map: [QueueRef: UInt64] = [:]
            for t in topics {
                for q in 0..<broker.topics[t]! {
                    let ref = QueueRef(topic: t, queueID: q)
                    map[ref] = try broker.offset(ref, atOrAfter: request.timestamp)
                }
            }
            proposals.append((BrokerEntryType.offsetReset, OffsetCommit(groups: [request.group: map]).encoded()))
            owners.append(.answer(client, op, OffsetList(offsets: map).encoded()))
        case .listTopics:
            _ = try Empty.decode(body)
            reply(TopicList(topics: broker.topicList()))
        case .describeTopic:
            let name = try NameRequest.decode(body).name
            guard let info = broker.topicInfo(name) else {
                return fail(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(name) does not exist"))
            }
            reply(TopicList(topics: [info]))
        case .clusterStatus:
            _ = try Empty.decode(body)
            reply(status)
        case .transferLeader:
            let target = NodeID(try NameRequest.decode(body).name)
            guard config.raft.members.contains(target) else {
                return fail(ErrorBody(code: ErrorCode.badRequest, message: "\(target) is not a member (members: \(config.raft.members.map(\.name).joined(separator: ", ")))"))
            }
            try absorb(replica.transferLeadership(to: target), into: &out)
            reply(Empty())
        case .endTransaction:
            let request = try EndTransactionRequest.decode(body)
            proposals.append((BrokerEntryType.transactionEnd, TransactionEnd(group: request.group, id: request.id, decision: request.decision).encoded()))
            owners.append(.answer(client, op, []))
        case .pollTransactionChecks:
            let request = try TransactionCheckPoll.decode(body)
            guard checkPolls.count < config.maxParkedReceives else {
                return fail(ErrorBody(code: ErrorCode.busy, message: "\(checkPolls.count) check polls are already held; retry later"))
            }
            checkPolls.append((client, request.group, now + UInt64(min(request.maxWaitMillis, config.maxPullWaitMillis))))
            try deliverChecks(into: &out)
        case .receive:
            let request = try ReceiveRequest.decode(body)
            if let e = invalidInvisibleTime(request.invisibleMillis) { return fail(e) }
            guard request.maxMessages >= 1, request.maxMessages <= 1024 else {
                return fail(ErrorBody(code: ErrorCode.badRequest, message: "a receive takes 1 to 1,024 messages, not \(request.maxMessages)"))
            }
            // The leader's choice must see every earlier receive and acknowledgement applied.
            guard isReadyLeader else {
                return fail(ErrorBody(code: ErrorCode.busy, message: "the new leader is still applying earlier entries; retry"))
            }
            switch try chooseForReceive(request) {
            case .failure(let e): fail(e)
            case .success(let entry?):
                proposals.append((BrokerEntryType.receive, entry.encoded()))
                owners.append(.receive(client))
            case .success(nil):
                if request.maxWaitMillis == 0 { return reply(ReceiveResponse(deliveries: [])) }
                guard parkedReceives.count < config.maxParkedReceives else {
                    return fail(ErrorBody(code: ErrorCode.busy, message: "\(parkedReceives.count) receives are already held; retry later"))
                }
                parkedReceives.append(ParkedReceive(client: client, request: request, deadline: now + UInt64(min(request.maxWaitMillis, config.maxPullWaitMillis))))
            }
        case .ack, .changeInvisible:
            let request = try ReceiptRequest.decode(body)
            if op == .ack {
                proposals.append((BrokerEntryType.receipt, ReceiptEntry(group: request.group, handle: request.handle, until: nil).encoded()))
                owners.append(.answer(client, op, []))
            } else {
                if let e = invalidInvisibleTime(request.invisibleMillis) { return fail(e) }
                proposals.append((BrokerEntryType.receipt, ReceiptEntry(group: request.group, handle: request.handle, until: now + request.invisibleMillis).encoded()))
                owners.append(.changeInvisible(client))
            }
        case .raft:
            preconditionFailure("peer messages do not reach the client router")
        }
    }

    /// The leader proposes the release of delayed messages due by its clock, one release entry
    /// (up to 1,024 messages) at a time. Only a leader that applied its own term's entry does:
    /// then its timer has every earlier release, and nothing is released twice.
    private func releaseDue(into out: inout NodeOutput) throws(StorageError) {
        if let r = releaseInFlight, broker.appliedIndex >= r { releaseInFlight = nil }
        let twice = config.raft.plantedBugs.contains(.releaseTwice)
        guard isReadyLeader, releaseInFlight == nil || twice, let next = broker.timers.next else { return }
        let clock = config.raft.plantedBugs.contains(.releaseEarly) ? now + 2_000 : now
        guard next <= clock else { return }
        let due = broker.timers.due(now: clock, max: 1024)
        guard !due.isEmpty else { return }
        let (result, output) = try replica.propose([(BrokerEntryType.release, MessageIDList(ids: due.map(\.id)).encoded())])
        if case .accepted(let first, _) = result {
            releaseInFlight = first
            pending[first] = .internalWrite
        }
        try absorb(output, into: &out)
    }

    private func invalidInvisibleTime(_ millis: UInt64) -> ErrorBody? {
        let range = config.invisibleMillisRange
        guard !range.contains(millis) else { return nil }
        return ErrorBody(code: ErrorCode.badRequest, message: "an invisible time is \(range.lowerBound) ms to \(range.upperBound / 3_600_000) h, not \(millis) ms")
    }

    /// The broker's choice for a receive, with this leader's proposals in flight set aside
    /// (they are then in flight too).
    private func chooseForReceive(_ request: ReceiveRequest) throws(StorageError) -> Result<ReceiveEntry?, ErrorBody> {
        receiveRotation &+= 1
        let result = try broker.chooseForReceive(request, now: now, startQueue: receiveRotation, proposedNext: receiveProposedNext[request.group] ?? [:], proposedAgain: receiveProposedAgain)
        if case .success(let entry?) = result {
            for q in entry.queues {
                let ref = QueueRef(topic: entry.topic, queueID: q.queueID)
                receiveProposedNext[entry.group, default: [:]][ref] = max(receiveProposedNext[entry.group]?[ref] ?? 0, q.next)
                for o in q.offsets { receiveProposedAgain.insert(DeliveryKey(group: entry.group, queue: ref, offset: o)) }
            }
        }
        return result
    }

    /// Held receives try again each tick (messages may have arrived, invisible times ended);
    /// those past their deadline are answered with nothing.
    private func serveParkedReceives(into out: inout NodeOutput) throws(StorageError) {
        guard !parkedReceives.isEmpty else { return }
        guard isReadyLeader else { return }
        var keep: [ParkedReceive] = []
        var proposals: [(type: UInt8, body: [UInt8])] = []
        var owners: [Pending] = []
        for p in parkedReceives {
            switch try chooseForReceive(p.request) {
            case .success(let entry?):
                proposals.append((BrokerEntryType.receive, entry.encoded()))
                owners.append(.receive(p.client))
            case .success(nil) where now < p.deadline:
                keep.append(p)
            case .success(nil):
                out.replies.append(Reply(to: p.client, opcode: Opcode.receive.rawValue, result: .success(ReceiveResponse(deliveries: []).encoded())))
            case .failure(let e):
                out.replies.append(Reply(to: p.client, opcode: Opcode.receive.rawValue, result: .failure(e)))
            }
        }
        parkedReceives = keep
        if !proposals.isEmpty { try propose(proposals, owners: owners, into: &out) }
    }

    /// The leader proposes a check entry for the half messages whose check is due by its clock,
    /// one entry at a time, once it applied its own term's entry (so every earlier check and
    /// decision is in its state).
    private func checkTransactions(into out: inout NodeOutput) throws(StorageError) {
        if let c = checkInFlight, broker.appliedIndex >= c { checkInFlight = nil }
        let expired = checkPolls.filter { now >= $0.deadline }
        checkPolls.removeAll { now >= $0.deadline }
        for p in expired { out.replies.append(Reply(to: p.client, opcode: Opcode.pollTransactionChecks.rawValue, result: .success(MessageList(messages: []).encoded()))) }
        guard isReadyLeader, checkInFlight == nil, let next = broker.checkTimers.next, next <= now else { return }
        let due = broker.checkTimers.due(now: now, max: 1024)
        guard !due.isEmpty else { return }
        let (result, output) = try replica.propose([(BrokerEntryType.transactionCheck, TransactionCheck(now: now, ids: due.map(\.id)).encoded())])
        if case .accepted(let first, _) = result {
            checkInFlight = first
            pending[first] = .internalWrite
        }
        try absorb(output, into: &out)
    }

    /// Answers held check polls from the checks waiting for their group, oldest poll first.
    private func deliverChecks(into out: inout NodeOutput) throws(StorageError) {
        var keep: [(client: ClientRef, group: String, deadline: UInt64)] = []
        for p in checkPolls {
            guard var ids = checkOutbox[p.group], !ids.isEmpty else {
                keep.append(p)
                continue
            }
            var list: [ReceivedMessage] = []
            while !ids.isEmpty && list.count < 32 {
                if let m = try broker.halfMessage(ids.removeFirst()) { list.append(m) }
            }
            checkOutbox[p.group] = ids.isEmpty ? nil : ids
            if list.isEmpty {
                keep.append(p)
                continue
            }
            out.replies.append(Reply(to: p.client, opcode: Opcode.pollTransactionChecks.rawValue, result: .success(MessageList(messages: list).encoded())))
        }
        checkPolls = keep
    }

    private func notLeader() -> ErrorBody? {
        guard !isLeader else { return nil }
        let leader = replica.raft.leader
        let detail = NotLeaderDetail(leader: leader?.name ?? "", endpoint: leader.flatMap { config.endpoints[$0] } ?? "", term: replica.raft.term)
        let text = leader.map { "not the leader; \($0) leads term \(replica.raft.term)" } ?? "not the leader; no leader is known in term \(replica.raft.term)"
        return ErrorBody(code: ErrorCode.notLeader, message: text, detail: detail.encoded())
    }

    private func propose(_ proposals: [(type: UInt8, body: [UInt8])], owners: [Pending], into out: inout NodeOutput) throws(StorageError) {
        let (result, output) = try replica.propose(proposals)
        switch result {
        case .accepted(let first, _):
            for (k, owner) in owners.enumerated() { pending[first + UInt64(k)] = owner }
        case .notLeader, .transferring:
            let e = notLeader() ?? ErrorBody(code: ErrorCode.notLeader, message: "leadership is being transferred; retry at the new leader", detail: NotLeaderDetail(leader: "", endpoint: "", term: replica.raft.term).encoded())
            for owner in owners { fail(owner, e, into: &out) }
        }
        try absorb(output, into: &out)
    }

    private func fail(_ owner: Pending, _ e: ErrorBody, into out: inout NodeOutput) {
        switch owner {
        case .send(let c, let op): out.replies.append(Reply(to: c, opcode: op.rawValue, result: .failure(e)))
        case .answer(let c, let op, _): out.replies.append(Reply(to: c, opcode: op.rawValue, result: .failure(e)))
        case .offsets(let cs): for c in cs { out.replies.append(Reply(to: c, opcode: Opcode.commitOffset.rawValue, result: .failure(e))) }
        case .receive(let c): out.replies.append(Reply(to: c, opcode: Opcode.receive.rawValue, result: .failure(e)))
        case .changeInvisible(let c): out.replies.append(Reply(to: c, opcode: Opcode.changeInvisible.rawValue, result: .failure(e)))
        case .internalWrite: break
        }
    }

    // MARK: Applying

    private func absorb(_ r: ReplicaOutput, into out: inout NodeOutput) throws(StorageError) {
        out.messages += r.messages
        out.applied += r.apply
        if let role = r.role { out.role = role }
        if r.votedNow { out.votedNow = true }
        var touched = false
        var checksQueued = false
        for entry in r.apply {
            lastAppliedTerm = entry.term
            let outcome: ApplyOutcome
            do {
                outcome = try broker.apply(index: entry.index, type: entry.type, body: entry.body)
            } catch {
                throw StorageError(.corruption, "\(error); the node stops rather than skip it")
            }
            if case .sent = outcome { touched = true }
            if entry.type == BrokerEntryType.release || entry.type == BrokerEntryType.transactionEnd { touched = true }
            if case .checks(let ids) = outcome, isLeader {
                for id in ids {
                    guard let group = broker.halfMessages[id]?.group else { continue }
                    var list = checkOutbox[group] ?? []
                    if !list.contains(id) { list.append(id) }
                    if list.count > 10_000 { list.removeFirst(list.count - 10_000) }
                    checkOutbox[group] = list
                    checksQueued = true
                }
            }
            if entry.type == BrokerEntryType.receive, isLeader {
                // It decoded a moment ago in `apply`.
                guard let e = try? ReceiveEntry.decode(entry.body) else { preconditionFailure("receive entry \(entry.index) applied but does not decode") }
                for q in e.queues {
                    for o in q.offsets { receiveProposedAgain.remove(DeliveryKey(group: e.group, queue: QueueRef(topic: e.topic, queueID: q.queueID), offset: o)) }
                }
            }
            guard let owner = pending.removeValue(forKey: entry.index) else { continue }
            switch (owner, outcome) {
            case (.send(let c, let op), .sent(let response)):
                out.replies.append(Reply(to: c, opcode: op.rawValue, result: .success(response.encoded())))
            case (.answer(let c, let op, let body), .done):
                out.replies.append(Reply(to: c, opcode: op.rawValue, result: .success(body)))
            case (.offsets(let cs), .done):
                for c in cs { out.replies.append(Reply(to: c, opcode: Opcode.commitOffset.rawValue, result: .success([]))) }
            case (.receive(let c), .received(let grants)):
                var deliveries: [ReceivedDelivery] = []
                for g in grants {
                    guard let m = try broker.message(at: g.handle.offset, in: g.handle.queue) else { continue }
                    deliveries.append(ReceivedDelivery(handle: g.handle, invisibleUntil: g.until, attempt: g.attempt, message: m))
                }
                out.replies.append(Reply(to: c, opcode: Opcode.receive.rawValue, result: .success(ReceiveResponse(deliveries: deliveries).encoded())))
            case (.changeInvisible(let c), .invisibleUntil(let until)):
                out.replies.append(Reply(to: c, opcode: Opcode.changeInvisible.rawValue, result: .success(ChangeInvisibleResponse(invisibleUntil: until).encoded())))
            case (_, .failed(let e)):
                fail(owner, e, into: &out)
            case (.internalWrite, _):
                break
            default:
                fail(owner, ErrorBody(code: ErrorCode.badRequest, message: "entry \(entry.index) did not apply as its request expected"), into: &out)
            }
        }
        let leaderNow = isLeader
        if leaderNow && !wasLeader {
            leaderSince = now
            locks = [:]
        }
        if wasLeader && !leaderNow {
            // Deposed: what was waiting may or may not commit under the next leader. Clients
            // retry there (idempotently, with a producer id). Groups re-form at the new leader.
            let e = notLeader()!
            for index in pending.keys.sorted() { fail(pending[index]!, e, into: &out) }
            pending = [:]
            releaseInFlight = nil
            checkInFlight = nil
            checkOutbox = [:]
            for p in checkPolls { out.replies.append(Reply(to: p.client, opcode: Opcode.pollTransactionChecks.rawValue, result: .failure(e))) }
            checkPolls = []
            for p in parkedReceives { out.replies.append(Reply(to: p.client, opcode: Opcode.receive.rawValue, result: .failure(e))) }
            parkedReceives = []
            receiveProposedNext = [:]
            receiveProposedAgain = []
            for c in offsetWaiters { out.replies.append(Reply(to: c, opcode: Opcode.commitOffset.rawValue, result: .failure(e))) }
            offsetWaiters = []
            offsetBuffer = OffsetCommit()
            groups.reset()
        }
        wasLeader = leaderNow
        if touched { try wakeParked(into: &out) }
        if checksQueued { try deliverChecks(into: &out) }
    }

    /// Answers the held pulls whose queue grew. One that the tag filter left empty stays held,
    /// from where its scan stopped, until its deadline.
    private func wakeParked(into out: inout NodeOutput) throws(StorageError) {
        var keep: [Parked] = []
        for var p in parked {
            let ref = QueueRef(topic: p.request.topic, queueID: p.request.queueID)
            guard let max = broker.maxOffset(ref), max > p.request.offset else {
                keep.append(p)
                continue
            }
            let result = try broker.pull(p.request)
            if case .success(let response) = result, response.messages.isEmpty {
                p.request.offset = response.nextOffset
                keep.append(p)
                continue
            }
            out.replies.append(Reply(to: p.client, opcode: Opcode.pull.rawValue, result: result.map { $0.encoded() }))
        }
        parked = keep
    }

    private func expireParked(into out: inout NodeOutput) {
        var keep: [Parked] = []
        for p in parked {
            guard now >= p.deadline else {
                keep.append(p)
                continue
            }
            let ref = QueueRef(topic: p.request.topic, queueID: p.request.queueID)
            let bounds = broker.bounds(ref) ?? (p.request.offset, p.request.offset)
            let response = PullResponse(nextOffset: p.request.offset, minOffset: bounds.min, maxOffset: bounds.max, messages: [])
            out.replies.append(Reply(to: p.client, opcode: Opcode.pull.rawValue, result: .success(response.encoded())))
        }
        parked = keep
    }
}

extension Node: EntrySource {
    public func entryBody(at index: UInt64) throws(StorageError) -> [UInt8] {
        guard let e = try replica.log.read(from: index, maxBytes: 1).first, e.index == index else {
            throw StorageError(.corruption, "entry \(index) is not in the log (first \(replica.log.firstIndex), last \(replica.log.lastIndex))")
        }
        return e.body
    }
}
