// The simulated world: N instances of the real node code (Raft and the broker on the commitlog
// on a SimDevice), simulated clients (Clients.swift), one thread, virtual time, and one seeded
// generator that draws everything: the fault mix
// itself (swarm testing), latencies, losses, crashes, partitions, pauses, torn writes and bit
// flips. Events run in (time, sequence) order; the same seed gives the same run, and the run
// ends with a digest of every event.
import TernBroker
import TernNode
import TernProtocol
import TernRaft
import TernStorage

public struct SimulationOptions: Sendable {
    public var seed: UInt64
    public var nodes = 3
    /// Virtual seconds with faults, before the liveness phase.
    public var seconds = 60.0
    /// Draw faults at all (off: a calm network, for debugging).
    public var faults = true
    public var plantedBugs: PlantedBugs = []
    /// Print every event.
    public var trace = false
    /// Virtual seconds the liveness phase may take to elect a leader and commit a proposal.
    public var livenessBoundSeconds = 10.0
    /// Idempotent producers (one consumer runs besides them).
    public var producers = 2

    public init(seed: UInt64) { self.seed = seed }
}

public struct SimulationResult: Sendable {
    public var seed: UInt64
    /// Empty when every checker passed.
    public var violations: [String]
    public var digest: UInt64
    public var virtualSeconds: Double
    public var events: Int
    public var faults: [String: Int]
    public var acknowledged: Int
    public var committed: UInt64
    public var reads: Int
    public var messagesAcknowledged: Int
    public var messagesDelayed: Int
    public var messagesDelivered: Int
    /// Ordered messages processed by the orderly consumers (redeliveries included).
    public var orderedProcessed: Int
    /// Always-failing messages that reached the dead-letter queue.
    public var deadLettered: Int
    /// Transactions whose commit / rollback the broker acknowledged.
    public var transactionsCommitted: Int
    public var transactionsRolledBack: Int
    /// Receive/ack deliveries, and those that were a later attempt.
    public var received: Int
    public var redelivered: Int
    public var ok: Bool { violations.isEmpty }
}

/// The fault mix of one run, drawn from its seed.
struct FaultMix: CustomStringConvertible {
    var lossRate = 0.0
    var duplicateRate = 0.0
    var latencyMinMicros: UInt64 = 100
    var latencyJitterMicros: UInt64 = 1000
    var fsyncMinMicros: UInt64 = 100
    var fsyncJitterMicros: UInt64 = 500
    var slowFsyncRate = 0.0
    var crashEverySeconds = 0.0      // mean; 0 = never
    var partitionEverySeconds = 0.0
    var pauseEverySeconds = 0.0
    var readFlipRate = 0.0
    var diskFullEverySeconds = 0.0
    /// Of the crashes, the share that also lose the disk (the node rejoins with nothing).
    var wipeRate = 0.0
    /// A message is held back 50 ms to 1.5 s (a clogged link): reordering across restarts.
    var delaySpikeRate = 0.0
    // BUGGIFY-style: make rare, dangerous moments common.
    /// Crash a node right after it persisted a vote (and restart it fast).
    var crashAfterVoteRate = 0.0
    /// Crash a leader right after its commit index moved.
    var crashAfterCommitRate = 0.0
    /// Crash a leader right after the first commit of its term (the moment the paper's Figure 8
    /// is about: what a new leader commits first, and whether it survives the leader).
    var crashAfterFirstCommitRate = 0.0
    /// Election timeout jitter in ticks: small values make candidates collide (split votes).
    var electionJitterTicks = 10
    /// Isolate a new leader at the moment it wins, before its first appends leave: its term's
    /// entries stay on it alone (the first half of the paper's Figure 8).
    var isolateNewLeaderRate = 0.0
    /// Entry bytes per append message; 1 sends one entry per message.
    var maxAppendBytes = 64 << 10

    static func draw(_ r: inout SplitMix64, faults: Bool) -> FaultMix {
        var m = FaultMix()
        func unit(_ r: inout SplitMix64) -> Double { Double(r.next() >> 11) / Double(1 << 53) }
        m.latencyMinMicros = 50 + r.next() % 500
        m.latencyJitterMicros = 1 + r.next() % 5000
        m.fsyncMinMicros = 50 + r.next() % 300
        m.fsyncJitterMicros = 1 + r.next() % 2000
        guard faults else { return m }
        if unit(&r) < 0.7 { m.lossRate = unit(&r) * 0.1 }
        if unit(&r) < 0.5 { m.duplicateRate = unit(&r) * 0.05 }
        if unit(&r) < 0.5 { m.slowFsyncRate = unit(&r) * 0.02 }
        if unit(&r) < 0.8 { m.crashEverySeconds = 1 + unit(&r) * 9 }
        if unit(&r) < 0.8 { m.partitionEverySeconds = 1 + unit(&r) * 9 }
        if unit(&r) < 0.5 { m.pauseEverySeconds = 2 + unit(&r) * 10 }
        if unit(&r) < 0.3 { m.readFlipRate = unit(&r) * 0.0005 }
        if unit(&r) < 0.5 { m.delaySpikeRate = unit(&r) * 0.02 }
        if unit(&r) < 0.3 { m.diskFullEverySeconds = 3 + unit(&r) * 10 }
        if unit(&r) < 0.4 { m.wipeRate = unit(&r) * 0.5 }
        if unit(&r) < 0.5 { m.crashAfterVoteRate = unit(&r) * 0.5 }
        if unit(&r) < 0.5 { m.crashAfterCommitRate = unit(&r) * 0.01 }
        if unit(&r) < 0.4 { m.crashAfterFirstCommitRate = unit(&r) * 0.5 }
        if unit(&r) < 0.4 { m.electionJitterTicks = 1 + Int(r.next() % 3) }
        if unit(&r) < 0.4 { m.isolateNewLeaderRate = unit(&r) * 0.5 }
        if unit(&r) < 0.2 { m.maxAppendBytes = 1 }
        return m
    }

