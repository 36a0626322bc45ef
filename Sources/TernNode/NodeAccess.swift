// Access control at the node (docs/security.md). The shell authenticates a connection (its
// challenge-response) and tells the node whom it speaks for; the node decides each request
// against the accounts in the broker state, which every replica applied from the log in the
// same order, so every node decides alike, before and after a failover.
import TernBroker
import TernProtocol

/// Whom a client connection speaks for.
public enum Principal: Equatable, Sendable, CustomStringConvertible {
    /// The account of the node's `--acl-admin` file: every right, on this node only.
    case root(String)
    /// A replicated account, by access key, with the secret the connection proved it holds.
    /// Looked up at each request: a deleted account, a withdrawn right or a changed secret
    /// takes effect at once, also for connections already open.
    case account(String, secret: [UInt8])

    /// The access key; never the secret.
    public var description: String {
        switch self {
        case .root(let key): "\(key) (--acl-admin)"
        case .account(let key, _): key
        }
    }
}

extension Node {
    /// The connection proved it holds `principal`'s secret.
    public func authenticated(_ connection: UInt64, as principal: Principal) {
        principals[connection] = principal
    }

    /// Held requests (long polls, receives, transaction check polls) of connections whose
    /// account no longer allows them are answered with why, once an account change applied.
    func recheckHeld(into out: inout NodeOutput) {
        guard config.aclEnabled else { return }
        func refused(_ op: Opcode, _ body: [UInt8], _ client: ClientRef) -> Bool {
            guard let e = (try? authorize(op, body: body, client: client)) ?? nil else { return false }
            out.replies.append(Reply(to: client, opcode: op.rawValue, result: .failure(e)))
            return true
        }
        parked.removeAll { refused(.pull, $0.request.encoded(), $0.client) }
        parkedReceives.removeAll { refused(.receive, $0.request.encoded(), $0.client) }
        checkPolls.removeAll { refused(.pollTransactionChecks, TransactionCheckPoll(group: $0.group, clientID: "", maxWaitMillis: 0).encoded(), $0.client) }
    }

    /// Why the connection may not make this request; nil when it may (or access control is off).
    func authorize(_ op: Opcode, body: [UInt8], client: ClientRef) throws(WireError) -> ErrorBody? {
        guard config.aclEnabled else { return nil }
        guard let principal = principals[client.connection] else {
            return ErrorBody(
                code: ErrorCode.unauthenticated,
                message: "this group checks access: connect with an account's credentials (--credentials FILE; docs/security.md)")
        }
        guard case .account(let key, let proved) = principal else { return nil }
        guard let account = broker.accounts[key] else {
            return ErrorBody(code: ErrorCode.unauthenticated, message: "account \(key) no longer exists")
        }
        guard account.secret == proved else {
            return ErrorBody(code: ErrorCode.unauthenticated, message: "account \(key) has a new secret: connect again with it")
        }
        if account.admin { return nil }
        func refuse(_ what: String) -> ErrorBody {
            ErrorBody(code: ErrorCode.permissionDenied, message: "account \(key) may not \(what)")
        }
        // A group's retry and dead-letter topics belong to the group: its rights are theirs.
        func topic(_ name: String, _ need: Rights, _ verb: String) -> ErrorBody? {
            for prefix in ["%RETRY%", "%DLQ%"] where name.hasPrefix(prefix) {
                return account.rights(group: String(name.dropFirst(prefix.count))).isSuperset(of: need) ? nil : refuse("\(verb) topic \(name)")
            }
            return account.rights(topic: name).isSuperset(of: need) ? nil : refuse("\(verb) topic \(name)")
        }
        func group(_ name: String, _ need: Rights, _ verb: String) -> ErrorBody? {
            account.rights(group: name).isSuperset(of: need) ? nil : refuse("\(verb) group \(name)")
        }
        func consume(_ g: String, _ topics: [String]) -> ErrorBody? {
            if let e = group(g, .subscribe, "consume as") { return e }
            for t in topics { if let e = topic(t, .subscribe, "consume from") { return e } }
            return nil
        }
        switch op {
        case .queryRoute, .clusterStatus, .listTopics, .describeTopic, .describeGroup, .authHello, .authProof, .registerGroup, .topicRoute,
            .listBrokerGroups:
            return nil
        case .send:
            var r = WireReader(body)
            return topic(try SendHeader(from: &r).topic, .publish, "send to")
        case .pull:
            return topic(try PullRequest.decode(body).topic, .subscribe, "consume from")
        case .heartbeat:
            let h = try HeartbeatRequest.decode(body)
            return consume(h.group, h.topics)
        case .commitOffset:
            let c = try CommitOffsetRequest.decode(body)
            return consume(c.group, Set(c.offsets.keys.map(\.topic)).sorted())
        case .queryOffset:
            let q = try QueryOffsetRequest.decode(body)
            return consume(q.group, [q.queue.topic])
        case .lockQueues, .unlockQueues:
            let l = try LockRequest.decode(body)
            return consume(l.group, Set(l.queues.map(\.topic)).sorted())
        case .unregister:
            return group(try UnregisterRequest.decode(body).group, .subscribe, "consume as")
        case .sendBack:
            // The message given back is copied into the group's retry topic: the account must
            // be able to consume it where it is.
            let request = try SendBackRequest.decode(body)
            if let e = group(request.group, .subscribe, "consume as") { return e }
            guard let m = try? broker.message(request.id) else { return nil }
            return topic(m.topic, .subscribe, "give back a message of")
        case .receive:
            let q = try ReceiveRequest.decode(body)
            return consume(q.group, [q.topic])
        case .ack, .changeInvisible:
            let q = try ReceiptRequest.decode(body)
            return consume(q.group, [q.handle.queue.topic])
        case .endTransaction:
            return group(try EndTransactionRequest.decode(body).group, .publish, "end transactions of producer")
        case .pollTransactionChecks:
            return group(try TransactionCheckPoll.decode(body).group, .publish, "answer transaction checks of producer")
        case .queryMessage:
            let q = try QueryMessageRequest.decode(body)
            return q.id == nil ? topic(q.topic, .subscribe, "look up messages of") : refuse("look messages up by id (admin right)")
        case .createTopic, .deleteTopic, .updateTopic, .transferLeader, .resetOffset, .recall, .takeSnapshot, .aclChange, .aclList, .memberChange, .memberList,
            .createGroup, .listGroups, .groupProgress, .traceMessage, .traceTopic:
            return refuse("\(op) (admin right)")
        case .raft, .peerHello, .peerProof:
            return refuse("send peer frames")
        }
    }
}
