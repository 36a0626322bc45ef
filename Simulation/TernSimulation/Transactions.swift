// Transactions and receive/ack in the simulation.
//
// Transactional producers (group "tx") send half messages to topic "txn", run a local
// transaction recorded in a durable "database" (the world's, surviving producer crashes), and
// end it; some crash before deciding, some after deciding but before telling the broker. Each
// keeps a check poll open at the leader and answers checks from the database (rollback when
// the database has no record: the local transaction never ran; now and then "unknown" while
// faults are on, to make the broker ask again).
//
// Checker (all-or-nothing): on every caught-up node, the "txn" queues hold exactly once every
// message whose commit the broker acknowledged, and nothing whose database record is not
// commit; no half message is left undecided once the faults stop.
//
// Receive/ack consumers (group "rg") take topic "rcv" (its own producer) with invisible times of 0.3-1.5 s, ack
// most messages, forget some (they must come back), extend some, and now and then crash.
// Checker: a delivery of attempt k arrives no sooner than the invisible time that attempt k-1
// was given (its receive request's departure plus the duration: the leader stamps later than
// that); attempts only grow; nothing is delivered again after an acknowledged ack (a later
// attempt than the acknowledged one); and every "rcv" message acknowledged to its producer
// before the faults stopped is received and acknowledged by the group.
import TernBroker
import TernNode
import TernProtocol
import TernRaft
import TernStorage

struct TransactionChecker {
    static let topic = "txn"
    static let queues: UInt32 = 2
    static let group = "tx"
    /// The producers' durable database: body -> local transaction outcome.
    var database: [String: TransactionDecision] = [:]
    /// Bodies whose end (commit or rollback) the broker acknowledged.
    var endedCommit: Set<String> = []
    var endedRollback: Set<String> = []
    var halfSent = 0
    var crashedBeforeDeciding = 0
    var checksAnswered = 0

    /// The end-of-run scan of one caught-up node.
    func check(_ n: Node, node: NodeID, _ messages: inout MessageChecker) throws(StorageError) {
        var seen: Set<String> = []
        var trimmed = false  // retention deleted a queue's front: commits may be gone
        for q in 0..<TransactionChecker.queues {
            var offset: UInt64 = 0
            while true {
                guard
                    case .success(let r) = try n.broker.pull(
                        PullRequest(topic: TransactionChecker.topic, queueID: q, offset: offset, maxMessages: 1024, maxBytes: UInt32.max))
                else { break }
                if r.minOffset > 0 { trimmed = true }
                for m in r.messages {
                    let body = String(decoding: m.message.body, as: UTF8.self)
                    if seen.contains(body) { messages.fail("transaction: \(body) is visible twice on \(node)") }
                    seen.insert(body)
                    if database[body] != .commit {
                        messages.fail(
                            "transaction torn: \(body) is visible on \(node) although its local transaction \(database[body] == nil ? "never ran" : "rolled back")"
                        )
                    }
                }
                if r.messages.isEmpty || r.nextOffset >= r.maxOffset { break }
                offset = r.nextOffset
            }
        }
        for body in endedCommit.sorted() where !seen.contains(body) && !trimmed {
            messages.fail("transaction lost: the commit of \(body) was acknowledged, but it is not visible on \(node)")
        }
        if !n.broker.halfMessages.isEmpty {
            messages.fail("transaction: \(n.broker.halfMessages.count) half messages are still undecided on \(node) after the faults stopped")
        }
    }
}

/// A transactional producer: one half message or end outstanding at a time, plus a check poll.
final class SimTransactionProducer: SimClient {
    let index: Int
    var producerID: UInt64
    var incarnation = 0
    var counter = 0
    var sequences: [UInt32: UInt64] = [:]
    var sender: SendRetrier
    var body = ""
    /// The decided transaction whose end is still to be acknowledged.
    var toEnd: (body: String, id: MessageID, decision: TransactionDecision, fromCheck: Bool)?
    var endRequest: (requestID: UInt64, sentAt: UInt64, node: Int)?
    /// Check answers waiting to go out.
    var answers: [(body: String, id: MessageID, decision: TransactionDecision)] = []
    var poll: (requestID: UInt64, sentAt: UInt64)?
    var nextRequestID: UInt64 = 1_000_000
    var leaderGuess = 0

    init(index: Int, producerID: UInt64) {
        self.index = index
        self.producerID = producerID
        sender = SendRetrier(connection: UInt64(index + 1))
    }

