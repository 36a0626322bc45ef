// Many broker groups in the simulator (docs/simulation.md, "Many groups"): one `World` per
// group, each with its nodes, clients, faults and checkers as on its own, stepped together in
// one virtual time; two name servers running the real `NameRegistry`, fed by every group's
// leader; and a routed producer that finds the groups through them, as `TernCluster(nameservers:)`
// does. The coordinator adds name server crashes and cuts, a group cut off from clients and name
// servers while the other serves, and stale routes: a group's address taken over for a while by
// a node of the other group (a rescheduled pod's address reused). Its checkers: a routed send is
// acknowledged by the group its route named, every routed acknowledgement is stored in that
// group at its queue and offset, no routed message is stored in two groups, and the other
// group takes routed sends while one is cut off.
import HeapModule
import TernNode
import TernProtocol
import TernRaft

public struct GroupsOptions: Sendable {
    public var seed: UInt64
    public var seconds = 60.0
    public var groups = 2
    public var plantedBugs: PlantedBugs = []
    public var faults = true
    public var trace = false
    public init(seed: UInt64) { self.seed = seed }
}

public struct GroupsResult: Sendable {
    public var seed: UInt64
    public var violations: [String]
    public var digest: UInt64
    public var virtualSeconds: Double
    /// Each group's world, as a single world reports it.
    public var groups: [SimulationResult]
    public var routedAcknowledged: Int
    public var staleRoutesRefused: Int
    public var faults: [String: Int]
    public var ok: Bool { violations.isEmpty }
}

/// A simulated name server: the real registry, and its faults.
final class SimNameServer {
    static let expiryMillis: UInt64 = 2_000
    static let warmupMicros: UInt64 = 750_000
    var registry = NameRegistry(expiryMillis: SimNameServer.expiryMillis)
    var up = true
    var startedAt: UInt64 = 0
    var cutFromGroup: Set<Int> = []
    var cutFromClients = false
}

enum GroupsEvent {
    /// Every group's leader registers with every name server it reaches (every 200 ms; the
    /// real 10 s scaled down with the expiry).
    case register
    case routedTimer
    case nameRequest(ns: Int, request: UInt64, topic: String)
    case nameReply(ns: Int, request: UInt64, route: TopicRoute?, notFound: Bool)
    case nsRestart(Int)
    case nsHealGroup(ns: Int, group: Int)
    case nsHealClients(Int)
    case healGroup(Int)
    case unswap
    case fault
    case endFaults
}