    var description: String {
        func f(_ x: Double) -> String { String(Int(x * 10000)) }
        return "loss \(f(lossRate))/10k dup \(f(duplicateRate))/10k latency \(latencyMinMicros)+\(latencyJitterMicros)us fsync \(fsyncMinMicros)+\(fsyncJitterMicros)us slow-fsync \(f(slowFsyncRate))/10k crash/\(Int(crashEverySeconds))s partition/\(Int(partitionEverySeconds))s pause/\(Int(pauseEverySeconds))s read-flip \(f(readFlipRate))/10k disk-full/\(Int(diskFullEverySeconds))s wipe \(f(wipeRate))/10k of crashes delay-spike \(f(delaySpikeRate))/10k crash-after-vote \(f(crashAfterVoteRate))/10k crash-after-commit \(f(crashAfterCommitRate))/10k crash-after-first-commit \(f(crashAfterFirstCommitRate))/10k election-jitter \(electionJitterTicks) ticks isolate-new-leader \(f(isolateNewLeaderRate))/10k append-bytes \(maxAppendBytes)"
    }
}

enum Event {
    case tick(Int)
    /// A Raft message in flight, as the bytes the peer codec made of it (decoded on arrival, as
    /// the server does, so the codec runs under every fault).
    case deliver(to: Int, bytes: [UInt8])
    case diskDone(node: Int, batch: UInt64, incarnation: Int)
    case crash(Int)
    case crashNow(Int)
    case restart(Int)
    case partition
    case heal
    case pause(Int)
    case resume(Int)
    case diskFull(Int)
    case diskFreed(Int)
    case read
    case endFaults
    /// A client's timer.
    case client(Int)
    /// A client request arrives at a node.
    case request(node: Int, client: ClientRef, frame: Frame)
    /// A node's reply arrives at its client.
    case reply(Reply)
}

final class SimNode {
    let index: Int
    let id: NodeID
    let device = SimDevice()
    var node: Node?
    var replica: Replica? { node?.replica }
    var incarnation = 0
    var pausedUntil: UInt64 = 0
    /// The next start follows a lost disk: the replica rejoins without voting until it is safe.
    var lostDisk = false
    /// Lost its disk and has not yet finished rejoining (also while it is down meanwhile).
    var amnesiac = false
    /// Ticks that fell due while the process was paused. Its clock is monotonic: on resume the
    /// shell feeds them all at once (as the real server must), before anything else runs.
    var ticksOwed = 0
    /// The last term in which this node, as leader, committed something.
    var committedInTerm: UInt64 = 0
    var appliedIndex: UInt64 = 0
    var chain: UInt64 = 0xCBF2_9CE4_8422_2325
    init(index: Int) {
        self.index = index
        self.id = NodeID("n\(index + 1)")
    }
}

public final class World {
    static let tickMicros: UInt64 = 10_000

    /// The most events a healthy run takes by virtual time `now` (microseconds): a generous
    /// bound: busy seeds take 5,000-15,000 events per virtual second.
    static func maxEvents(at now: UInt64) -> Int { 500_000 + Int(now / 1_000_000) * 50_000 }

    let options: SimulationOptions
    var rng: SplitMix64
    var mix: FaultMix
    var now: UInt64 = 0
    var heap: [(UInt64, UInt64, Event)] = []
    var sequence: UInt64 = 0
    var nodes: [SimNode] = []
    var blocked: Set<[Int]> = []       // directed links that drop everything
    var faultsOn = true
    var digest: UInt64 = 0xCBF2_9CE4_8422_2325
    var events = 0
    var faultCounts: [String: Int] = [:]
    var checker = Checker()
    var clientLeaderGuess = 0
    var clients: [SimClient] = []
    var messages = MessageChecker()
    var livenessMetAt: UInt64?
    var order = OrderChecker()
    var transactions = TransactionChecker()
    var receives = ReceiveChecker()
    /// The idle phase: clients are silent (see `idlePhase`).
    var idle = false

    public init(_ options: SimulationOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
        mix = FaultMix.draw(&rng, faults: options.faults)
        for k in 0..<options.nodes { nodes.append(SimNode(index: k)) }
        checker.plantedBugs = options.plantedBugs
        for k in 0..<options.producers { clients.append(SimProducer(index: k, producerID: 1000 + UInt64(k))) }
        clients.append(SimConsumer(index: options.producers, group: "g"))
        clients.append(SimOrderedProducer(index: clients.count, producerID: 2000))
        clients.append(SimOrderlyConsumer(index: clients.count))
        clients.append(SimOrderlyConsumer(index: clients.count))
        clients.append(SimTransactionProducer(index: clients.count, producerID: 3000))
        clients.append(SimTransactionProducer(index: clients.count, producerID: 3001))
        clients.append(SimProducer(index: clients.count, producerID: 4000, topic: ReceiveChecker.topic))
        clients.append(SimReceiveConsumer(index: clients.count))
        clients.append(SimReceiveConsumer(index: clients.count))
    }