    func timer(_ world: World) {
        world.schedule(.client(index), after: 5_000 + world.below(30_000))
        if world.faultsOn && world.options.faults && world.chance(0.003) {
            // Crash: everything in memory is gone; the database stays.
            world.count("transactional producer crash")
            if sender.outstanding != nil && toEnd == nil { world.transactions.crashedBeforeDeciding += 1 }
            incarnation += 1
            producerID += 1_000_000
            sender = SendRetrier(connection: UInt64(index + 1))
            sender.nextRequestID = UInt64(incarnation) << 40
            nextRequestID = (UInt64(incarnation) << 40) + 1_000_000
            sequences = [:]
            toEnd = nil
            endRequest = nil
            answers = []
            poll = nil
            return
        }
        if poll.map({ world.now >= $0.sentAt + 2_000_000 }) ?? true {
            // No answer (a poll waits at most 1 s): that node may be down. Try the next, as the SDK does.
            if poll != nil { leaderGuess = world.nextNode(after: leaderGuess) }
            poll = (
                request(
                    .pollTransactionChecks, TransactionCheckPoll(group: TransactionChecker.group, clientID: "tp\(index)-\(incarnation)", maxWaitMillis: 1_000),
                    world), world.now
            )
        }
        if let e = endRequest {
            if world.now < e.sentAt + SimProducer.timeoutMicros { return }
            if e.node == leaderGuess { leaderGuess = world.nextNode(after: leaderGuess) }  // no answer: try the next node
        }
        endRequest = nil
        if toEnd == nil, let a = answers.first {
            answers.removeFirst()
            toEnd = (a.body, a.id, a.decision, true)
        }
        if let t = toEnd {
            let id = request(
                .endTransaction, EndTransactionRequest(group: TransactionChecker.group, id: t.id, decision: t.decision, fromCheck: t.fromCheck), world)
            endRequest = (id, world.now, leaderGuess)
            return
        }
        if sender.retryIfDue(world) { return }
        guard world.faultsOn else { return }  // no new transactions once the faults stop
        counter += 1
        body = "tx\(index)-\(incarnation)-\(counter)"
        world.messages.sent.insert(body)
        let queue = UInt32(world.below(UInt64(TransactionChecker.queues)))
        sequences[queue, default: 0] += 1
        world.transactions.halfSent += 1
        sender.start(
            SendRequest(
                topic: TransactionChecker.topic, queueID: queue, producerGroup: TransactionChecker.group, producerID: producerID, sequence: sequences[queue]!,
                messages: [WireMessage(keys: [body], properties: [TransactionProperty.half: "true"], body: Array(body.utf8))]), world)
    }

    private func request(_ op: Opcode, _ body: some WireCodable, _ world: World) -> UInt64 {
        let id = nextRequestID
        nextRequestID += 1
        world.sendRequest(
            to: leaderGuess, client: ClientRef(connection: UInt64(index + 1), requestID: id),
            frame: Frame(opcode: op.rawValue, requestID: id, body: body.encoded()))
        return id
    }

    func reply(_ r: Reply, _ world: World) {
        if r.opcode == Opcode.send.rawValue {
            guard let response = sender.settle(r, world, who: "transactional producer \(index)") else { return }
            if response.firstQueueOffset != SendResponse.scheduled {
                world.messages.fail("transactional producer \(index): half message \(body) was answered as stored in its queue")
            }
            let id = MessageID(entryIndex: response.entryIndex, slot: 0)
            if world.options.faults && world.chance(0.1) {
                // Crash before deciding: no record; the check finds none and rolls back.
                world.transactions.crashedBeforeDeciding += 1
                world.count("transactional producer crash before deciding")
                return
            }
            let decision: TransactionDecision = world.chance(0.6) ? .commit : .rollback
            world.transactions.database[body] = decision
            if world.options.faults && world.chance(0.1) {
                world.count("transactional producer crash after deciding")
                return  // the decision never leaves: the check asks for it
            }
            // A check answer may be ending meanwhile: its reply must not be taken for this one.
            if toEnd == nil { toEnd = (body, id, decision, false) } else { answers.insert((body, id, decision), at: 0) }
            return
        }
        if r.opcode == Opcode.pollTransactionChecks.rawValue {
            guard let p = poll, r.to.requestID == p.requestID else { return }
            poll = nil
            if case .failure(let e) = r.result, e.code == ErrorCode.notLeader { leaderGuess = world.leaderHint(e) }
            guard case .success(let bytes) = r.result, let list = try? MessageList.decode(bytes) else { return }
            for m in list.messages {
                let b = String(decoding: m.message.body, as: UTF8.self)
                if m.topic != TransactionChecker.topic || m.producerGroup != TransactionChecker.group {
                    world.messages.fail("transaction check for \(b) of \(m.topic)/\(m.producerGroup) sent to group \(TransactionChecker.group)")
                }
                // Still being sent by its producer: not known yet.
                let inFlight = world.clients.contains { ($0 as? SimTransactionProducer).map { $0.sender.outstanding != nil && $0.body == b } ?? false }
                let times = Int(m.message.properties[TransactionProperty.checkTimes] ?? "") ?? 0
                if inFlight || (world.faultsOn && times < 3 && world.chance(0.3)) { continue }
                world.transactions.checksAnswered += 1
                answers.append((b, m.id, world.transactions.database[b] ?? .rollback))
            }
            return
        }
        guard let e = endRequest, r.to.requestID == e.requestID, let t = toEnd else { return }
        endRequest = nil
        switch r.result {
        case .success:
            if t.decision == .commit { world.transactions.endedCommit.insert(t.body) } else { world.transactions.endedRollback.insert(t.body) }
            toEnd = nil
        case .failure(let err):
            switch err.code {
            case ErrorCode.notLeader: leaderGuess = world.leaderHint(err)
            case ErrorCode.busy: break
            case ErrorCode.transactionDecided where t.decision == .rollback:
                // Rolled back already (after its checks) or committed: only a commit would be wrong,
                // and the final scan finds it.
                toEnd = nil
            default:
                world.messages.fail("transactional producer \(index): ending \(t.body) (\(t.decision)) refused: \(err)")
                toEnd = nil
            }
        }
    }
}

