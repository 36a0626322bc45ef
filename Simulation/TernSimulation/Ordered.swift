// Ordered messages in the simulation: a producer of sharding keys and two orderly consumers of
// one group that lock their queues at the leader, process one message at a time (each taking
// virtual time), commit, and now and then crash (keeping no lock and committing nothing more).
//
// Checker (order per key): a message of a key starts processing only after the key's previous
// message completed, and never while another message of the key is in progress, across
// failovers, lock hand-overs and consumer crashes. Redelivery of completed messages is allowed.
import TernBroker
import TernNode
import TernProtocol
import TernRaft

struct OrderChecker {
    /// Key -> completed sequence numbers.
    var completed: [String: Set<Int>] = [:]
    /// Key -> (sequence, consumer) in progress.
    var active: [String: (seq: Int, consumer: Int)] = [:]
    var processed = 0

    /// `previousDeleted`: retention deleted the key's previous message (it is below its queue's
    /// minimum on a node) before it was processed; it is then skipped, not out of order.
    mutating func start(key: String, seq: Int, consumer: Int, at time: UInt64, previousDeleted: Bool = false, _ messages: inout MessageChecker) {
        if let a = active[key] {
            messages.fail("order: consumer \(consumer) started \(key)-\(seq) at \(time) ms while consumer \(a.consumer) was processing \(key)-\(a.seq)")
        }
        if seq > 1 && !(completed[key]?.contains(seq - 1) ?? false) && !previousDeleted {
            messages.fail("order: consumer \(consumer) started \(key)-\(seq) at \(time) ms before \(key)-\(seq - 1) completed")
        }
        active[key] = (seq, consumer)
        processed += 1
    }

    mutating func finish(key: String, seq: Int, consumer: Int) {
        completed[key, default: []].insert(seq)
        if active[key]?.consumer == consumer { active[key] = nil }
    }

    /// A consumer crashed: what it was processing never completed.
    mutating func abandon(consumer: Int) {
        for k in active.keys.sorted() where active[k]!.consumer == consumer { active[k] = nil }
    }
}

/// Sends messages of six sharding keys, one send outstanding, each key's messages numbered.
final class SimOrderedProducer: SimClient {
    static let topic = "ord"
    static let keys = (0..<6).map { "K\($0)" }
    let index: Int
    let producerID: UInt64
    var next: [String: Int] = [:]
    var sequences: [UInt32: UInt64] = [:]
    var sender: SendRetrier
    var body = ""

    init(index: Int, producerID: UInt64) {
        self.index = index
        self.producerID = producerID
        sender = SendRetrier(connection: UInt64(index + 1))
    }

    func timer(_ world: World) {
        world.schedule(.client(index), after: 10_000 + world.below(30_000))
        if sender.retryIfDue(world) { return }
        let key = SimOrderedProducer.keys[Int(world.below(UInt64(SimOrderedProducer.keys.count)))]
        next[key, default: 0] += 1
        body = "o\(key)-\(next[key]!)"
        world.messages.sent.insert(body)
        let queue = queueForShardingKey(key, queues: SimProducer.queues)
        sequences[queue, default: 0] += 1
        sender.start(
            SendRequest(
                topic: SimOrderedProducer.topic, queueID: queue, producerGroup: "ord", producerID: producerID, sequence: sequences[queue]!,
                messages: [WireMessage(keys: [body], properties: ["SHARDING_KEY": key], body: Array(body.utf8))]), world)
    }

    func reply(_ r: Reply, _ world: World) {
        guard let response = sender.settle(r, world, who: "ordered producer") else { return }
        world.messages.acknowledged(
            body, topic: SimOrderedProducer.topic, queue: response.queueID, offset: response.firstQueueOffset,
            id: MessageID(entryIndex: response.entryIndex, slot: 0))
    }
}