    // MARK: Randomness

    func unit() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
    func below(_ n: UInt64) -> UInt64 { n == 0 ? 0 : rng.next() % n }
    func chance(_ p: Double) -> Bool { p > 0 && unit() < p }
    /// Uniform on [0, 2 x mean]: the mean the mix asks for, without libm.
    func exponentialMicros(meanSeconds: Double) -> UInt64 {
        UInt64(unit() * 2 * meanSeconds * 1e6)
    }

    // MARK: Event queue (binary heap on time, then sequence)

    func schedule(_ e: Event, after micros: UInt64) {
        sequence += 1
        heap.append((now + micros, sequence, e))
        var k = heap.count - 1
        while k > 0 {
            let parent = (k - 1) / 2
            if (heap[parent].0, heap[parent].1) <= (heap[k].0, heap[k].1) { break }
            heap.swapAt(parent, k)
            k = parent
        }
    }

    func popEvent() -> (UInt64, Event)? {
        guard !heap.isEmpty else { return nil }
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var k = 0
            while true {
                let l = 2 * k + 1, r = l + 1
                var m = k
                if l < heap.count && (heap[l].0, heap[l].1) < (heap[m].0, heap[m].1) { m = l }
                if r < heap.count && (heap[r].0, heap[r].1) < (heap[m].0, heap[m].1) { m = r }
                if m == k { break }
                heap.swapAt(m, k)
                k = m
            }
        }
        return (top.0, top.2)
    }

    // MARK: Trace digest

    func mixDigest(_ values: UInt64...) {
        for v in values {
            var x = v
            for _ in 0..<8 {
                digest ^= x & 0xFF
                digest = digest &* 0x0000_0100_0000_01B3
                x >>= 8
            }
        }
    }

    func trace(_ line: @autoclosure () -> String) {
        if options.trace { print("\(Double(now) / 1e6)s \(line())") }
    }

    func count(_ fault: String) { faultCounts[fault, default: 0] += 1 }

    // MARK: Running

    public func run() -> SimulationResult {
        for node in nodes { start(node) }
        for node in nodes { schedule(.tick(node.index), after: 1 + below(World.tickMicros)) }
        for c in clients { schedule(.client(c.index), after: 1000 + below(10_000)) }
        schedule(.read, after: 5000)
        if mix.crashEverySeconds > 0 { schedule(.crash(Int(below(UInt64(nodes.count)))), after: exponentialMicros(meanSeconds: mix.crashEverySeconds)) }
        if mix.partitionEverySeconds > 0 { schedule(.partition, after: exponentialMicros(meanSeconds: mix.partitionEverySeconds)) }
        if mix.diskFullEverySeconds > 0 { schedule(.diskFull(Int(below(UInt64(nodes.count)))), after: exponentialMicros(meanSeconds: mix.diskFullEverySeconds)) }
        if mix.pauseEverySeconds > 0 { schedule(.pause(Int(below(UInt64(nodes.count)))), after: exponentialMicros(meanSeconds: mix.pauseEverySeconds)) }
        let faultEnd = UInt64(options.seconds * 1e6)
        schedule(.endFaults, after: faultEnd)
        let deadline = faultEnd + UInt64(options.livenessBoundSeconds * 1e6)
        trace("seed \(options.seed): \(mix)")

        while checker.violations.isEmpty, let (time, event) = popEvent() {
            if time > deadline { break }
            now = time
            events += 1
            if events > World.maxEvents(at: now) {
                // A storm of messages at one moment (seed 59 found one in Raft's probing): the
                // run would never end. It is a liveness failure.
                checker.violations.append("runaway: \(events) events by \(Double(now) / 1e6) virtual seconds (a message storm)")
                break
            }
            handle(event)
            if !faultsOn && livenessMet() {
                // Run on one virtual second, calm, so that delayed messages due by now are
                // released, and until transactions are decided and the receive group drained;
                // then check.
                if livenessMetAt == nil { livenessMetAt = now }
                if now >= livenessMetAt! + 1_000_000 && settled() { break }
            }
        }
        let live = livenessMetAt != nil
        if checker.violations.isEmpty && live { finalCheck() }
        checker.violations += messages.violations
        if checker.violations.isEmpty && live && !settled() {
            let undecided = nodes.compactMap { $0.node?.broker.halfMessages.count }.max() ?? 0
            let missing = receives.expected.filter { receives.acked[$0] == nil && !receives.ambiguous.contains($0) }.sorted()
            var detail = ""
            if let body = missing.first, let a = messages.acked[body] {
                let attempts = (receives.deliveries[body] ?? [:]).keys.sorted().map { k in "attempt \(k) at \(receives.deliveries[body]![k]!.arrived / 1000) ms" }
                detail = "; \(body) at \(a.topic)#\(a.queue)@\(a.offset): delivered \(attempts.isEmpty ? "never" : attempts.joined(separator: ", ")); " + nodes.compactMap { n in
                    n.node.map { "\(n.id): \($0.broker.receiveDescription(group: ReceiveChecker.group, queue: QueueRef(topic: a.topic, queueID: a.queue), offset: a.offset))" }
                }.joined(separator: "; ")
            }
            checker.violations.append("liveness: within \(options.livenessBoundSeconds)s after the faults stopped, \(undecided) half messages stayed undecided, \(missing.count) messages were never received and acknowledged by group \(ReceiveChecker.group) (\(missing.prefix(3).joined(separator: ", ")))\(detail)")
        }
        if checker.violations.isEmpty && !live {
            let applied = nodes.map { "\($0.id) applied \($0.appliedIndex)" }.joined(separator: ", ")
            checker.violations.append("liveness: within \(options.livenessBoundSeconds)s after the faults stopped, no proposal was acknowledged or not every node applied every acknowledged one (acknowledged through \(checker.maxAckedIndex); \(applied))")
        }
        if checker.violations.isEmpty && live { idlePhase() }
        mixDigest(UInt64(checker.acknowledged), checker.maxAckedIndex)
        return SimulationResult(
            seed: options.seed, violations: checker.violations.map { "t=\(Double(now) / 1e6)s: \($0)" }, digest: digest,
            virtualSeconds: Double(now) / 1e6, events: events, faults: faultCounts,
            acknowledged: checker.acknowledged, committed: checker.maxCommitted, reads: checker.reads,
            messagesAcknowledged: messages.acked.count, messagesDelayed: messages.delayed.count, messagesDelivered: messages.delivered,
            orderedProcessed: order.processed, deadLettered: messages.deadLettered,
            transactionsCommitted: transactions.endedCommit.count, transactionsRolledBack: transactions.endedRollback.count,
            received: receives.received, redelivered: receives.redelivered)
    }

    /// Virtual seconds within which every live member must reach the leader's commit index in
    /// the idle phase, counted from the restarted follower's start.
    static let idleCatchUpMicros: UInt64 = 2_000_000

    /// After the checks: clients go silent, a follower is killed and restarted, and with
    /// nothing written every member must reach the leader's commit index within
    /// `idleCatchUpMicros` (a follower restarted on an idle group once stayed at commit 0 until
    /// the next write; planted bug `heartbeat-commit-capped`).
    func idlePhase() {
        idle = true
        // Let what is in flight settle first: the victim must go down holding everything, or
        // the leader's next appends would catch it up whatever the heartbeat says.
        // Delayed releases (due up to two seconds after their send) are the last writes: wait
        // until no member's log has grown for 2.5 virtual seconds (at most 20).
        let calmLimit = now + 20_000_000
        var quietSince = now
        var lastIndexes = nodes.map { $0.replica?.log.lastIndex ?? 0 }
        while checker.violations.isEmpty, let (time, event) = popEvent() {
            now = time
            events += 1
            handle(event)
            let indexes = nodes.map { $0.replica?.log.lastIndex ?? 0 }
            if indexes != lastIndexes {
                lastIndexes = indexes
                quietSince = now
            }
            if now >= quietSince + 2_500_000 || now >= calmLimit { break }
        }
        guard checker.violations.isEmpty else { return }
        let start = now
        guard let leader = nodes.first(where: { $0.node?.isLeader ?? false }) else {
            checker.violations.append("idle phase: no leader after the liveness phase")
            return
        }
        let followers = nodes.filter { $0 !== leader && $0.node != nil }
        guard !followers.isEmpty else { return }
        let victim = followers[Int(below(UInt64(followers.count)))]
        trace("idle phase: clients silent; crash and restart \(victim.id)")
        mixDigest(12, now, UInt64(victim.index))
        powerOff(victim)
        let restartAfter = 10_000 + below(300_000)
        schedule(.restart(victim.index), after: restartAfter)
        let deadline = start + restartAfter + World.idleCatchUpMicros
        func caughtUp() -> Bool {
            guard let target = nodes.compactMap({ $0.node }).first(where: { $0.isLeader })?.replica.raft.commitIndex else { return false }
            return nodes.allSatisfy { ($0.replica?.raft.commitIndex ?? 0) >= target && $0.appliedIndex >= target }
        }
        while checker.violations.isEmpty, let (time, event) = popEvent() {
            if time > deadline { break }
            now = time
            events += 1
            handle(event)
            if now > start + restartAfter && caughtUp() {
                trace("idle phase: every member at the leader's commit index \(Double(now - start - restartAfter) / 1e6) s after the restart")
                return
            }
        }
        guard checker.violations.isEmpty else { return }
        let states = nodes.map { n in
            guard let r = n.replica?.raft else { return "\(n.id) down" }
            return "\(n.id) \(r.role) commit \(r.commitIndex) applied \(n.appliedIndex) last \(n.replica!.log.lastIndex)"
        }.joined(separator: ", ")
        checker.violations.append("idle liveness: with nothing written, not every member reached the leader's commit index within \(Double(World.idleCatchUpMicros) / 1e6) s of \(victim.id)'s restart (\(states))")
    }

    func config(for node: SimNode) -> RaftConfig {
        var c = RaftConfig(id: node.id, members: nodes.map(\.id))
        c.plantedBugs = options.plantedBugs
        c.maxAppendBytes = mix.maxAppendBytes
        c.electionJitterTicks = mix.electionJitterTicks
        return c
    }

    func start(_ node: SimNode) {
        node.incarnation += 1
        let incarnation = node.incarnation
        node.device.schedule = { [unowned self, unowned node] id in
            var latency = mix.fsyncMinMicros + below(mix.fsyncJitterMicros)
            if faultsOn && chance(mix.slowFsyncRate) {
                latency += 20_000 + below(500_000)
                count("slow fsync")
            }
            schedule(.diskDone(node: node.index, batch: id, incarnation: incarnation), after: latency)
        }
        node.device.random = { [unowned self] in unit() }
        // One segment in three finds its zero-filling unfinished (FNV-1a of node and path).
        let salt = node.id.name
        node.device.preparationLags = { path in
            (salt + path).utf8.reduce(UInt64(0xCBF2_9CE4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 } % 3 == 0
        }
        if options.trace { node.device.traceHook = { [unowned self, unowned node] line in trace("\(node.id) disk: \(line)") } }
        node.device.readFlipProbability = faultsOn ? mix.readFlipRate : 0
        node.device.flipsInjected = 0
        node.device.noSpaceInjected = 0
        node.appliedIndex = 0
        node.chain = 0xCBF2_9CE4_8422_2325
        var nodeConfig = NodeConfig(raft: config(for: node), endpoints: Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, "sim:\($0.index)") }))
        nodeConfig.broker.autoCreateTopics = true
        nodeConfig.broker.defaultQueues = SimProducer.queues
        nodeConfig.broker.maxMessageBytes = 1024
        nodeConfig.broker.transactionCheckFirstMillis = 1_000
        nodeConfig.broker.transactionCheckIntervalMillis = 1_500
        nodeConfig.broker.transactionMaxChecks = 8
        do {
            node.node = try Node(config: nodeConfig, device: node.device, directory: "/\(node.id)",
                                 logOptions: CommitlogOptions(segmentSizeBytes: 64 << 10, maxEntryBodyBytes: 16 << 10),
                                 seed: options.seed &* 31 &+ UInt64(node.index) &+ UInt64(incarnation) << 32,
                                 lostDisk: node.lostDisk)
            node.lostDisk = false
        } catch {
            failStop(node, error)
        }
    }

    /// A proposal acknowledged after the faults stopped, and every acknowledged one applied everywhere.
    /// Transactions decided and the receive group drained (after the faults).
    func settled() -> Bool {
        nodes.allSatisfy { $0.node.map { $0.broker.halfMessages.isEmpty } ?? false } && receives.expected.allSatisfy { body in
            if receives.acked[body] != nil { return true }
            // An acknowledgement in flight when its consumer crashed: consumed if the leader says so.
            guard receives.ambiguous.contains(body), let a = messages.acked[body], let leader = nodes.first(where: { $0.node?.isLeader ?? false })?.node else { return false }
            return leader.broker.receiveConsumed(group: ReceiveChecker.group, queue: QueueRef(topic: a.topic, queueID: a.queue), offset: a.offset)
        }
    }

    func livenessMet() -> Bool {
        checker.livenessAckIndex != nil && nodes.allSatisfy { $0.replica != nil && $0.appliedIndex >= checker.maxAckedIndex }
    }

    /// The process dies: its replica is gone, events for it are stale, and the disk keeps what
    /// was durable plus a torn prefix of what was in flight.
    func powerOff(_ node: SimNode) {
        node.node = nil
        node.incarnation += 1
        node.device.crash { [unowned self] n in Int(below(UInt64(n))) }
    }

    func failStop(_ node: SimNode, _ error: StorageError) {
        trace("\(node.id) fail-stop: \(error)")
        count("fail-stop")
        if node.device.flipsInjected == 0 && node.device.noSpaceInjected == 0 {
            // Torn writes and crashes must never make the log unreadable: only an injected bit
            // flip may stop a node.
            checker.violations.append("\(node.id) stopped on a storage error with no injected fault: \(error)")
        }
        powerOff(node)
        schedule(.restart(node.index), after: 50_000 + below(500_000))
    }

    func handle(_ event: Event) {
        switch event {
        case .tick(let k):
            let node = nodes[k]
            schedule(.tick(k), after: World.tickMicros)
            guard let n = node.node else { return }
            if now < node.pausedUntil {
                node.ticksOwed += 1
                return
            }
            mixDigest(1, now, UInt64(k))
            run(node) { () throws(StorageError) in try n.tick(now: millis) }
        case .deliver(let to, let bytes):
            let node = nodes[to]
            guard let n = node.node else { return }
            if now < node.pausedUntil {
                schedule(event, after: node.pausedUntil - now)
                return
            }
            let m: Message
            do {
                m = try PeerCodec.decode(bytes)
            } catch {
                checker.violations.append("peer codec: a message to \(node.id) does not decode: \(error)")
                return
            }
            mixDigest(2, now, UInt64(index(of: m.from)), UInt64(node.index), m.term, kindCode(m.kind))
            trace("deliver \(m)")
            run(node) { () throws(StorageError) in try n.receive([m], now: millis) }
        case .diskDone(let k, let batch, let incarnation):
            let node = nodes[k]
            guard node.incarnation == incarnation, let n = node.node else { return }
            if now < node.pausedUntil {
                schedule(event, after: node.pausedUntil - now)
                return
            }
            mixDigest(3, now, UInt64(k), batch)
            node.device.complete(batch)
            run(node) { () throws(StorageError) in try n.diskCompleted(now: millis) }
        case .crash(let k):
            if faultsOn {
                let node = nodes[k]
                if node.replica != nil {
                    mixDigest(4, now, UInt64(k))
                    trace("crash \(node.id)")
                    count("crash")
                    powerOff(node)
                    // Lose the disk too, but never while another member is still rejoining:
                    // two lost copies of a committed entry are beyond what 3 replicas survive.
                    let othersWhole = nodes.allSatisfy { $0 === node || !$0.amnesiac }
                    if othersWhole && chance(mix.wipeRate) {
                        node.device.wipe()
                        node.lostDisk = true
                        node.amnesiac = true
                        count("crash with a wiped disk")
                        trace("\(node.id) lost its disk")
                    }
                    schedule(.restart(k), after: 10_000 + below(3_000_000))
                }
                schedule(.crash(Int(below(UInt64(nodes.count)))), after: exponentialMicros(meanSeconds: mix.crashEverySeconds))
            }
        case .crashNow(let k):
            let node = nodes[k]
            guard faultsOn, node.replica != nil else { return }
            mixDigest(8, now, UInt64(k))
            trace("crash \(node.id) (buggify)")
            count("crash (buggify)")
            powerOff(node)
            schedule(.restart(k), after: 100 + below(2_000))  // back before the messages in flight land
        case .restart(let k):
            let node = nodes[k]
            guard node.replica == nil else { return }
            mixDigest(5, now, UInt64(k))
            trace("restart \(node.id)")
            start(node)
        case .partition:
            guard faultsOn else { return }
            blocked.removeAll()
            let n = nodes.count
            let victim = Int(below(UInt64(n)))
            switch below(4) {
            case 0:  // isolate one node both ways
                for j in 0..<n where j != victim { blocked.insert([victim, j]); blocked.insert([j, victim]) }
                count("partition: isolate")
            case 1:  // asymmetric: the victim can send but not receive
                for j in 0..<n where j != victim { blocked.insert([j, victim]) }
                count("partition: one-way")
            case 2:  // clog one link
                let other = (victim + 1 + Int(below(UInt64(n - 1)))) % n
                blocked.insert([victim, other]); blocked.insert([other, victim])
                count("partition: clog link")
            default:  // split into two random halves
                var side = [Bool](repeating: false, count: n)
                for j in 0..<n { side[j] = below(2) == 0 }
                for a in 0..<n { for b in 0..<n where side[a] != side[b] { blocked.insert([a, b]) } }
                count("partition: split")
            }
            mixDigest(6, now, UInt64(blocked.count))
            trace("partition \(blocked.sorted { $0.lexicographicallyPrecedes($1) })")
            schedule(.heal, after: 200_000 + below(4_000_000))
            schedule(.partition, after: exponentialMicros(meanSeconds: mix.partitionEverySeconds) + 1_000_000)
        case .heal:
            blocked.removeAll()
            trace("heal")
        case .pause(let k):
            guard faultsOn else { return }
            let node = nodes[k]
            guard node.pausedUntil <= now else { return }
            node.pausedUntil = now + 100_000 + below(400_000)
            node.ticksOwed = 0
            schedule(.resume(k), after: node.pausedUntil - now)
            count("pause")
            trace("pause \(node.id) until \(Double(node.pausedUntil) / 1e6)s")
            schedule(.pause(Int(below(UInt64(nodes.count)))), after: exponentialMicros(meanSeconds: mix.pauseEverySeconds))
        case .resume(let k):
            let node = nodes[k]
            let owed = node.ticksOwed
            node.ticksOwed = 0
            guard let n = node.node, owed > 0 else { return }
            trace("resume \(node.id): \(owed) ticks fell due during the pause")
            mixDigest(9, now, UInt64(k), UInt64(owed))
            // One catch-up step, before anything that queued during the pause (the server does
            // the same; docs/raft.md, "Time").
            run(node) { () throws(StorageError) in try n.tick(now: millis, ticks: owed) }
        case .diskFull(let k):
            guard faultsOn else { return }
            nodes[k].device.full = true
            count("disk full")
            trace("disk full on \(nodes[k].id)")
            schedule(.diskFreed(k), after: 200_000 + below(2_000_000))
            schedule(.diskFull(Int(below(UInt64(nodes.count)))), after: exponentialMicros(meanSeconds: mix.diskFullEverySeconds) + 500_000)
        case .diskFreed(let k):
            nodes[k].device.full = false
            trace("disk freed on \(nodes[k].id)")
        case .client(let k):
            guard !idle else { return }  // the idle phase: no client writes or reads
            clients[k].timer(self)
        case .request(let k, let client, let frame):
            let node = nodes[k]
            guard let n = node.node else { return }
            if now < node.pausedUntil {
                schedule(event, after: node.pausedUntil - now)
                return
            }
            mixDigest(10, now, UInt64(k), client.connection, client.requestID, UInt64(frame.opcode))
            run(node) { () throws(StorageError) in try n.handle([(client, frame)], now: millis) }
        case .reply(let r):
            mixDigest(11, now, r.to.connection, r.to.requestID)
            clients[Int(r.to.connection) - 1].reply(r, self)
        case .read:
            schedule(.read, after: 5_000 + below(50_000))
            read()
        case .endFaults:
            faultsOn = false
            blocked.removeAll()
            // One entry per append is a fault too: it ends with the others.
            mix.maxAppendBytes = FaultMix().maxAppendBytes
            for node in nodes { node.replica?.raft.setMaxAppendBytes(mix.maxAppendBytes) }
            for node in nodes {
                if node.pausedUntil > now { schedule(.resume(node.index), after: 0) }
                node.pausedUntil = 0
                node.device.full = false
                node.device.readFlipProbability = 0
                if node.replica == nil { schedule(.restart(node.index), after: 1) }
            }
            checker.livenessStart = now
            receives.expected = Set(messages.acked.filter { $0.value.topic == ReceiveChecker.topic }.keys)
            trace("faults end; liveness phase; " + nodes.map { n in
                guard let r = n.replica?.raft else { return "\(n.id) down" }
                return "\(n.id) \(r.role) t\(r.term) last \(n.replica!.log.lastIndex) commit \(r.commitIndex)\(r.rejoining ? " rejoining" : "")"
            }.joined(separator: ", "))
        }
    }

    func index(of id: NodeID) -> Int { Int(id.name.dropFirst())! - 1 }

    func kindCode(_ k: Message.Kind) -> UInt64 {
        switch k {
        case .preVote: return 1
        case .preVoteResponse(let g): return g ? 2 : 3
        case .vote: return 4
        case .voteResponse(let g): return g ? 5 : 6
        case .append(let p, _, let es, let c): return 7 &+ p << 8 &+ UInt64(es.count) << 32 &+ c << 40
        case .appendResponse(let s, let i, _, _): return (s ? 8 : 9) &+ i << 8
        case .heartbeat: return 10
        case .heartbeatResponse: return 11
        case .timeoutNow: return 12
        case .termQuery: return 13
        case .termQueryResponse: return 14
        }
    }

    /// The node a NOT_LEADER answer names, or a random one when it names none (as the SDK does).
    func leaderHint(_ e: ErrorBody) -> Int {
        if let d = try? NotLeaderDetail.decode(e.detail), let k = nodes.firstIndex(where: { $0.id.name == d.leader }) { return k }
        return Int(below(UInt64(nodes.count)))
    }

    /// Milliseconds of virtual time: the node's clock.
    var millis: UInt64 { now / 1000 }

    /// Runs one input on a node and carries out its output; a storage error stops the node.
    func run(_ node: SimNode, _ body: () throws(StorageError) -> NodeOutput) {
        do {
            let out = try body()
            carryOut(node, out)
        } catch {
            failStop(node, error)
        }
    }

    func carryOut(_ node: SimNode, _ out: NodeOutput) {
        guard let replica = node.replica else { return }
        if node.amnesiac && !replica.raft.rejoining { node.amnesiac = false }
        if faultsOn && out.votedNow && chance(mix.crashAfterVoteRate) {
            schedule(.crashNow(node.index), after: below(1_000))
        }
        if faultsOn && replica.raft.role == .leader && !out.applied.isEmpty {
            let first = node.committedInTerm != replica.raft.term
            node.committedInTerm = replica.raft.term
            if chance(mix.crashAfterCommitRate) || (first && chance(mix.crashAfterFirstCommitRate)) {
                schedule(.crashNow(node.index), after: below(500))
            }
        }
        if out.role == .leader {
            checker.leaderElected(node.id, term: replica.raft.term)
            clientLeaderGuess = node.index
            if faultsOn && chance(mix.isolateNewLeaderRate) {
                blocked.removeAll()
                for j in nodes.indices where j != node.index { blocked.insert([node.index, j]); blocked.insert([j, node.index]) }
                count("partition: isolate new leader")
                trace("partition: isolate new leader \(node.id)")
                schedule(.heal, after: 100_000 + below(1_500_000))
            }
        }
        for m in out.messages { send(m) }
        for e in out.applied { apply(node, e) }
        for r in out.replies { sendToClient(r) }
    }

    func send(_ m: Message) {
        let from = index(of: m.from), to = index(of: m.to)
        if faultsOn && (blocked.contains([from, to]) || chance(mix.lossRate)) { return }
        var latency = mix.latencyMinMicros + below(mix.latencyJitterMicros)
        if faultsOn && chance(mix.delaySpikeRate) {
            latency += 50_000 + below(1_450_000)
            count("delay spike")
        }
        let bytes = PeerCodec.encode(m)
        schedule(.deliver(to: to, bytes: bytes), after: latency)
        if faultsOn && chance(mix.duplicateRate) { schedule(.deliver(to: to, bytes: bytes), after: latency + below(10_000)) }
    }

    /// Client links: latency and loss, no partitions (a lost request or reply times out at the client).
    func sendRequest(to node: Int, client: ClientRef, frame: Frame) {
        if faultsOn && chance(mix.lossRate) { return }
        schedule(.request(node: node, client: client, frame: frame), after: mix.latencyMinMicros + below(mix.latencyJitterMicros))
    }

    func sendToClient(_ r: Reply) {
        if faultsOn && chance(mix.lossRate) { return }
        schedule(.reply(r), after: mix.latencyMinMicros + below(mix.latencyJitterMicros))
    }

    func apply(_ node: SimNode, _ e: LogEntry) {
        if options.trace { trace("\(node.id) applies \(e.index) t\(e.term) type \(e.type)") }
        if e.type == BrokerEntryType.release, let n = node.node, let list = try? MessageIDList.decode(e.body) {
            // Never early: a release applies no sooner than the leader's clock said it was due
            // (every clock here is the virtual one; apply follows the proposal).
            for id in list.ids {
                guard let m = try? n.broker.message(id), let delay = m.message.properties["TIMER_DELAY_MS"].flatMap(UInt64.init) else { continue }
                if millis < m.storeTimestamp + delay {
                    messages.fail("delayed message \(String(decoding: m.message.body, as: UTF8.self)) (\(id)) released at \(millis) ms on \(node.id), due at \(m.storeTimestamp + delay) ms")
                }
            }
        }
        checker.applied(node: node, entry: e)
        node.appliedIndex = e.index
        mixDigest(7, now, UInt64(node.index), e.index, e.term)
    }

    /// A linearizable read served by a leader under lease: it must reflect every write
    /// acknowledged before the read began.
    func read() {
        let node = nodes[clientLeaderGuess]
        guard let replica = node.replica, now >= node.pausedUntil, replica.raft.hasLease else { return }
        checker.read(by: node.id, servedIndex: replica.raft.commitIndex, term: replica.raft.term)
    }

    /// After the liveness phase: every node that applied every acknowledged entry holds every
    /// acknowledged message where its receipt says, each queue in log order, nothing twice and
    /// nothing that no producer sent.
    func finalCheck() {
        for node in nodes {
            guard let n = node.node, node.appliedIndex >= checker.maxAckedIndex else { continue }
            do {
                try messages.checkStored(n, node: node.id, releasedBy: (livenessMetAt ?? now) / 1000)
            try messages.checkRetries(n, node: node.id, group: "g")
                try transactions.check(n, node: node.id, &messages)
            } catch {
                messages.violations.append("\(node.id): reading its queues failed: \(error)")
            }
        }
    }
}

