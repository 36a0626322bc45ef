// Client requests at the node: `route` answers reads at once and turns writes into proposals,
// which `propose` hands to Raft, to be answered once applied; a write that cannot be proposed
// fails at once with NOT_LEADER.
import TernBroker
import TernProtocol
import TernRaft
import TernStorage

extension Node {
    /// Proposes the creation of `topic` ahead of a write that needs it, unless it exists or is
    /// already proposed in this batch. Nobody waits on the creation itself.
    func ensureTopic(_ topic: String, queues: UInt32, proposals: inout [(type: UInt8, body: [UInt8])], owners: inout [Pending]) {
        let create = AdminCommand.createTopic(name: topic, queues: queues)
        guard broker.topics[topic] == nil, !proposals.contains(where: { $0.type == BrokerEntryType.admin && (try? AdminCommand.decode($0.body)) == create })
        else { return }
        proposals.append((BrokerEntryType.admin, create.encoded()))
        owners.append(.internalWrite)
    }

    /// A messages entry: the store timestamp, then the send body. Store timestamps ascend along
    /// the log as far as this leader can tell (offset resets search them): never below what was
    /// applied or proposed before.
    func messagesEntry(_ send: [UInt8]) -> (type: UInt8, body: [UInt8]) {
        lastStamp = max(now, lastStamp, broker.lastStoreTimestamp)
        var entry: [UInt8] = []
        entry.reserveCapacity(8 + send.count)
        withUnsafeBytes(of: lastStamp.littleEndian) { entry.append(contentsOf: $0) }
        entry.append(contentsOf: send)
        return (BrokerEntryType.messages, entry)
    }

