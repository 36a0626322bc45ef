// Simulated clients and the message checkers. Clients speak the real protocol bodies to the
// nodes (frames through `Node.handle`), over links with latency and loss, and retry the way the
// SDK does: after a timeout or a NOT_LEADER answer, at the leader named or another node.
//
// Checkers (each shown to catch a planted bug, docs/simulation.md):
//  - no acknowledged message lost: at the end, every caught-up node holds each acknowledged
//    message at the queue offset and id its receipt named;
//  - per-queue order equals log order: ids (log positions) increase along every queue;
//  - no unexpected message: every stored or delivered body is one a producer sent;
//  - no duplicates: with idempotent producers each body is stored once, retries included;
//  - consistent reads: a (queue, offset) delivered by any node is always the same message;
//  - committed offsets never go backwards: a group's offset read back after a commit was
//    acknowledged is at least what was committed.
import TernBroker
import TernNode
import TernProtocol
import TernRaft
import TernStorage

protocol SimClient: AnyObject {
    var index: Int { get }
    func timer(_ world: World)
    func reply(_ r: Reply, _ world: World)
}

struct MessageChecker {
    var violations: [String] = []
    /// Every body a producer tried to send.
    var sent: Set<String> = []
    /// Acknowledged body -> where its receipt says it is.
    var acked: [String: (topic: String, queue: UInt32, offset: UInt64, id: MessageID)] = [:]
    /// Acknowledged delayed bodies -> the latest their release is due (ack time + delay, ms).
    var delayed: [String: (queue: UInt32, dueBy: UInt64)] = [:]
    /// What was delivered at each (queue, offset), by any node.
    var seen: [QueueRef: [UInt64: (id: MessageID, body: String)]] = [:]
    var delivered = 0
    /// Messages in the dead-letter queue at the end (the largest count over the nodes).
    var deadLettered = 0
    /// Acknowledged messages found below their queue's minimum at the end: deleted by retention.
    var retainedAway = 0

    mutating func fail(_ text: String) {
        if violations.count < 5 { violations.append(text) }
    }

    mutating func acknowledged(_ body: String, topic: String = SimProducer.topic, queue: UInt32, offset: UInt64, id: MessageID) {
        if let earlier = acked[body], (earlier.topic, earlier.queue, earlier.offset, earlier.id) != (topic, queue, offset, id) {
            fail(
                "idempotent retry of \(body) acknowledged at \(QueueRef(topic: topic, queueID: queue))@\(offset) \(id), first at \(earlier.topic)#\(earlier.queue)@\(earlier.offset) \(earlier.id)"
            )
        }
        acked[body] = (topic, queue, offset, id)
    }

    mutating func deliver(_ m: ReceivedMessage, by node: NodeID) {
        delivered += 1
        let body = String(decoding: m.message.body, as: UTF8.self)
        let q = QueueRef(topic: m.topic, queueID: m.queueID)
        if !sent.contains(body) { fail("unexpected message: \(node) delivered \(body) (\(m.id)) at \(q)@\(m.queueOffset), which no producer sent") }
        if let s = seen[q]?[m.queueOffset] {
            if s.id != m.id || s.body != body {
                fail("inconsistent read: \(q)@\(m.queueOffset) was \(s.body) (\(s.id)), \(node) delivered \(body) (\(m.id))")
            }
        } else {
            seen[q, default: [:]][m.queueOffset] = (m.id, body)
        }
    }

