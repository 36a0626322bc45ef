// The simulated world: N instances of the real node code (Raft and the broker on the commitlog
// on a SimDevice), simulated clients (Clients.swift), one thread, virtual time, and one seeded
// generator that draws everything: the fault mix
// itself (swarm testing), latencies, losses, crashes, partitions, pauses, torn writes and bit
// flips. Events run in (time, sequence) order; the same seed gives the same run, and the run
// ends with a digest of every event.
//
// This file holds the options, the result, the events, the world's state and its running loop;
// WorldFaults.swift draws the fault mix and runs each event, WorldNodes.swift drives the nodes,
// WorldIdle.swift is the idle phase, and Checker.swift checks.
import HeapModule
import TernBroker
import TernNode
import TernProtocol
import TernRaft
import TernStorage

/// FNV-1a over each value's eight bytes, low first: the trace digest of a run.
func fnv1a(_ digest: inout UInt64, _ values: [UInt64]) {
    for v in values {
        var x = v
        for _ in 0..<8 {
            digest ^= x & 0xFF
            digest = digest &* 0x0000_0100_0000_01B3
            x >>= 8
        }
    }
}

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
    /// The first producer turns message tracing of its topic on: the trace's state then rides
    /// every replica's snapshots, restores and replays, which the checkers compare. Off by
    /// default, so that a seed's run is what it was before tracing existed.
    public var messageTrace = false
    /// With many groups (Groups.swift): this world's broker group, and the prefix of its nodes'
    /// addresses ("sim:" alone, the single world's, keeps every seed's run as it was).
    public var brokerGroup = "g1"
    var addressPrefix = "sim:"

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
    /// The highest term reached, and how many terms had a leader (the rest were split votes,
    /// candidates cut off or crashed, and terms a rejoining member skipped to).
    public var terms: UInt64
    public var termsLed: Int
    /// Messages with a trace on the live member that applied the most (message trace on).
    public var tracedMessages = 0
    public var ok: Bool { violations.isEmpty }
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
    /// Started empty to be added (not a founding member).
    var joiner = false
    /// Removed from the group and stopped for good.
    var retired = false
    /// The incarnation its replica runs as (nil before the first start).
    var raftIncarnation: UInt64?
    /// The configuration entry in effect at its last output (for crashes right after one).
    var lastMembershipIndex: UInt64 = 0
    /// Its commit index and term as leader at its last output (the commitment rule's check).
    var leaderCommit: (term: UInt64, commit: UInt64)?
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
    /// Pending events, earliest first: swift-collections' `Heap` on (time, sequence), a total
    /// order, so the same seed pops the same sequence.
    var queue = Heap<Scheduled>()
    var sequence: UInt64 = 0
    var nodes: [SimNode] = []
    var blocked: Set<[Int]> = []  // directed links that drop everything
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
    /// Membership changes (Membership.swift).
    var op: SimOperator!
    /// The idle phase: clients are silent (see `idlePhase`).
    var idle = false
    /// Many groups: replies to clients outside this world (connections from `externalBase` up).
    var external: ((Reply) -> Void)?
    static let externalBase: UInt64 = 1 << 32
    /// The end of the run (`prepare`), and when the liveness phase was met and settled.
    var deadline: UInt64 = 0
    var done = false

    public init(_ options: SimulationOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
        mix = FaultMix.draw(&rng, faults: options.faults)
        for k in 0..<options.nodes { nodes.append(SimNode(index: k)) }
        checker.plantedBugs = options.plantedBugs
        for k in 0..<options.producers {
            let p = SimProducer(index: k, producerID: 1000 + UInt64(k))
            p.turnsTracingOn = options.messageTrace && k == 0
            clients.append(p)
        }
        clients.append(SimConsumer(index: options.producers, group: "g"))
        clients.append(SimOrderedProducer(index: clients.count, producerID: 2000))
        clients.append(SimOrderlyConsumer(index: clients.count))
        clients.append(SimOrderlyConsumer(index: clients.count))
        clients.append(SimTransactionProducer(index: clients.count, producerID: 3000))
        clients.append(SimTransactionProducer(index: clients.count, producerID: 3001))
        clients.append(SimProducer(index: clients.count, producerID: 4000, topic: ReceiveChecker.topic))
        clients.append(SimReceiveConsumer(index: clients.count))
        clients.append(SimReceiveConsumer(index: clients.count))
        op = SimOperator(index: clients.count)
        clients.append(op)
    }

    // MARK: Randomness

    func unit() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
    func below(_ n: UInt64) -> UInt64 { n == 0 ? 0 : rng.next() % n }
    func chance(_ p: Double) -> Bool { p > 0 && unit() < p }
    /// Uniform on [0, 2 x mean]: the mean the mix asks for, without libm.
    func exponentialMicros(meanSeconds: Double) -> UInt64 {
        UInt64(unit() * 2 * meanSeconds * 1e6)
    }

    // MARK: Event queue

    struct Scheduled: Comparable {
        var time: UInt64
        var sequence: UInt64
        var event: Event
        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.sequence) < (b.time, b.sequence) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.sequence) == (b.time, b.sequence) }
    }

    func schedule(_ e: Event, after micros: UInt64) {
        sequence += 1
        queue.insert(Scheduled(time: now + micros, sequence: sequence, event: e))
    }

    /// At an absolute time, no earlier than the world's now (many groups: from outside).
    func schedule(_ e: Event, at time: UInt64) {
        sequence += 1
        queue.insert(Scheduled(time: Swift.max(time, now), sequence: sequence, event: e))
    }

    /// When the next event is due (nil: none).
    var nextEventTime: UInt64? { queue.min?.time }

    func popEvent() -> (UInt64, Event)? {
        queue.popMin().map { ($0.time, $0.event) }
    }

    // MARK: Trace digest

    func mixDigest(_ values: UInt64...) { fnv1a(&digest, values) }

    func trace(_ line: @autoclosure () -> String) {
        if options.trace { print("\(Double(now) / 1e6)s \(line())") }
    }

    func count(_ fault: String) { faultCounts[fault, default: 0] += 1 }

    // MARK: Running

    public func run() -> SimulationResult {
        prepare()
        while step() && !done {}
        return finish()
    }

    /// Starts the nodes and schedules the first events.
    func prepare() {
        for node in nodes { start(node) }
        for node in nodes { schedule(.tick(node.index), after: 1 + below(World.tickMicros)) }
        for c in clients { schedule(.client(c.index), after: 1000 + below(10_000)) }
        schedule(.read, after: 5000)
        if mix.crashEverySeconds > 0 { schedule(.crash(randomNode()), after: exponentialMicros(meanSeconds: mix.crashEverySeconds)) }
        if mix.partitionEverySeconds > 0 { schedule(.partition, after: exponentialMicros(meanSeconds: mix.partitionEverySeconds)) }
        if mix.diskFullEverySeconds > 0 {
            schedule(.diskFull(randomNode()), after: exponentialMicros(meanSeconds: mix.diskFullEverySeconds))
        }
        if mix.pauseEverySeconds > 0 { schedule(.pause(randomNode()), after: exponentialMicros(meanSeconds: mix.pauseEverySeconds)) }
        let faultEnd = UInt64(options.seconds * 1e6)
        schedule(.endFaults, after: faultEnd)
        deadline = faultEnd + UInt64(options.livenessBoundSeconds * 1e6)
        trace("seed \(options.seed): \(mix)")
    }

    /// Runs the next event; false when the run cannot go on (a violation, no event, the
    /// deadline, a runaway). Sets `done` once the liveness phase is met and settled.
    func step() -> Bool {
        guard checker.violations.isEmpty, let (time, event) = popEvent() else { return false }
        if time > deadline { return false }
        now = time
        events += 1
        if events > World.maxEvents(at: now) {
            // A storm of messages at one moment (seed 59 found one in Raft's probing): the
            // run would never end. It is a liveness failure.
            checker.violations.append("runaway: \(events) events by \(Double(now) / 1e6) virtual seconds (a message storm)")
            return false
        }
        handle(event)
        if !done && !faultsOn && livenessMet() {
            // Run on one virtual second, calm, so that delayed messages due by now are
            // released, and until transactions are decided and the receive group drained;
            // then check.
            if livenessMetAt == nil { livenessMetAt = now }
            if now >= livenessMetAt! + 1_000_000 && settled() { done = true }
        }
        return true
    }

    /// The checks after the run, and the result.
    func finish() -> SimulationResult {
        let live = livenessMetAt != nil
        if checker.violations.isEmpty && live { finalCheck() }
        checker.violations += messages.violations
        if checker.violations.isEmpty && live && !settled() {
            let undecided = nodes.compactMap { $0.node?.broker.halfMessages.count }.max() ?? 0
            let missing = receives.expected.filter { receives.acked[$0] == nil && !receives.ambiguous.contains($0) }.sorted()
            var detail = ""
            if let body = missing.first, let a = messages.acked[body] {
                let attempts = (receives.deliveries[body] ?? [:]).keys.sorted().map { k in "attempt \(k) at \(receives.deliveries[body]![k]!.arrived / 1000) ms"
                }
                detail =
                    "; \(body) at \(a.topic)#\(a.queue)@\(a.offset): delivered \(attempts.isEmpty ? "never" : attempts.joined(separator: ", ")); "
                    + nodes.compactMap { n in
                        n.node.map {
                            "\(n.id): \($0.broker.receiveDescription(group: ReceiveChecker.group, queue: QueueRef(topic: a.topic, queueID: a.queue), offset: a.offset))"
                        }
                    }.joined(separator: "; ")
            }
            checker.violations.append(
                "liveness: within \(options.livenessBoundSeconds)s after the faults stopped, \(undecided) half messages stayed undecided, \(missing.count) messages were never received and acknowledged by group \(ReceiveChecker.group) (\(missing.prefix(3).joined(separator: ", ")))\(detail)"
            )
        }
        if checker.violations.isEmpty && !live {
            let applied = liveMembers.map { "\($0.id) applied \($0.appliedIndex)" }.joined(separator: ", ")
            checker.violations.append(
                "liveness: within \(options.livenessBoundSeconds)s after the faults stopped, no proposal was acknowledged, not every member applied every acknowledged one, or the operator's change did not complete (acknowledged through \(checker.maxAckedIndex); \(applied); operator plan \(op.plan))"
            )
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
            received: receives.received, redelivered: receives.redelivered,
            terms: checker.highestTerm, termsLed: checker.leaderOfTerm.count,
            tracedMessages: nodes.compactMap(\.node).max { $0.broker.appliedIndex < $1.broker.appliedIndex }?.broker.tracedCount ?? 0)
    }

    /// Virtual seconds within which every live member must reach the leader's commit index in
    /// the idle phase, counted from the restarted follower's start.
    static let idleCatchUpMicros: UInt64 = 2_000_000

    /// A proposal acknowledged after the faults stopped, and every acknowledged one applied everywhere.
    /// Transactions decided and the receive group drained (after the faults).
    func settled() -> Bool {
        liveMembers.allSatisfy { $0.node.map { $0.broker.halfMessages.isEmpty } ?? false }
            && receives.expected.allSatisfy { body in
                if receives.acked[body] != nil { return true }
                // An acknowledgement in flight when its consumer crashed: consumed if the leader says so.
                guard receives.ambiguous.contains(body), let a = messages.acked[body], let leader = nodes.first(where: { $0.node?.isLeader ?? false })?.node
                else { return false }
                return leader.broker.receiveConsumed(group: ReceiveChecker.group, queue: QueueRef(topic: a.topic, queueID: a.queue), offset: a.offset)
            }
    }

    func livenessMet() -> Bool {
        checker.livenessAckIndex != nil && op.plan.isEmpty && liveMembers.allSatisfy { $0.replica != nil && $0.appliedIndex >= checker.maxAckedIndex }
    }
}