/// An orderly consumer of group "og": heartbeat, lock, then per held queue one message at a time.
final class SimOrderlyConsumer: SimClient {
    static let group = "og"
    static let refreshMicros: UInt64 = 300_000
    let index: Int
    let name: String
    var incarnation = 0
    var leaderGuess = 0
    var nextRequestID: UInt64 = 1
    /// Held queues: position and when the lease ends (virtual microseconds).
    var held: [UInt32: (position: UInt64, leaseEnd: UInt64)] = [:]
    var committed: [UInt32: UInt64] = [:]
    var lastRefresh: UInt64 = 0
    var lastCommit: UInt64 = 0
    var rotation: UInt32 = 0
    enum Kind { case heartbeat, lock(asked: UInt64), query(UInt32, leaseEnd: UInt64), pull(UInt32, UInt64), commit([UInt32: UInt64]) }
    var outstanding: (requestID: UInt64, kind: Kind, sentAt: UInt64)?
    /// The message in hand: queue, offset, key, sequence, when processing ends.
    var processing: (queue: UInt32, offset: UInt64, key: String, seq: Int, until: UInt64)?
    /// Messages pulled and not yet processed, per queue (in offset order).
    var buffered: [UInt32: [ReceivedMessage]] = [:]

    init(index: Int) {
        self.index = index
        name = "oc\(index)"
    }

    var clientID: String { "\(name)-\(incarnation)" }

    func timer(_ world: World) {
        world.schedule(.client(index), after: 4_000 + world.below(16_000))
        if world.faultsOn && world.options.faults && world.chance(0.002) {
            // Crash: the lock is kept at the leader until it expires; nothing more is committed.
            if let p = processing { world.order.abandon(consumer: index); _ = p }
            processing = nil
            held = [:]
            committed = [:]
            buffered = [:]
            outstanding = nil
            incarnation += 1
            world.count("orderly consumer crash")
            return
        }
        // Finish the message in hand.
        if let p = processing, world.now >= p.until {
            world.order.finish(key: p.key, seq: p.seq, consumer: index)
            if held[p.queue]?.position == p.offset { held[p.queue]!.position = p.offset + 1 }
            buffered[p.queue]?.removeFirst()
            processing = nil
        }
        if let o = outstanding {
            guard world.now >= o.sentAt + SimConsumer.timeoutMicros else { return startNext(world) }
            outstanding = nil
            leaderGuess = world.randomNode()
        }
        if world.now >= lastRefresh + SimOrderlyConsumer.refreshMicros {
            lastRefresh = world.now
            request(
                .heartbeat, .heartbeat,
                HeartbeatRequest(group: SimOrderlyConsumer.group, clientID: clientID, mode: .clustering, topics: [SimOrderedProducer.topic]), world)
            return startNext(world)
        }
        let changed = held.filter { committed[$0.key] != $0.value.position }.mapValues(\.position)
        if !changed.isEmpty && world.now >= lastCommit + 200_000 {
            lastCommit = world.now
            var map: [QueueRef: UInt64] = [:]
            for (q, o) in changed { map[QueueRef(topic: SimOrderedProducer.topic, queueID: q)] = o }
            request(.commit(changed), .commitOffset, CommitOffsetRequest(group: SimOrderlyConsumer.group, offsets: map), world)
            return startNext(world)
        }
        // Pull for a held queue with nothing buffered.
        let queues = held.keys.sorted().filter { (buffered[$0] ?? []).isEmpty && held[$0]!.leaseEnd > world.now }
        if !queues.isEmpty {
            rotation += 1
            let q = queues[Int(rotation) % queues.count]
            let offset = held[q]!.position
            request(.pull(q, offset), .pull, PullRequest(topic: SimOrderedProducer.topic, queueID: q, offset: offset, maxMessages: 4), world)
        }
        startNext(world)
    }