    /// Retries and dead letters on one node: each always-failing message is retried with
    /// reconsume counts 1, 2, ... each once, never past the maximum, and reaches the
    /// dead-letter queue at most once, only after every retry, with the count one past the maximum.
    mutating func checkRetries(_ n: Node, node: NodeID, group: String) throws(StorageError) {
        var trimmed = false  // retention deleted the retry queue's front: earlier retries may be gone
        func scan(_ topic: String) throws(StorageError) -> [(body: String, times: Int)] {
            guard case .success(let r) = try n.broker.pull(PullRequest(topic: topic, queueID: 0, offset: 0, maxMessages: 1024, maxBytes: UInt32.max)) else {
                return []
            }
            if r.minOffset > 0 { trimmed = true }
            var out = r.messages.map {
                (String(decoding: $0.message.body, as: UTF8.self), Int($0.message.properties[RetryProperty.reconsumeTimes] ?? "") ?? -1)
            }
            var next = r.nextOffset
            while next < r.maxOffset {
                guard case .success(let more) = try n.broker.pull(PullRequest(topic: topic, queueID: 0, offset: next, maxMessages: 1024, maxBytes: UInt32.max)),
                    !more.messages.isEmpty
                else { break }
                out += more.messages.map {
                    (String(decoding: $0.message.body, as: UTF8.self), Int($0.message.properties[RetryProperty.reconsumeTimes] ?? "") ?? -1)
                }
                next = more.nextOffset
            }
            return out
        }
        let max = Int(SimConsumer.maxReconsumeTimes)
        var retries: [String: [Int]] = [:]
        for (body, times) in try scan("%RETRY%\(group)") {
            if !SimConsumer.alwaysFails(body) { fail("retry: \(body) was retried on \(node) although its consumer never failed it") }
            if times < 1 || times > max { fail("retry: \(body) retried with reconsume count \(times) on \(node); the maximum is \(max)") }
            if retries[body]?.contains(times) == true { fail("retry: \(body) retried twice with reconsume count \(times) on \(node)") }
            retries[body, default: []].append(times)
        }
        var dead: Set<String> = []
        for (body, times) in try scan("%DLQ%\(group)") {
            if dead.contains(body) { fail("dead letter: \(body) is in the DLQ twice on \(node)") }
            dead.insert(body)
            if times != max + 1 {
                fail("dead letter: \(body) reached the DLQ with reconsume count \(times) on \(node), expected \(max + 1) (after exactly \(max) retries)")
            }
            if Set(retries[body] ?? []) != Set(1...max) && !trimmed {
                fail("dead letter: \(body) reached the DLQ after retries \((retries[body] ?? []).sorted()) on \(node), expected 1...\(max)")
            }
        }
        deadLettered = Swift.max(deadLettered, dead.count)
    }

    /// The end-of-run scan of one node's queues. Delayed messages due a second before
    /// `releasedBy` (ms) must have been released.
    mutating func checkStored(_ n: Node, node: NodeID, releasedBy: UInt64) throws(StorageError) {
        var where_: [String: (topic: String, queue: UInt32, offset: UInt64, id: MessageID)] = [:]
        // Each queue's minimum on this node: below it messages are gone by retention.
        var minimum: [QueueRef: UInt64] = [:]
        for topic in [SimProducer.topic, SimOrderedProducer.topic, ReceiveChecker.topic] {
            for q in 0..<SimProducer.queues {
                var offset: UInt64 = 0
                var last: MessageID?
                while true {
                    let request = PullRequest(topic: topic, queueID: q, offset: offset, maxMessages: 1024, maxBytes: UInt32.max)
                    guard case .success(let r) = try n.broker.pull(request) else { break }
                    minimum[QueueRef(topic: topic, queueID: q)] = r.minOffset
                    for m in r.messages {
                        let body = String(decoding: m.message.body, as: UTF8.self)
                        // A delayed message takes its place when its release applies, so its id
                        // (where it was stored) is out of sequence by design; the others follow the log.
                        if m.message.properties["TIMER_DELAY_MS"] == nil {
                            if let l = last, !(l < m.id) {
                                fail("queue order: on \(node), \(topic)#\(q)@\(m.queueOffset) holds \(m.id) after \(l) (log order broken)")
                            }
                            last = m.id
                        }
                        if !sent.contains(body) { fail("unexpected message: \(node) stores \(body) at \(topic)#\(q)@\(m.queueOffset)") }
                        if let w = where_[body] {
                            fail(
                                "duplicate: \(node) stores \(body) twice (\(w.topic)#\(w.queue)@\(w.offset) and \(topic)#\(q)@\(m.queueOffset)) although its producer is idempotent"
                            )
                        }
                        where_[body] = (topic, q, m.queueOffset, m.id)
                    }
                    if r.messages.isEmpty || r.nextOffset >= r.maxOffset { break }
                    offset = r.nextOffset
                }
            }
        }
        for body in delayed.keys.sorted() {
            let d = delayed[body]!
            if let w = where_[body] {
                if w.queue != d.queue { fail("delayed message \(body) released into #\(w.queue), sent to #\(d.queue)") }
            } else if (minimum[QueueRef(topic: SimProducer.topic, queueID: d.queue)] ?? 0) > 0 {
                retainedAway += 1  // released, then deleted by retention (where, the checker does not know)
            } else if d.dueBy + 1_000 < releasedBy {
                fail("lost: delayed message \(body), due by \(d.dueBy) ms, is not released on \(node) at \(releasedBy) ms")
            }
        }
        for body in acked.keys.sorted() {
            let a = acked[body]!
            if a.offset != SendResponse.scheduled, a.offset < minimum[QueueRef(topic: a.topic, queueID: a.queue)] ?? 0 {
                retainedAway += 1
                continue
            }
            guard let w = where_[body] else {
                fail("lost: \(body), acknowledged at \(a.topic)#\(a.queue)@\(a.offset) (\(a.id)), is not stored on \(node)")
                continue
            }
            if (w.topic, w.queue, w.offset, w.id) != (a.topic, a.queue, a.offset, a.id) {
                fail(
                    "lost: \(body) was acknowledged at \(a.topic)#\(a.queue)@\(a.offset) (\(a.id)); \(node) has it at \(w.topic)#\(w.queue)@\(w.offset) (\(w.id))"
                )
            }
        }
    }
}