public final class GroupsWorld {
    let options: GroupsOptions
    let worlds: [World]
    let names: [String]
    var rng: SplitMix64
    var now: UInt64 = 0
    struct Scheduled: Comparable {
        var time: UInt64
        var sequence: UInt64
        var event: GroupsEvent
        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.sequence) < (b.time, b.sequence) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.sequence) == (b.time, b.sequence) }
    }
    var queue = Heap<Scheduled>()
    var sequence: UInt64 = 0
    var nameServers = [SimNameServer(), SimNameServer()]
    var faultsOn = true
    var digest: UInt64 = 0xCBF2_9CE4_8422_2325
    var violations: [String] = []
    var faultCounts: [String: Int] = [:]
    var routed: RoutedProducer!
    /// A group cut off from clients and name servers, and the routed acknowledgements its
    /// partner made while it was.
    var isolated: Int?
    var isolatedSince: UInt64 = 0
    var partnerAcksDuringIsolation = 0
    var partnerOwnAcksAtIsolation = 0
    /// Routed-timer ticks during the isolation at which the routed producer could send to the
    /// partner (its topic created everywhere, the partner in its route).
    var partnerRoutableTicks = 0
    /// A group's address taken over by a node of another group: address -> (world, node).
    var swapped: [String: (Int, Int)] = [:]
    /// Bumped whenever an address changes hands: the client's verified connection to it breaks.
    var generation: [String: UInt64] = [:]

    public init(_ options: GroupsOptions) {
        precondition(options.groups >= 2, "a world of many groups has at least two")
        self.options = options
        rng = SplitMix64(seed: options.seed ^ 0x6E61_6D65_7365_7276)
        names = (1...options.groups).map { "g\($0)" }
        var list: [World] = []
        for (k, name) in names.enumerated() {
            // Group 1 runs the seed's single world; the others draw from seeds of their own.
            var o = SimulationOptions(seed: k == 0 ? options.seed : options.seed &+ UInt64(k) &* 0x9E37_79B9_7F4A_7C15)
            o.seconds = options.seconds
            o.plantedBugs = options.plantedBugs
            o.faults = options.faults
            o.trace = options.trace
            o.brokerGroup = name
            o.addressPrefix = "sim:\(name)."
            list.append(World(o))
        }
        worlds = list
        routed = RoutedProducer(self)
        for (k, w) in worlds.enumerated() { w.external = { [unowned self] r in routed.reply(r, from: k) } }
    }

    // MARK: Time and randomness

    func schedule(_ e: GroupsEvent, after micros: UInt64) {
        sequence += 1
        queue.insert(Scheduled(time: now + micros, sequence: sequence, event: e))
    }
    func unit() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
    func below(_ n: UInt64) -> UInt64 { n == 0 ? 0 : rng.next() % n }
    func chance(_ p: Double) -> Bool { p > 0 && unit() < p }
    var millis: UInt64 { now / 1000 }
    func count(_ what: String) { faultCounts[what, default: 0] += 1 }
    func trace(_ line: @autoclosure () -> String) {
        if options.trace { print("\(Double(now) / 1e6)s groups: \(line())") }
    }
    func mixDigest(_ values: UInt64...) { fnv1a(&digest, values) }

    // MARK: Addresses

    /// Which node answers at `address` now.
    func owner(of address: String) -> (world: Int, node: Int)? {
        if let s = swapped[address] { return s }
        guard address.hasPrefix("sim:g"), let dot = address.firstIndex(of: ".") else { return nil }
        let group = address[address.index(address.startIndex, offsetBy: 5)..<dot]
        guard let g = Int(group), let k = Int(address[address.index(after: dot)...]), g >= 1, g <= worlds.count, k < worlds[g - 1].nodes.count else {
            return nil
        }
        return (g - 1, k)
    }

    /// A client request to whatever answers at `address` (lost when that group is cut off).
    func request(to address: String, client: ClientRef, frame: Frame) {
        guard let (w, k) = owner(of: address), isolated != w, !(faultsOn && chance(0.01)) else { return }
        let world = worlds[w]
        world.schedule(.request(node: k, client: client, frame: frame), at: now + world.mix.latencyMinMicros + below(world.mix.latencyJitterMicros))
    }

    // MARK: Running

    public func run() -> GroupsResult {
        for w in worlds { w.prepare() }
        schedule(.register, after: 50_000)
        schedule(.routedTimer, after: 10_000)
        if options.faults { schedule(.fault, after: 1_000_000 + below(2_000_000)) }
        let faultEnd = UInt64(options.seconds * 1e6)
        schedule(.endFaults, after: faultEnd)
        var stopped = Array(repeating: false, count: worlds.count)
        while violations.isEmpty && worlds.allSatisfy({ $0.checker.violations.isEmpty }) {
            if worlds.indices.allSatisfy({ stopped[$0] || worlds[$0].done }) { break }
            // The earliest event of the coordinator or of a running world; ties go to the
            // coordinator, then to the lower group.
            var pick: Int?  // nil: the coordinator
            var best = queue.min?.time ?? UInt64.max
            for k in worlds.indices where !stopped[k] {
                if let t = worlds[k].nextEventTime, t < best {
                    best = t
                    pick = k
                }
            }
            if best == UInt64.max { break }
            if let k = pick {
                now = best
                if !worlds[k].step() { stopped[k] = true }
                // A group that met its liveness phase falls silent (its clients stop) while the
                // others finish: nothing new to settle.
                if worlds[k].done { worlds[k].idle = true }
            } else {
                guard let e = queue.popMin() else { break }
                now = e.time
                handle(e.event)
            }
        }
        var results: [SimulationResult] = []
        let stoppedByRouting = !violations.isEmpty
        for (k, w) in worlds.enumerated() {
            let r = w.finish()
            results.append(r)
            // A routed violation stops every group at once: their liveness reports say nothing then.
            if !stoppedByRouting { violations += r.violations.map { "\(names[k]): \($0)" } }
        }
        if violations.isEmpty { routed.finalCheck() }
        for r in results { mixDigest(r.digest) }
        var faults = faultCounts
        for (k, r) in results.enumerated() { for (name, n) in r.faults { faults["\(names[k]) \(name)", default: 0] += n } }
        return GroupsResult(
            seed: options.seed, violations: violations, digest: digest, virtualSeconds: Double(now) / 1e6, groups: results,
            routedAcknowledged: routed.acks.count, staleRoutesRefused: routed.staleRefused, faults: faults)
    }

    func handle(_ e: GroupsEvent) {
        switch e {
        case .register:
            schedule(.register, after: 200_000)
            for (w, world) in worlds.enumerated() where isolated != w {
                for n in world.nodes where n.node != nil && now >= n.pausedUntil {
                    guard let r = n.node!.registration else { continue }
                    for ns in nameServers where ns.up && !ns.cutFromGroup.contains(w) {
                        _ = ns.registry.register(r, now: millis)
                    }
                }
            }
        case .routedTimer:
            schedule(.routedTimer, after: 20_000)
            if let g = isolated, routed.created.count == worlds.count,
                routed.route?.groups.contains(where: { $0.group == names[(g + 1) % worlds.count] }) ?? false
            {
                partnerRoutableTicks += 1
            }
            routed.timer()
        case .nameRequest(let k, let request, let topic):
            let ns = nameServers[k]
            guard ns.up && !ns.cutFromClients else { return }
            var route = ns.registry.route(topic, now: millis)
            route.complete = now - ns.startedAt >= SimNameServer.warmupMicros
            let notFound = route.groups.isEmpty && route.complete
            mixDigest(21, now, UInt64(k), request, UInt64(route.groups.count))
            schedule(.nameReply(ns: k, request: request, route: notFound ? nil : route, notFound: notFound), after: 200 + below(2_000))
        case .nameReply(let k, let request, let route, let notFound):
            routed.nameReply(ns: k, request: request, route: route, notFound: notFound)
        case .nsRestart(let k):
            guard !nameServers[k].up else { return }  // brought back already (the end of the faults)
            nameServers[k] = SimNameServer()
            nameServers[k].startedAt = now
            trace("name server \(k + 1) restarts, knowing no group")
        case .nsHealGroup(let k, let g):
            nameServers[k].cutFromGroup.remove(g)
        case .nsHealClients(let k):
            nameServers[k].cutFromClients = false
        case .healGroup(let g):
            guard isolated == g else { return }
            isolated = nil
            let partner = (g + 1) % worlds.count
            let ownAcks = worlds[partner].checker.acknowledged - partnerOwnAcksAtIsolation
            trace("\(names[g]) reachable again; \(names[partner]) acknowledged \(partnerAcksDuringIsolation) routed sends meanwhile")
            // The other group served its own clients meanwhile: it must have served routed sends too.
            if partnerAcksDuringIsolation == 0 && ownAcks >= 20 && now - isolatedSince >= 2_000_000 && partnerRoutableTicks >= 75 {
                violations.append(
                    "t=\(Double(now) / 1e6)s: while \(names[g]) was cut off for \(Double(now - isolatedSince) / 1e6) s, \(names[partner]) acknowledged \(ownAcks) sends of its own clients but none of the routed producer's"
                )
            }
        case .unswap:
            for a in swapped.keys.sorted() { generation[a, default: 0] += 1 }
            swapped = [:]
        case .fault:
            guard faultsOn else { return }
            schedule(.fault, after: 1_000_000 + below(3_000_000))
            drawFault()
        case .endFaults:
            faultsOn = false
            for k in nameServers.indices where !nameServers[k].up { handle(.nsRestart(k)) }
            for k in nameServers.indices {
                nameServers[k].cutFromGroup = []
                nameServers[k].cutFromClients = false
            }
            if let g = isolated { handle(.healGroup(g)) }
            handle(.unswap)
        }
    }

    func drawFault() {
        let k = Int(below(UInt64(nameServers.count)))
        switch below(6) {
        case 0:
            guard nameServers[k].up else { return }
            nameServers[k].up = false
            count("name server crash")
            trace("name server \(k + 1) crashes")
            schedule(.nsRestart(k), after: 200_000 + below(1_800_000))
        case 1:
            let g = Int(below(UInt64(worlds.count)))
            nameServers[k].cutFromGroup.insert(g)
            count("name server cut from a group")
            trace("name server \(k + 1) hears nothing from \(names[g])")
            schedule(.nsHealGroup(ns: k, group: g), after: 1_000_000 + below(3_000_000))
        case 2:
            nameServers[k].cutFromClients = true
            count("name server cut from clients")
            schedule(.nsHealClients(k), after: 500_000 + below(1_500_000))
        case 3:
            guard isolated == nil else { return }
            let g = Int(below(UInt64(worlds.count)))
            isolated = g
            isolatedSince = now
            partnerAcksDuringIsolation = 0
            partnerRoutableTicks = 0
            partnerOwnAcksAtIsolation = worlds[(g + 1) % worlds.count].checker.acknowledged
            count("group cut off")
            trace("\(names[g]) cut off from clients and name servers")
            schedule(.healGroup(g), after: 2_000_000 + below(3_000_000))
        default:
            // A stale route: group A's address (its leader's, when one leads) answered by the
            // node of group B with the same index, for a while.
            guard swapped.isEmpty else { return }
            let a = Int(below(UInt64(worlds.count)))
            let b = (a + 1 + Int(below(UInt64(worlds.count - 1)))) % worlds.count
            let nodes = worlds[a].nodes.prefix(worlds[a].options.nodes)
            let k = nodes.first(where: { $0.node?.isLeader ?? false })?.index ?? Int(below(UInt64(nodes.count)))
            let address = worlds[a].address(of: k)
            swapped[address] = (b, k)
            generation[address, default: 0] += 1
            count("address taken by another group")
            trace("\(address) (\(names[a])) now answered by \(names[b])'s n\(k + 1)")
            schedule(.unswap, after: 1_000_000 + below(2_000_000))
        }
    }
}