    /// Starts processing the next buffered message of a queue whose lease is still good.
    private func startNext(_ world: World) {
        guard processing == nil else { return }
        for q in buffered.keys.sorted() {
            guard let m = buffered[q]?.first, let h = held[q], h.leaseEnd > world.now, h.position == m.queueOffset,
                let key = m.message.properties["SHARDING_KEY"]
            else { continue }
            let body = String(decoding: m.message.body, as: UTF8.self)
            guard let seq = Int(body.split(separator: "-").last ?? "") else { continue }
            // The previous message of the key, gone by retention before anyone processed it?
            let previous = world.messages.acked["o\(key)-\(seq - 1)"]
            let deleted =
                previous.map { p in
                    world.nodes.contains { ($0.node?.broker.bounds(QueueRef(topic: p.topic, queueID: p.queue))?.min ?? 0) > p.offset }
                } ?? false
            if deleted && !(world.order.completed[key]?.contains(seq - 1) ?? false) { world.count("ordered message deleted by retention before processing") }
            world.order.start(key: key, seq: seq, consumer: index, at: world.millis, previousDeleted: deleted, &world.messages)
            processing = (q, m.queueOffset, key, seq, world.now + 5_000 + world.below(35_000))
            return
        }
    }

    private func request(_ kind: Kind, _ op: Opcode, _ body: some WireCodable, to node: Int? = nil, _ world: World) {
        let id = nextRequestID
        nextRequestID += 1
        outstanding = (id, kind, world.now)
        world.sendRequest(
            to: node ?? leaderGuess, client: ClientRef(connection: UInt64(index + 1), requestID: id),
            frame: Frame(opcode: op.rawValue, requestID: id, body: body.encoded()))
    }

    func reply(_ r: Reply, _ world: World) {
        guard let o = outstanding, r.to.requestID == o.requestID else { return }
        outstanding = nil
        guard case .success(let body) = r.result else {
            if case .failure(let e) = r.result, e.code == ErrorCode.notLeader {
                leaderGuess = world.leaderHint(e)
            }
            return
        }
        switch o.kind {
        case .heartbeat:
            guard let hb = try? HeartbeatResponse.decode(body) else { return }
            let asked = world.now
            request(.lock(asked: asked), .lockQueues, LockRequest(group: SimOrderlyConsumer.group, clientID: clientID, queues: hb.assigned), world)
        case .lock(let asked):
            guard let lock = try? LockResponse.decode(body) else { return }
            // The lease counts from when the request left, less a margin.
            let leaseEnd = asked + UInt64(lock.leaseMillis) * 1000 - 500_000
            let locked = Set(lock.locked.map(\.queueID))
            for q in held.keys.sorted() where !locked.contains(q) {
                held[q] = nil
                buffered[q] = nil
            }
            for q in locked.sorted() {
                if held[q] != nil {
                    held[q]!.leaseEnd = leaseEnd
                } else {
                    request(
                        .query(q, leaseEnd: leaseEnd), .queryOffset,
                        QueryOffsetRequest(group: SimOrderlyConsumer.group, queue: QueueRef(topic: SimOrderedProducer.topic, queueID: q)), world)
                    return  // one at a time; the rest on the next refresh
                }
            }
        case .query(let q, let leaseEnd):
            guard let response = try? QueryOffsetResponse.decode(body) else { return }
            held[q] = (response.offset ?? 0, leaseEnd)
            committed[q] = response.offset ?? 0
            lastRefresh = 0  // lock the rest soon
        case .pull(let q, let offset):
            guard let response = try? PullResponse.decode(body), held[q]?.position == offset, (buffered[q] ?? []).isEmpty else { return }
            buffered[q] = response.messages
            for m in response.messages { world.messages.deliver(m, by: world.nodes[leaderGuess].id) }
            if response.messages.isEmpty && response.nextOffset > offset { held[q]!.position = response.nextOffset }
        case .commit(let map):
            for (q, o) in map { committed[q] = o }
        }
        startNext(world)
    }
}