    func route(
        _ op: Opcode, client: ClientRef, body: [UInt8], proposals: inout [(type: UInt8, body: [UInt8])], owners: inout [Pending], out: inout NodeOutput
    ) throws {
        func reply(_ v: some WireCodable) { out.replies.append(Reply(to: client, opcode: op.rawValue, result: .success(v.encoded()))) }
        func fail(_ e: ErrorBody) { out.replies.append(Reply(to: client, opcode: op.rawValue, result: .failure(e))) }
        if let e = try authorize(op, body: body, client: client) { return fail(e) }
        if Node.leaderOnly.contains(op) {
            if let e = notLeader() { return fail(e) }
            if pending.count + proposals.count >= config.maxPendingWrites {
                return fail(ErrorBody(code: ErrorCode.busy, message: "\(pending.count) writes are waiting to commit; retry later"))
            }
        }
        if op == .send || op == .sendBack, diskUsedFraction > config.diskHardLimit {
            return fail(
                ErrorBody(
                    code: ErrorCode.storageFull,
                    message:
                        "the leader's disk is \(Int(diskUsedFraction * 100))% full, above its hard limit of \(Int(config.diskHardLimit * 100))%: sends are refused until retention frees space; retry later"
                ))
        }
        if op == .pull || op == .queryMessage || op == .traceMessage, !stateReadable {
            return fail(
                ErrorBody(
                    code: ErrorCode.busy,
                    message:
                        "\(id) installed a snapshot at \(broker.appliedIndex) and its log is committed only to \(replica.raft.commitIndex): catching up; retry")
            )
        }
        switch op {
        case .queryRoute:
            let topic = try NameRequest.decode(body).name
            let nodes = replica.raft.membership.ids.map { (id: $0.name, endpoint: endpoint(of: $0) ?? "") }
            var route = RouteResponse(leader: replica.raft.leader?.name ?? "", term: replica.raft.term, nodes: nodes, topicQueues: broker.topics[topic] ?? 0)
            route.topicType = broker.topicTypes[topic] ?? .mixed
            route.brokerGroup = config.brokerGroup
            reply(route)
        case .send:
            var r = WireReader(body)
            let header = try SendHeader(from: &r)
            let autoCreating = broker.topics[header.topic] == nil && config.broker.autoCreateTopics && Broker.validateTopicName(header.topic) == nil
            if autoCreating {
                guard header.queueID < config.broker.defaultQueues else {
                    return fail(
                        ErrorBody(
                            code: ErrorCode.queueNotFound,
                            message: "topic \(header.topic) is created with \(config.broker.defaultQueues) queues; queue \(header.queueID) does not exist"))
                }
                ensureTopic(header.topic, queues: config.broker.defaultQueues, proposals: &proposals, owners: &owners)
            } else if let e = broker.validate(header) {
                return fail(e)
            } else if let type = broker.topicTypes[header.topic] {
                // A typed topic reads the messages' properties before proposing (mixed ones never).
                for m in try SendRequest.decode(body).messages where TopicType.of(m.properties) != type {
                    return fail(
                        ErrorBody(
                            code: ErrorCode.wrongMessageType,
                            message: "topic \(header.topic) takes \(type) messages; this one is \(TopicType.of(m.properties))"))
                }
            }
            proposals.append(messagesEntry(body))
            owners.append(.send(client, op))
            traffic.sent(header.topic, bytes: body.count)
        case .pull:
            var request = try PullRequest.decode(body)
            request.maxMessages = max(1, min(request.maxMessages, 1024))
            // What one answer may carry: a client's wish above it would let a few pipelined
            // pulls make the node build gigabytes of answers.
            request.maxBytes = min(request.maxBytes, UInt32(max(4 << 20, config.broker.maxMessageBytes)))
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
            case .success(let response):
                let encoded = response.encoded()
                traffic.delivered(request.topic, messages: response.messages.count, bytes: encoded.count)
                out.replies.append(Reply(to: client, opcode: op.rawValue, result: .success(encoded)))
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
        case .aclChange:
            let command = try AclCommand.decode(body)
            if case .put(let account) = command, let problem = account.validate() {
                return fail(ErrorBody(code: ErrorCode.badRequest, message: problem))
            }
            proposals.append((BrokerEntryType.acl, command.encoded()))
            owners.append(.answer(client, op, []))
        case .aclList:
            let list = broker.accounts.keys.sorted().map { key -> Account in
                var a = broker.accounts[key]!
                a.secret = []
                return a
            }
            reply(AccountList(accounts: list))
        case .memberList:
            _ = try Empty.decode(body)
            reply(memberList())
        case .memberChange:
            if let e = try changeMembership(try MemberChangeRequest.decode(body), client: client, out: &out) { return fail(e) }
        case .authHello, .authProof:
            return fail(ErrorBody(code: ErrorCode.badRequest, message: "\(op) is answered by the connection, not the node"))
        case .createTopic:
            let request = try TopicRequest.decode(body)
            if let e = Broker.validateTopicName(request.name) { return fail(e) }
            guard request.queues >= 1, request.queues <= config.broker.maxQueues else {
                return fail(ErrorBody(code: ErrorCode.badRequest, message: "a topic has 1 to \(config.broker.maxQueues) queues, not \(request.queues)"))
            }
            if let existing = broker.topics[request.name], existing != request.queues {
                return fail(ErrorBody(code: ErrorCode.topicExists, message: "topic \(request.name) exists with \(existing) queues"))
            }
            let existingType = broker.topicTypes[request.name] ?? .mixed
            if broker.topics[request.name] != nil, existingType != request.type {
                return fail(ErrorBody(code: ErrorCode.topicExists, message: "topic \(request.name) exists as a \(existingType) topic"))
            }
            proposals.append((BrokerEntryType.admin, AdminCommand.createTopic(name: request.name, queues: request.queues, type: request.type).encoded()))
            owners.append(.answer(client, op, []))
        case .createGroup:
            let request = try GroupRequest.decode(body)
            guard !request.name.isEmpty, request.name.utf8.count <= 255 else {
                return fail(ErrorBody(code: ErrorCode.badRequest, message: "a group name has 1 to 255 bytes"))
            }
            if let fifo = broker.groupSettings[request.name], fifo != request.fifo {
                return fail(ErrorBody(code: ErrorCode.topicExists, message: "group \(request.name) exists as a \(fifo ? "fifo" : "non-fifo") group"))
            }
            proposals.append((BrokerEntryType.admin, AdminCommand.createGroup(name: request.name, fifo: request.fifo).encoded()))
            owners.append(.answer(client, op, []))
        case .listGroups:
            _ = try Empty.decode(body)
            reply(GroupList(names: Set(broker.groupNames()).union(groups.groupNames()).sorted()))
        case .groupProgress:
            let name = try NameRequest.decode(body).name
            let fifo = broker.groupSettings[name]
            let members = groups.members(of: name).map { id in
                GroupProgress.Member(clientID: id, queues: groups.assignment(group: name, clientID: id, queuesOf: { self.broker.topics[$0] }))
            }
            let subscribed = Set(members.flatMap { $0.queues.map(\.topic) })
            reply(
                GroupProgress(
                    group: name, created: fifo != nil, fifo: fifo ?? false, members: members, queues: try broker.progress(group: name, alsoTopics: subscribed)))
        case .traceMessage:
            let ids = try MessageIDRequest.decode(body).ids
            guard ids.count == 1 else { return fail(ErrorBody(code: ErrorCode.badRequest, message: "trace one message at a time")) }
            guard var trace = broker.messageTrace(ids[0]) else {
                return fail(
                    ErrorBody(
                        code: ErrorCode.messageNotFound,
                        message:
                            "\(self.id) keeps no trace of \(ids[0]): its topic was not traced when it was stored, it is not applied here yet, or retention or newer traces removed it"
                    ))
            }
            (trace.leader, trace.term) = try storedBy(trace.id.entryIndex)
            reply(trace)
        case .traceTopic:
            let request = try TraceTopicRequest.decode(body)
            guard broker.topics[request.topic] != nil else {
                return fail(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(request.topic) does not exist"))
            }
            proposals.append((BrokerEntryType.traceTopic, request.encoded()))
            owners.append(.answer(client, op, []))
        case .describeGroup:
            let name = try NameRequest.decode(body).name
            let fifo = broker.groupSettings[name]
            reply(GroupInfo(name: name, created: fifo != nil, fifo: fifo ?? false))
        case .updateTopic:
            let request = try TopicRequest.decode(body)
            guard let existing = broker.topics[request.name] else {
                return fail(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(request.name) does not exist"))
            }
            guard request.queues >= existing, request.queues <= config.broker.maxQueues else {
                return fail(
                    ErrorBody(
                        code: ErrorCode.badRequest,
                        message: "topic \(request.name) has \(existing) queues; it may grow to at most \(config.broker.maxQueues), never shrink"))
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
                    return fail(
                        ErrorBody(code: ErrorCode.messageNotFound, message: "no message \(id) on \(self.id) (not stored, not yet applied here, or deleted)"))
                }
                reply(MessageList(messages: [m]))
            } else {
                reply(MessageList(messages: try broker.messages(topic: request.topic, key: request.key, max: Int(min(request.max, 64)))))
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
            let copy = Broker.sendBack(
                m, group: request.group, delayMillis: request.delayMillis, maxReconsumeTimes: request.maxReconsumeTimes - (early ? 1 : 0))
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
        case .takeSnapshot:
            _ = try Empty.decode(body)
            guard broker.appliedIndex > 0 else { return fail(ErrorBody(code: ErrorCode.badRequest, message: "\(id) has applied nothing to snapshot")) }
            if lastSnapshotIndex != broker.appliedIndex {
                takeSnapshot(LogEntry(index: broker.appliedIndex, term: lastAppliedTerm, type: 0, body: []), into: &out)
                writePendingSnapshot(into: &out)
            }
            reply(SnapshotTaken(index: broker.appliedIndex, written: lastSnapshotIndex == broker.appliedIndex))
        case .transferLeader:
            let target = NodeID(try NameRequest.decode(body).name)
            let voters = replica.raft.membership.voters
            guard voters.contains(target) else {
                return fail(
                    ErrorBody(code: ErrorCode.badRequest, message: "\(target) is not a voter (voters: \(voters.map(\.name).joined(separator: ", ")))"))
            }
            try absorb(replica.transferLeadership(to: target), into: &out)
            reply(Empty())
        case .endTransaction:
            let request = try EndTransactionRequest.decode(body)
            var end = TransactionEnd(group: request.group, id: request.id, decision: request.decision, at: stamp)
            if request.decision == .commit && !isReadyLeader {
                // Its state may lack the half message yet: a commit must carry the copy.
                return fail(ErrorBody(code: ErrorCode.busy, message: "\(id) took over and has not applied its own term's entry yet; retry"))
            }
            if request.decision == .commit, let t = broker.checkTimers.pending[request.id] {
                end.copy = try broker.carryItem(t)  // delivered from this copy (Copies.swift)
            }
            proposals.append((BrokerEntryType.transactionEnd, end.encoded()))
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
                parkedReceives.append(
                    ParkedReceive(client: client, request: request, deadline: now + UInt64(min(request.maxWaitMillis, config.maxPullWaitMillis))))
            }
        case .ack, .changeInvisible:
            let request = try ReceiptRequest.decode(body)
            if op == .ack {
                proposals.append((BrokerEntryType.receipt, ReceiptEntry(group: request.group, handle: request.handle, until: nil, at: stamp).encoded()))
                owners.append(.answer(client, op, []))
            } else {
                if let e = invalidInvisibleTime(request.invisibleMillis) { return fail(e) }
                proposals.append(
                    (
                        BrokerEntryType.receipt,
                        ReceiptEntry(group: request.group, handle: request.handle, until: now + request.invisibleMillis, at: stamp).encoded()
                    ))
                owners.append(.changeInvisible(client))
            }
        case .registerGroup, .topicRoute, .listBrokerGroups:
            return fail(
                ErrorBody(code: ErrorCode.badRequest, message: "\(op) is a name server's operation; \(id) is a broker node (tern nameserver serves it)"))
        case .raft, .peerHello, .peerProof:
            preconditionFailure("peer frames do not reach the client router")
        }
    }

    /// The leader's clock for entries that carry none otherwise, while tracing is on (their
    /// steps are then traced at it); nil otherwise, so that members of an older version, which
    /// do not read it, can replay the log of a group that never traces.
    var stamp: UInt64? { broker.tracingActive ? now : nil }

    func invalidInvisibleTime(_ millis: UInt64) -> ErrorBody? {
        let range = config.invisibleMillisRange
        guard !range.contains(millis) else { return nil }
        return ErrorBody(
            code: ErrorCode.badRequest, message: "an invisible time is \(range.lowerBound) ms to \(range.upperBound / 3_600_000) h, not \(millis) ms")
    }

    func notLeader() -> ErrorBody? {
        guard !isLeader else { return nil }
        let leader = replica.raft.leader
        let detail = NotLeaderDetail(leader: leader?.name ?? "", endpoint: leader.flatMap { endpoint(of: $0) } ?? "", term: replica.raft.term)
        let text = leader.map { "not the leader; \($0) leads term \(replica.raft.term)" } ?? "not the leader; no leader is known in term \(replica.raft.term)"
        return ErrorBody(code: ErrorCode.notLeader, message: text, detail: detail.encoded())
    }

    func propose(_ proposals: [(type: UInt8, body: [UInt8])], owners: [Pending], into out: inout NodeOutput) throws(StorageError) {
        let (result, output) = try replica.propose(proposals)
        switch result {
        case .accepted(let first, _):
            for (k, owner) in owners.enumerated() { pending[first + UInt64(k)] = owner }
        case .notLeader, .transferring:
            let e =
                notLeader()
                ?? ErrorBody(
                    code: ErrorCode.notLeader, message: "leadership is being transferred; retry at the new leader",
                    detail: NotLeaderDetail(leader: "", endpoint: "", term: replica.raft.term).encoded())
            for owner in owners { fail(owner, e, into: &out) }
        }
        try absorb(output, into: &out)
    }

    func fail(_ owner: Pending, _ e: ErrorBody, into out: inout NodeOutput) {
        switch owner {
        case .send(let c, let op): out.replies.append(Reply(to: c, opcode: op.rawValue, result: .failure(e)))
        case .answer(let c, let op, _): out.replies.append(Reply(to: c, opcode: op.rawValue, result: .failure(e)))
        case .offsets(let cs): for c in cs { out.replies.append(Reply(to: c, opcode: Opcode.commitOffset.rawValue, result: .failure(e))) }
        case .receive(let c): out.replies.append(Reply(to: c, opcode: Opcode.receive.rawValue, result: .failure(e)))
        case .changeInvisible(let c): out.replies.append(Reply(to: c, opcode: Opcode.changeInvisible.rawValue, result: .failure(e)))
        case .internalWrite: break
        }
    }
}

extension Node {
    /// Which leader stored entry `index`, in which term, as the log tells: the entry's term, and
    /// the leader named by the first entry of that term (its no-op); ("", 0) when the log no
    /// longer holds the entry, and no name when it no longer holds the term's first entry.
    func storedBy(_ index: UInt64) throws(StorageError) -> (leader: String, term: UInt64) {
        let log = replica.log
        guard index >= log.firstIndex, index <= log.lastIndex, let term = try log.term(at: index) else { return ("", 0) }
        var lo = log.firstIndex
        var hi = index
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if let t = try log.term(at: mid), t >= term { hi = mid } else { lo = mid + 1 }
        }
        guard let first = try log.read(from: lo, maxBytes: 1 << 10).first, first.term == term, first.type == RaftEntryType.noop,
            let name = String(validating: first.body, as: UTF8.self)
        else { return ("", term) }
        return (name, term)
    }
}