/// One send outstanding, retried with the same body (so the same producer id and sequence)
/// until it is answered: after a timeout at a random node, after NOT_LEADER at the node named.
struct SendRetrier {
    let connection: UInt64
    var guess = 0
    var nextRequestID: UInt64 = 1
    var outstanding: (requestID: UInt64, request: SendRequest, sentAt: UInt64, retryNow: Bool)?

    init(connection: UInt64) { self.connection = connection }

    /// Sends again when due; true while a send is outstanding (nothing new may start).
    mutating func retryIfDue(_ world: World) -> Bool {
        guard let o = outstanding else { return false }
        guard o.retryNow || world.now >= o.sentAt + SimProducer.timeoutMicros else { return true }
        if !o.retryNow { guess = world.randomNode() }
        start(o.request, world)
        return true
    }

    mutating func start(_ request: SendRequest, _ world: World) {
        let id = nextRequestID
        nextRequestID += 1
        outstanding = (id, request, world.now, false)
        world.sendRequest(
            to: guess, client: ClientRef(connection: connection, requestID: id),
            frame: Frame(opcode: Opcode.send.rawValue, requestID: id, body: request.encoded()))
    }

    /// The response when `r` acknowledges the outstanding send. A stale reply, a failure that
    /// is retried, and a refusal (recorded as a violation) give nil.
    mutating func settle(_ r: Reply, _ world: World, who: String) -> SendResponse? {
        guard let o = outstanding, r.to.requestID == o.requestID else { return nil }
        switch r.result {
        case .success(let body):
            outstanding = nil
            guard let response = try? SendResponse.decode(body), response.count == UInt32(o.request.messages.count) else {
                world.messages.fail("\(who): a malformed send response")
                return nil
            }
            world.checker.acknowledge(index: response.entryIndex, at: world.now)
            return response
        case .failure(let e):
            switch e.code {
            case ErrorCode.notLeader:
                guess = world.leaderHint(e)
                outstanding!.retryNow = true
            case ErrorCode.busy, ErrorCode.topicNotFound:
                outstanding!.retryNow = true
            default:
                world.messages.fail("\(who): send refused: \(e)")
                outstanding = nil
            }
            return nil
        }
    }
}

/// An idempotent producer: one send (1 to 3 messages) outstanding, retried with the same
/// sequence until it is acknowledged.
final class SimProducer: SimClient {
    static let topic = "sim"
    static let queues: UInt32 = 4
    static let timeoutMicros: UInt64 = 300_000

    let index: Int
    let producerID: UInt64
    let topic: String
    var counter = 0
    var sequences: [UInt32: UInt64] = [:]
    var sender: SendRetrier
    /// The outstanding send's bodies and delay.
    var bodies: [String] = []
    var delay: UInt64?
    /// Turns tracing of the topic on once it exists (`SimulationOptions.messageTrace`); asked
    /// again at each timer until a leader confirms.
    var turnsTracingOn = false
    var tracingRequest: UInt64?
    var tracingTarget = 0
    static let tracingRequestBase: UInt64 = 1 << 40

    init(index: Int, producerID: UInt64, topic: String = SimProducer.topic) {
        self.index = index
        self.producerID = producerID
        self.topic = topic
        sender = SendRetrier(connection: UInt64(index + 1))
    }