struct ReceiveChecker {
    static let group = "rg"
    static let topic = "rcv"
    /// body -> attempt -> (receive request sent at, invisible ms, reply arrived at) (microseconds).
    var deliveries: [String: [UInt32: (sentAt: UInt64, bound: UInt64, arrived: UInt64)]] = [:]
    /// body -> the attempt whose ack was acknowledged.
    var acked: [String: UInt32] = [:]
    var received = 0
    var redelivered = 0
    /// "rcv" messages acknowledged to their producer when the faults stopped: the group must
    /// receive and acknowledge each.
    var expected: Set<String> = []
    /// Bodies whose acknowledgement was in flight when its consumer crashed (it may have applied).
    var ambiguous: Set<String> = []

    mutating func delivered(_ body: String, attempt: UInt32, sentAt: UInt64, invisibleMillis: UInt64, at now: UInt64, _ messages: inout MessageChecker) {
        received += 1
        if attempt > 1 { redelivered += 1 }
        if let a = acked[body], attempt > a {
            messages.fail("receive: \(body) delivered again (attempt \(attempt)) after its attempt \(a) was acknowledged")
        }
        var map = deliveries[body] ?? [:]
        if map[attempt] != nil { messages.fail("receive: \(body) delivered twice as attempt \(attempt)") }
        map[attempt] = (sentAt, sentAt + invisibleMillis * 1000, now)
        // Node clocks count whole milliseconds (the leader stamps `now / 1000`), so a time
        // given as "from now" may end up to 1 ms before the microsecond bound.
        if attempt > 1, let before = map[attempt - 1], now + 1_000 <= before.bound {
            messages.fail("receive: \(body) delivered again (attempt \(attempt)) at \(now / 1000) ms, invisible until at least \(before.bound / 1000) ms")
        }
        if let after = map[attempt + 1], after.arrived + 1_000 <= sentAt + invisibleMillis * 1000 {
            messages.fail(
                "receive: \(body) delivered again (attempt \(attempt + 1)) at \(after.arrived / 1000) ms, invisible until at least \((sentAt + invisibleMillis * 1000) / 1000) ms"
            )
        }
        deliveries[body] = map
    }

    /// An acknowledged change of the invisible time of `attempt`: the next attempt comes no sooner.
    mutating func extended(_ body: String, attempt: UInt32, sentAt: UInt64, invisibleMillis: UInt64) {
        guard var d = deliveries[body]?[attempt] else { return }
        d.bound = max(d.bound, sentAt + invisibleMillis * 1000)
        deliveries[body]![attempt] = d
    }
}

/// A receive/ack consumer of topic "rcv", group "rg": one receive at a time, and an
/// acknowledgement (or a change of invisible time) in flight for each delivery in hand.
final class SimReceiveConsumer: SimClient {
    let index: Int
    var leaderGuess = 0
    var nextRequestID: UInt64 = 1
    /// Deliveries in hand to acknowledge (or extend), and whether a request about it is in flight.
    /// `acking`: an acknowledgement was sent; retries acknowledge again (never extend, which
    /// would fail on a message the lost acknowledgement consumed).
    var inHand: [(body: String, handle: ReceiptHandle, attempt: UInt32, invisibleMillis: UInt64, busy: Bool, acking: Bool)] = []
    enum Kind {
        case receive(invisibleMillis: UInt64)
        case ack(body: String, attempt: UInt32)
        case extend(body: String, attempt: UInt32, invisibleMillis: UInt64)
    }
    var outstanding: [UInt64: (kind: Kind, sentAt: UInt64)] = [:]
    var receiving = false