/// The safety and liveness checkers. Each is shown to catch a planted bug (tests, and
/// `tern-sim --plant`).
struct Checker {
    var plantedBugs: PlantedBugs = []
    var violations: [String] = []
    var leaderOfTerm: [UInt64: NodeID] = [:]
    /// Index -> (term, body digest, chain) of the entry applied there; every node must agree.
    var committed: [UInt64: (term: UInt64, digest: UInt64, chain: UInt64)] = [:]
    var maxCommitted: UInt64 = 0
    var acknowledged = 0
    var maxAckedIndex: UInt64 = 0
    var reads = 0
    var livenessStart: UInt64 = 0
    var livenessAckIndex: UInt64?

    mutating func leaderElected(_ id: NodeID, term: UInt64) {
        if let other = leaderOfTerm[term], other != id {
            violations.append("election safety: \(other) and \(id) both lead term \(term)")
        }
        leaderOfTerm[term] = id
    }

    static func fnv(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// State machine safety: every node applies the same entry at each index, and the same
    /// sequence (a hash chain over all entries up to it), and applies in order without gaps.
    mutating func applied(node: SimNode, entry e: LogEntry) {
        if e.index != node.appliedIndex + 1 {
            violations.append("\(node.id) applied \(e.index) after \(node.appliedIndex)")
        }
        let digest = Checker.fnv(e.body) ^ UInt64(e.type) << 56
        var chain = node.chain ^ digest ^ e.term &* 0x9E37_79B9_7F4A_7C15
        chain = chain &* 0x0000_0100_0000_01B3
        node.chain = chain
        if let c = committed[e.index] {
            if c.term != e.term || c.digest != digest {
                violations.append("state machine safety: \(node.id) applied index \(e.index) term \(e.term), another node applied term \(c.term) there (a committed entry was lost or changed)")
            } else if c.chain != chain {
                violations.append("log matching: \(node.id)'s applied sequence differs before index \(e.index)")
            }
        } else {
            committed[e.index] = (e.term, digest, chain)
            maxCommitted = max(maxCommitted, e.index)
        }
    }

    mutating func acknowledge(index: UInt64, at time: UInt64) {
        acknowledged += 1
        maxAckedIndex = max(maxAckedIndex, index)
        if livenessStart > 0 && time >= livenessStart && livenessAckIndex == nil { livenessAckIndex = index }
    }

    mutating func read(by id: NodeID, servedIndex: UInt64, term: UInt64) {
        reads += 1
        if servedIndex < maxAckedIndex {
            violations.append("linearizable read: \(id) (term \(term), holding a lease) served index \(servedIndex) after index \(maxAckedIndex) was acknowledged")
        }
    }

}