    func timer(_ world: World) {
        world.schedule(.client(index), after: 5_000 + world.below(40_000))
        if turnsTracingOn && counter > 0 {
            // The topic exists once a send was made (auto-created): trace it.
            let id = SimProducer.tracingRequestBase + UInt64(counter)
            tracingRequest = id
            world.sendRequest(
                to: tracingTarget, client: ClientRef(connection: sender.connection, requestID: id),
                frame: Frame(opcode: Opcode.traceTopic.rawValue, requestID: id, body: TraceTopicRequest(topic: topic, on: true).encoded()))
        }
        if sender.retryIfDue(world) { return }
        let queue = UInt32(world.below(UInt64(SimProducer.queues)))
        sequences[queue, default: 0] += 1
        let n = 1 + Int(world.below(3))
        bodies = []
        for _ in 0..<n {
            counter += 1
            bodies.append("p\(index)-\(counter)")
        }
        for b in bodies { world.messages.sent.insert(b) }
        // A fifth of the sends are delayed by 0.1-2 s.
        delay = world.chance(0.2) ? 100 + world.below(1_900) : nil
        let properties = delay.map { ["TIMER_DELAY_MS": String($0)] } ?? [:]
        let request = SendRequest(
            topic: topic, queueID: queue, producerGroup: "sim", producerID: producerID, sequence: sequences[queue]!,
            messages: bodies.map { WireMessage(tag: "t", keys: [$0], properties: properties, bornTimestamp: world.millis, body: Array($0.utf8)) })
        sender.start(request, world)
    }

    func reply(_ r: Reply, _ world: World) {
        if r.to.requestID >= SimProducer.tracingRequestBase {
            guard r.to.requestID == tracingRequest else { return }
            switch r.result {
            case .success: turnsTracingOn = false
            case .failure(let e): tracingTarget = e.code == ErrorCode.notLeader ? world.leaderHint(e) : world.randomNode()
            }
            return
        }
        guard let response = sender.settle(r, world, who: "producer \(index)") else { return }
        let scheduled = response.firstQueueOffset == SendResponse.scheduled
        if scheduled != (delay != nil) {
            world.messages.fail("producer \(index): a send with delay \(delay.map(String.init) ?? "none") was answered \(scheduled ? "scheduled" : "stored")")
        }
        for (k, b) in bodies.enumerated() {
            if let d = delay {
                world.messages.delayed[b] = (response.queueID, world.millis + d)
            } else {
                world.messages.acknowledged(
                    b, topic: topic, queue: response.queueID, offset: response.firstQueueOffset + UInt64(k),
                    id: MessageID(entryIndex: response.entryIndex, slot: UInt16(k)))
            }
        }
    }
}

/// A consumer of every queue of the topic in one group, and of its retry topic: reads committed
/// offsets from the leader, pulls from any node (sometimes long polling), commits now and then,
/// and now and then restarts, reading its offsets back. Messages that "always fail" (producer
/// p1's every eighth) are given back until they reach the dead-letter queue; a queue's offset is
/// committed only up to its first message not yet given back.
final class SimConsumer: SimClient {
    static let timeoutMicros: UInt64 = 300_000
    static let maxReconsumeTimes: UInt32 = 3
    let index: Int
    let group: String
    var positions: [QueueRef: UInt64] = [:]
    var committed: [QueueRef: UInt64] = [:]
    var acknowledgedCommit: [QueueRef: UInt64] = [:]
    var lastCommit: UInt64 = 0
    var rotation = 0
    var nextRequestID: UInt64 = 1
    var leaderGuess = 0
    /// Delivered messages to give back, oldest first.
    var giveBacks: [ReceivedMessage] = []
    enum Kind { case query(QueueRef), pull(QueueRef, UInt64, node: Int), commit([QueueRef: UInt64]), giveBack(MessageID) }
    var outstanding: (requestID: UInt64, kind: Kind, sentAt: UInt64)?

    init(index: Int, group: String) {
        self.index = index
        self.group = group
    }

    var queues: [QueueRef] {
        (0..<SimProducer.queues).map { QueueRef(topic: SimProducer.topic, queueID: $0) } + [QueueRef(topic: "%RETRY%\(group)", queueID: 0)]
    }

    static func alwaysFails(_ body: String) -> Bool {
        body.hasPrefix("p1-") && (Int(body.dropFirst(3)) ?? 1) % 8 == 0
    }

    /// What may be committed for `q`: its position, but not past a message still to give back.
    func committable(_ q: QueueRef) -> UInt64? {
        guard let p = positions[q] else { return nil }
        let held = giveBacks.filter { $0.topic == q.topic && $0.queueID == q.queueID }.map(\.queueOffset).min()
        return min(p, held ?? p)
    }