    init(index: Int) { self.index = index }

    func timer(_ world: World) {
        world.schedule(.client(index), after: 5_000 + world.below(35_000))
        for id in outstanding.keys.sorted() where world.now >= outstanding[id]!.sentAt + SimConsumer.timeoutMicros {
            switch outstanding[id]!.kind {
            case .receive: receiving = false
            case .ack(let body, let attempt), .extend(let body, let attempt, _):
                if let k = inHand.firstIndex(where: { $0.body == body && $0.attempt == attempt }) { inHand[k].busy = false }
            }
            outstanding[id] = nil
            leaderGuess = world.randomNode()
        }
        if world.faultsOn && world.options.faults && world.chance(0.002) {
            world.count("receive consumer crash")
            for d in inHand where d.acking { world.receives.ambiguous.insert(d.body) }
            inHand = []
            outstanding = [:]
            receiving = false
            return
        }
        for k in inHand.indices where !inHand[k].busy {
            let d = inHand[k]
            inHand[k].busy = true
            if !d.acking && world.chance(0.1) {
                let longer = d.invisibleMillis + world.below(1_000)
                request(
                    .extend(body: d.body, attempt: d.attempt, invisibleMillis: longer), .changeInvisible,
                    ReceiptRequest(group: ReceiveChecker.group, handle: d.handle, invisibleMillis: longer), world)
            } else {
                inHand[k].acking = true
                request(.ack(body: d.body, attempt: d.attempt), .ack, ReceiptRequest(group: ReceiveChecker.group, handle: d.handle), world)
            }
        }
        guard !receiving else { return }
        receiving = true
        let invisible = 300 + world.below(1_200)
        request(
            .receive(invisibleMillis: invisible), .receive,
            ReceiveRequest(
                group: ReceiveChecker.group, topic: ReceiveChecker.topic, maxMessages: 8, invisibleMillis: invisible, maxWaitMillis: world.chance(0.3) ? 200 : 0
            ), world)
    }

    private func request(_ kind: Kind, _ op: Opcode, _ body: some WireCodable, _ world: World) {
        let id = nextRequestID
        nextRequestID += 1
        outstanding[id] = (kind, world.now)
        world.sendRequest(
            to: leaderGuess, client: ClientRef(connection: UInt64(index + 1), requestID: id),
            frame: Frame(opcode: op.rawValue, requestID: id, body: body.encoded()))
    }

    func reply(_ r: Reply, _ world: World) {
        guard let o = outstanding.removeValue(forKey: r.to.requestID) else { return }
        var settled: (body: String, attempt: UInt32)?
        switch o.kind {
        case .receive: receiving = false
        case .ack(let body, let attempt), .extend(let body, let attempt, _): settled = (body, attempt)
        }
        func release() {
            guard let s = settled, let k = inHand.firstIndex(where: { $0.body == s.body && $0.attempt == s.attempt }) else { return }
            inHand[k].busy = false
        }
        func drop() {
            guard let s = settled else { return }
            inHand.removeAll { $0.body == s.body && $0.attempt == s.attempt }
        }
        if case .failure(let e) = r.result {
            switch e.code {
            case ErrorCode.notLeader:
                leaderGuess = world.leaderHint(e)
                release()
            case ErrorCode.busy, ErrorCode.topicNotFound: release()
            case ErrorCode.receiptExpired where settled != nil:
                // Its invisible time ended and it was delivered again: the other delivery owns it.
                drop()
            default:
                world.messages.fail("receive consumer \(index): \(e)")
                drop()
            }
            return
        }
        guard case .success(let bytes) = r.result else { return }
        switch o.kind {
        case .receive(let invisible):
            guard let response = try? ReceiveResponse.decode(bytes) else { return world.messages.fail("receive consumer: malformed receive response") }
            for d in response.deliveries {
                let body = String(decoding: d.message.message.body, as: UTF8.self)
                world.receives.delivered(body, attempt: d.attempt, sentAt: o.sentAt, invisibleMillis: invisible, at: world.now, &world.messages)
                world.messages.deliver(d.message, by: world.nodes[leaderGuess].id)
                // Now and then processing fails silently: the message must come back.
                if world.chance(0.05) { continue }
                inHand.append((body, d.handle, d.attempt, invisible, false, false))
            }
        case .ack(let body, let attempt):
            world.receives.acked[body] = max(world.receives.acked[body] ?? 0, attempt)
            drop()
        case .extend(let body, let attempt, let invisible):
            world.receives.extended(body, attempt: attempt, sentAt: o.sentAt, invisibleMillis: invisible)
            if let k = inHand.firstIndex(where: { $0.body == body && $0.attempt == attempt }) { inHand[k].invisibleMillis = invisible }
            release()
        }
    }
}