    func timer(_ world: World) {
        world.schedule(.client(index), after: 5_000 + world.below(30_000))
        if let o = outstanding {
            guard world.now >= o.sentAt + SimConsumer.timeoutMicros else { return }
            leaderGuess = world.randomNode()
            outstanding = nil
        }
        if world.faultsOn && world.chance(0.01) {
            // Restart: what was pulled but not committed is delivered again later.
            positions = [:]
            committed = [:]
            giveBacks = []
        }
        if let q = queues.first(where: { positions[$0] == nil }) {
            request(.query(q), .queryOffset, QueryOffsetRequest(group: group, queue: q), to: leaderGuess, world)
            return
        }
        if let m = giveBacks.first {
            let delay = 100 + world.below(200)
            request(
                .giveBack(m.id), .sendBack, SendBackRequest(group: group, id: m.id, delayMillis: delay, maxReconsumeTimes: SimConsumer.maxReconsumeTimes),
                to: leaderGuess, world)
            return
        }
        var changed: [QueueRef: UInt64] = [:]
        for q in queues { if let c = committable(q), committed[q] != c { changed[q] = c } }
        if !changed.isEmpty && world.now >= lastCommit + 200_000 {
            lastCommit = world.now
            request(.commit(changed), .commitOffset, CommitOffsetRequest(group: group, offsets: changed), to: leaderGuess, world)
            return
        }
        rotation = (rotation + 1) % queues.count
        let q = queues[rotation]
        let node = world.randomNode()
        let offset = positions[q]!
        let wait: UInt32 = world.chance(0.3) ? 100 : 0
        request(
            .pull(q, offset, node: node), .pull, PullRequest(topic: q.topic, queueID: q.queueID, offset: offset, maxMessages: 8, maxWaitMillis: wait), to: node,
            world)
    }

    private func request(_ kind: Kind, _ op: Opcode, _ body: some WireCodable, to node: Int, _ world: World) {
        let id = nextRequestID
        nextRequestID += 1
        outstanding = (id, kind, world.now)
        world.sendRequest(
            to: node, client: ClientRef(connection: UInt64(index + 1), requestID: id), frame: Frame(opcode: op.rawValue, requestID: id, body: body.encoded()))
    }

    func reply(_ r: Reply, _ world: World) {
        guard let o = outstanding, r.to.requestID == o.requestID else { return }
        outstanding = nil
        guard case .success(let body) = r.result else {
            if case .failure(let e) = r.result, e.code == ErrorCode.notLeader {
                leaderGuess = world.leaderHint(e)
            } else if case .failure(let e) = r.result, case .giveBack(let id) = o.kind, e.code == ErrorCode.messageNotFound,
                world.nodes.contains(where: { ($0.node?.broker.trimIndex ?? 0) > id.entryIndex })
            {
                giveBacks.removeAll { $0.id == id }  // deleted by retention before it was given back
                world.count("give-back of a message retention deleted")
            } else if case .failure(let e) = r.result, e.code != ErrorCode.busy && e.code != ErrorCode.topicNotFound {
                world.messages.fail("consumer: \(e)")
            }
            return
        }
        switch o.kind {
        case .query(let q):
            guard let response = try? QueryOffsetResponse.decode(body) else { return world.messages.fail("consumer: malformed offset response") }
            let offset = response.offset ?? 0
            if let acked = acknowledgedCommit[q], offset < acked {
                world.messages.fail("offset went backwards: group \(group) committed \(acked) for \(q) (acknowledged), the leader now answers \(offset)")
            }
            positions[q] = offset
            committed[q] = offset
        case .commit(let map):
            for (q, o) in map {
                acknowledgedCommit[q] = max(acknowledgedCommit[q] ?? 0, o)
                committed[q] = o
            }
        case .giveBack(let id):
            giveBacks.removeAll { $0.id == id }
        case .pull(let q, let offset, let node):
            guard let response = try? PullResponse.decode(body) else { return world.messages.fail("consumer: malformed pull response") }
            guard positions[q] == offset else { return }  // a restart meanwhile
            var expected = max(offset, response.minOffset)  // below the minimum: gone by retention
            for m in response.messages {
                if m.topic != q.topic || m.queueID != q.queueID || m.queueOffset != expected {
                    let n = world.nodes[node].node
                    world.messages.fail(
                        "pull of \(q)@\(offset) from \(world.nodes[node].id) returned \(m.topic)#\(m.queueID)@\(m.queueOffset), expected offset \(expected) (queue \(response.minOffset)..<\(response.maxOffset); log from \(n?.replica.log.firstIndex ?? 0), trim \(n?.broker.trimIndex ?? 0))"
                    )
                }
                world.messages.deliver(m, by: world.nodes[node].id)
                if SimConsumer.alwaysFails(String(decoding: m.message.body, as: UTF8.self)) { giveBacks.append(m) }
                expected = m.queueOffset + 1
            }
            positions[q] = response.nextOffset
        }
    }
}
