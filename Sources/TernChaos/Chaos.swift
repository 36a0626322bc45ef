// `tern chaos`: a real three-node cluster on this machine (child `tern serve` processes, peer
// links through fault-injecting relays, a storage fault hook per node), client workloads of
// every kind, and a nemesis that kills, pauses, partitions and slows nodes on a schedule drawn
// from a seed. When the faults stop, everything heals, the workloads settle, every queue is
// read back from the start, and the checker reports what was lost, duplicated, unexpected, out
// of order, early or torn, and how long each fault took to recover from.
import ArgumentParser
import CTernIO
import Foundation
import NIOPosix
@_spi(Testing) import TernClient
import TernLauncher
import TernProtocol
import TernStorage

public struct ChaosRun: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a three-node cluster under faults with every workload; check and report (docs/chaos.md).",
        discussion: """
            Exits 0 when nothing acknowledged was lost and nothing was unexpected, out of order, \
            torn or (from an idempotent producer) duplicated. The history and the report go to \
            --out; the seed replays the same fault schedule.
            """)

    @Option(help: "Seconds of faults (then the cluster heals and the run is checked).") var duration: Int = 300
    @Option(help: "Seed of the fault schedule (default: drawn, and printed).") var seed: UInt64?
    @Option(help: "Folder for the history, the report and the nodes' data and logs (default: ./tern-chaos/SEED).") var out: String?
    @Option(help: "Mean seconds between faults.") var every: Double = 8
    @Option(help: "Only these fault kinds, comma separated (default: all; see docs/chaos.md).") var kinds: String?
    @Option(help: "Storage backend of the nodes: auto, uring or posix.") var io: IOBackendChoice = .auto
    @Flag(help: "Keep the nodes' data when the run passes (it is always kept when it fails).") var keepData = false
    @Option(help: "Run the nodes with a planted bug (dedupe-off, deliver-half, release-early, ...), to see the checker catch it.") var plant: [String] = []
    @Flag(
        help:
            "Retention stress: 256 KiB segments, the log kept to 2 MiB, snapshots every 1 MiB or 500 entries, so that snapshots, deletions and installs happen during the faults; messages retention deleted are counted, not lost."
    ) var retentionStress = false
    @Option(help: "Broker groups of three, behind two name servers: faults in every group and in the name servers, workloads across all (docs/chaos.md).")
    var groups = 1
    @Option(help: "With --groups: a client-side planted bug (retry-other-group), to see the checker catch it.") var plantClient: String?

    /// What `--retention-stress` gives every node.
    static let retentionStressArgs = ["--segment-kb", "256", "--retention-bytes", "2MiB", "--snapshot-entries", "500", "--snapshot-bytes", "1MiB"]

    public init() {}

    public func run() async throws {
        tern_stdout_line_buffered()
        guard duration >= 10 && duration <= 86_400 else { throw ValidationError("--duration must be 10 to 86400 seconds") }
        guard every >= 1 else { throw ValidationError("--every must be at least 1 second") }
        guard groups >= 1 && groups <= 3 else { throw ValidationError("--groups must be 1 to 3") }
        if groups > 1 && retentionStress { throw ValidationError("--retention-stress runs one group") }
        if groups == 1 && plantClient != nil { throw ValidationError("--plant-client is for runs with --groups") }
        let allKinds = ChaosNemesis.kinds + (groups > 1 ? ChaosNemesis.nameServerKinds : [])
        let chosen = kinds.map { $0.split(separator: ",").map(String.init) } ?? allKinds
        for k in chosen where !allKinds.contains(k) {
            throw ValidationError("--kinds: \(k) is not a fault kind (\(allKinds.joined(separator: ", ")))")
        }
        guard siblingExecutable("tern") != nil else {
            throw ValidationError("the tern executable must be next to tern-chaos (its killed-client workload runs `tern send`); build both")
        }
        let seed = self.seed ?? UInt64.random(in: 1...999_999)
        let folder = out ?? "./tern-chaos/\(seed)"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder + "/faults", withIntermediateDirectories: true)
        print("tern chaos: seed \(seed), \(duration) s of faults (one every ~\(fmt(every)) s), output in \(folder)")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let planted = plant.flatMap { ["--plant", $0] } + (retentionStress ? ChaosRun.retentionStressArgs : [])
        let names = (1...groups).map { "g\($0)" }
        var clusters: [ChaosCluster] = []
        var nameServers: LocalNameServers?
        if groups == 1 {
            clusters = [try ChaosCluster(folder: folder, io: io, group: group, extraArgs: planted, segmentMb: 64)]
        } else {
            // Every group and both name servers hold one cluster secret; each group's nodes,
            // relays, fault files, data and logs live under FOLDER/gK.
            let secret = folder + "/peer-secret"
            try writePeerSecret(path: secret)
            var ports: Set<Int> = []
            while ports.count < 2 { ports.insert(freeLoopbackPort()) }
            let ns = LocalNameServers(
                endpoints: ports.sorted().map { "127.0.0.1:\($0)" }, secretPath: secret, logDirectory: folder + "/logs", executable: siblingExecutable("tern")!)
            nameServers = ns
            for name in names {
                try FileManager.default.createDirectory(atPath: folder + "/\(name)/faults", withIntermediateDirectories: true)
                let args = planted + ["--broker-group", name, "--nameservers", ns.endpoints.joined(separator: ","), "--peer-secret", secret]
                clusters.append(try ChaosCluster(folder: folder + "/\(name)", io: io, group: group, extraArgs: args, segmentMb: 64))
            }
        }
        if retentionStress { print("retention stress: \(ChaosRun.retentionStressArgs.joined(separator: " "))") }
        if !plant.isEmpty { print("planted bugs on every node: \(plant.joined(separator: ", ")) (the run should fail)") }
        let history = ChaosHistory(path: folder + "/history.jsonl")
        defer {
            for c in clusters { c.stopAll() }
            nameServers?.stopAll()
        }
        try nameServers?.startAll()
        for c in clusters { try c.startAll() }
        // Each group's own client (the nemesis, settling and the checker); the workloads' client
        // goes through the name servers when there are several groups.
        let direct = try clusters.map { try TernCluster(endpoints: $0.endpoints) }
        for d in direct { _ = try await waitForLeader(d) }
        let client: TernCluster
        var placements: [String: [TopicPlacement]] = [:]
        if let ns = nameServers {
            _ = try await waitForRegistrations(nameServers: ns.endpoints, groups: names, timeoutSeconds: 60)
            var options = TernCluster.Options()
            if let p = plantClient {
                guard p == "retry-other-group" else { throw ValidationError("--plant-client \(p) is unknown (retry-other-group)") }
                options.plantRetryOtherGroup = true
                print("planted client bug: \(p) (the run should fail)")
            }
            client = try TernCluster(nameservers: ns.endpoints, options: options)
            for (topic, queues) in ChaosTopic.all(groups: groups) { placements[topic] = try await client.createTopic(topic, queues: queues, brokerGroups: nil) }
            print("name servers: \(ns.endpoints.joined(separator: " "))")
        } else {
            client = direct[0]
            for (topic, queues) in ChaosTopic.all { try await client.createTopic(topic, queues: queues) }
        }
        for (k, c) in clusters.enumerated() {
            print("\(groups > 1 ? "group \(names[k])" : "cluster") up: \(zip(c.ids, c.endpoints).map { "\($0)=\($1)" }.joined(separator: " ")); topics created")
        }

        let workloads = ChaosWorkloads(client: client, history: history, seed: seed)
        let stopConsumers = try await workloads.consumers()
        let producers = workloads.producers()
        let transactions = Task { await workloads.transactions() }
        let until = Double(duration)
        let target =
            nameServers.map { ["--nameservers", $0.endpoints.joined(separator: ",")] } ?? ["--endpoints", clusters[0].endpoints.joined(separator: ",")]
        let cliKills = Task { await ChaosNemesis.killClients(folder: folder, target: target, history: history, seed: seed, until: until) }
        let every = self.every
        let nsFaults = nameServers.map { ns in
            Task { await ChaosNemesis.nameServerFaults(servers: ns, history: history, seed: seed ^ 0x5E, every: every * 2, until: until, kinds: chosen) }
        }
        // One nemesis per group, at once: group 1 draws the seed's schedule, as a run of one group does.
        let nemeses = clusters.enumerated().map { k, c in
            ChaosNemesis(
                cluster: c, client: direct[k], history: history, seed: k == 0 ? seed : seed &+ UInt64(k) &* 0x9E37_79B9_7F4A_7C15, every: every,
                kinds: chosen.filter { ChaosNemesis.kinds.contains($0) }, label: groups > 1 ? names[k] : nil)
        }
        await withTaskGroup(of: Void.self) { tasks in
            for nemesis in nemeses {
                tasks.addTask {
                    var n = nemesis
                    await n.run(seconds: until)
                }
            }
        }
        await nsFaults?.value
        let cliAcked = await cliKills.value

        print("faults stopped at \(fmt(history.now)) s; healing")
        for c in clusters { try await c.healAll() }
        if let ns = nameServers {
            for k in ns.endpoints.indices {
                ns.resume(k)
                if !ns.running.contains(k) { try ns.start(k) }
            }
        }
        for d in direct { _ = try await waitForLeader(d, timeoutSeconds: 60) }
        // Let the workloads run on healthy for a while (recovery must be complete), then stop them.
        try await Task.sleep(for: .seconds(5))
        workloads.stop()
        for t in producers { await t.value }
        print("workloads stopped at \(fmt(history.now)) s; settling")
        for (k, c) in clusters.enumerated() { try await settle(client: direct[k], cluster: c, workloads: workloads, history: history) }
        workloads.finishTransactions()
        await transactions.value
        for s in stopConsumers { await s() }

        let trim = retentionStress ? ((try? await client.status())?.map(\.trimIndex).max() ?? 0) : 0
        var checker = ChaosChecker(
            client: client, history: history, workloads: workloads, cliAcked: cliAcked, seed: seed, duration: duration, trimIndex: trim)
        if groups > 1 {
            checker.readers = zip(names, direct).map { ($0, $1) }
            checker.placements = placements
        }
        let report = try await checker.check()
        try report.text.write(toFile: folder + "/report.txt", atomically: true, encoding: .utf8)
        try report.recoveryCSV.write(toFile: folder + "/recovery.csv", atomically: true, encoding: .utf8)
        history.close()
        print(report.text)
        await client.shutdown()
        for d in direct where d !== client { await d.shutdown() }
        for c in clusters { c.stopAll() }
        nameServers?.stopAll()
        if report.failed {
            print("tern chaos: FAILED (seed \(seed)); history, report, data and logs in \(folder)")
            throw ExitCode(1)
        }
        try? await group.shutdownGracefully()
        if !keepData {
            try? FileManager.default.removeItem(atPath: folder + "/data")
            for name in names where groups > 1 { try? FileManager.default.removeItem(atPath: folder + "/\(name)/data") }
        }
        print("tern chaos: passed (seed \(seed)); report in \(folder)/report.txt")
    }

    /// Waits until every node applied the same commit index, the delayed messages sent are due,
    /// undecided transactions are decided (checks run every 2 s here), and the live consumers
    /// have read everything.
    func settle(client: TernCluster, cluster: ChaosCluster, workloads: ChaosWorkloads, history: ChaosHistory) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(90)
        var caughtUp = false
        while clock.now < deadline {
            if let status = try? await client.status(), status.count == cluster.ids.count,
                Set(status.map(\.appliedIndex)).count == 1, status.allSatisfy({ $0.appliedIndex == $0.commitIndex })
            {
                caughtUp = true
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        if !caughtUp { history.note("settle: the nodes did not converge on one applied index within 90 s") }
        // Delayed messages: due within 5 s of their send; transaction checks: every 2 s.
        try await Task.sleep(for: .seconds(8))
        let consumersDeadline = clock.now + .seconds(60)
        while clock.now < consumersDeadline {
            let trim = retentionStress ? ((try? await client.status())?.map(\.trimIndex).max() ?? 0) : 0
            let backlog = try await ChaosChecker.backlog(client: client, workloads: workloads, trimIndex: trim)
            if backlog == 0 { break }
            try await Task.sleep(for: .milliseconds(500))
        }
    }
}

/// The nodes (a `LocalCluster` whose nodes dial their peers through relays), the relays, and
/// the nodes' fault files.
public final class ChaosCluster: @unchecked Sendable {
    public let folder: String
    public let nodes: LocalCluster
    /// The member in each slot: n1, n2, n3 at first; a `replace-node` fault puts a new id in a
    /// slot (same endpoint, same relays, same fault file; a new data directory).
    public private(set) var ids: [String]
    public var endpoints: [String] { nodes.endpoints }
    private var nextID = 4
    /// relays["n1>n2"]: how n1 reaches n2.
    private(set) var relays: [String: LinkProxy] = [:]
    private var paused: Set<String> = []

    /// Three `tern-chaos serve` nodes (this executable, or `executable`) with relays on every
    /// peer link and a fault file each; not started yet.
    public init(
        folder: String, io: IOBackendChoice, group: MultiThreadedEventLoopGroup, extraArgs: [String] = [], segmentMb: Int = 64,
        executable: String = ternExecutable()
    ) throws {
        self.folder = folder
        let ids = ["n1", "n2", "n3"]
        self.ids = ids
        let ports = ids.map { _ in freeLoopbackPort() }
        var relays: [String: LinkProxy] = [:]
        for (a, from) in ids.enumerated() {
            for (b, to) in ids.enumerated() where a != b {
                let relay = LinkProxy(name: "\(from)>\(to)", targetPort: ports[b])
                try relay.start(group: group)
                relays["\(from)>\(to)"] = relay
            }
        }
        self.relays = relays
        let dialPorts = relays.mapValues(\.port)
        nodes = LocalCluster(
            nodes: 3, basePort: 0, dataRoot: folder + "/data",
            extraArgs: [
                "--io", "\(io)", "--segment-mb", "\(segmentMb)", "--transaction-check-first-ms", "1000",
                "--transaction-check-interval-ms", "2000", "--transaction-max-checks", "30",
            ] + extraArgs,
            ports: ports, logDirectory: folder + "/logs", executable: executable, serveCommand: ["serve"],
            nodeArgs: { id in
                [
                    // By endpoint: a member replaced by a new id in the same slot keeps the relays.
                    "--dial",
                    ids.filter { $0 != id }.map { "127.0.0.1:\(ports[ids.firstIndex(of: $0)!])=127.0.0.1:\(dialPorts["\(id)>\($0)"]!)" }.joined(separator: ","),
                    "--fault-file", "\(folder)/faults/\(id)",
                ]
            })
    }

    /// The slot's original id (relays and fault files are named by it).
    func slotName(_ id: String) -> String { ids.firstIndex(of: id).map { nodes.ids[$0] } ?? id }

    func faultFile(_ id: String) -> String { "\(folder)/faults/\(slotName(id))" }

    public func start(_ id: String) throws {
        nodes.reap(id)
        guard let slot = ids.firstIndex(of: id) else { return }
        if id == nodes.ids[slot] {
            try nodes.start(id)
        } else {
            try nodes.startJoining(id, listen: endpoints[slot], join: endpoints[(slot + 1) % ids.count], extra: nodes.nodeArgs(nodes.ids[slot]))
        }
    }

    /// Replaces the member `old` by a new id in its slot, as docs/operations.md says: the old
    /// node is stopped and its data wiped, the new one started empty (`--join`), then
    /// `tern admin member replace` adds it, waits until it caught up, promotes it and removes
    /// the old one. Returns the new id and the command's output.
    public func replace(_ old: String) throws -> (String, String) {
        guard let slot = ids.firstIndex(of: old), let tern = siblingExecutable("tern") else { throw ValidationError("cannot replace \(old)") }
        kill(old)
        try? FileManager.default.removeItem(atPath: "\(nodes.dataRoot)/\(old)")
        let new = "n\(nextID)"
        nextID += 1
        ids[slot] = new
        try start(new)
        let via = endpoints.enumerated().filter { $0.offset != slot }.map(\.element)
        return (new, try runMemberReplace(tern: tern, old: old, new: new, endpoint: endpoints[slot], via: via))
    }

    public func startAll() throws { try nodes.startAll() }

    public var running: [String] { ids.filter { nodes.isRunning($0) } }

    public func kill(_ id: String) {
        if paused.remove(id) != nil { nodes.signal(id, SIGCONT) }
        nodes.kill(id)
    }

    public func pause(_ id: String) {
        nodes.signal(id, SIGSTOP)
        paused.insert(id)
    }

    public func resume(_ id: String) {
        guard paused.remove(id) != nil else { return }
        nodes.signal(id, SIGCONT)
    }

    /// Cuts (or heals) the directed links listed as "a>b".
    public func cut(_ links: [String], _ value: Bool = true) {
        for l in links {
            let ends = l.split(separator: ">").map { slotName(String($0)) }
            relays[ends.joined(separator: ">")]?.set(cut: value)
        }
    }

    public func setDisk(_ id: String, _ fault: String) {
        _ = FileManager.default.createFile(atPath: faultFile(id), contents: Data((fault + "\n").utf8))
    }

    /// Every link healed, every disk fault cleared, every paused node resumed, every node running.
    public func healAll() async throws {
        for r in relays.values { r.set(cut: false) }
        for id in ids {
            setDisk(id, "")
            resume(id)
        }
        try await Task.sleep(for: .milliseconds(200))
        for id in ids where !running.contains(id) { try start(id) }
    }

    public func stopAll() {
        for id in ids { resume(id) }
        nodes.stopAll()
        for r in relays.values { r.stop() }
        relays = [:]
    }
}

/// The fault schedule: one fault at a time, drawn from the seed, held for a drawn time, healed.
struct ChaosNemesis {
    static let kinds = [
        "kill-leader", "kill-follower", "kill-random", "kill-two", "pause-leader", "isolate-leader",
        "isolate-follower", "bridge", "one-way-leader-out", "slow-disk", "disk-full", "replace-node",
    ]
    let cluster: ChaosCluster
    let client: TernCluster
    let history: ChaosHistory
    let every: Double
    let kinds: [String]
    var rng: SplitMix
    /// The broker group this nemesis hits (runs with `--groups`): named in faults and prints.
    let label: String?
    /// Name server faults (runs with `--groups`).
    static let nameServerKinds = ["kill-nameserver", "pause-nameserver", "kill-nameservers"]

    init(
        cluster: ChaosCluster, client: TernCluster, history: ChaosHistory, seed: UInt64, every: Double, kinds: [String] = ChaosNemesis.kinds,
        label: String? = nil
    ) {
        self.label = label
        self.kinds = kinds
        self.cluster = cluster
        self.client = client
        self.history = history
        self.every = every
        rng = SplitMix(seed: seed)
    }

    /// The leader as the nodes report it (nil when none is known within 5 s).
    func leader() async -> String? {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(5)
        while clock.now < deadline {
            if let r = try? await client.queryRoute(), !r.leader.isEmpty, cluster.running.contains(r.leader) { return r.leader }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    mutating func run(seconds: Double) async {
        var n = 0
        while history.now < seconds {
            let wait = rng.between(0.5, 1.5) * every
            try? await Task.sleep(for: .milliseconds(Int64(min(wait, max(0, seconds - history.now)) * 1000)))
            guard history.now < seconds, !kinds.isEmpty else { break }
            let kind = kinds[rng.below(kinds.count)]
            let hold = rng.between(1.5, 5.0)
            let pickA = rng.below(3), pickB = rng.below(2)
            n += 1
            await inject(kind, hold: hold, pickA: pickA, pickB: pickB, number: n)
        }
    }

    private func inject(_ kind: String, hold: Double, pickA: Int, pickB: Int, number: Int) async {
        let ids = cluster.ids
        let leader = await leader()
        let followers = ids.filter { $0 != leader }
        let follower = followers.isEmpty ? ids[pickA] : followers[pickB % followers.count]
        let random = ids[pickA]
        var target = ""
        let started = history.now
        func others(_ id: String) -> [String] { ids.filter { $0 != id } }
        func isolate(_ id: String) -> [String] { others(id).flatMap { ["\(id)>\($0)", "\($0)>\(id)"] } }
        var heal: () async throws -> Void = {}
        switch kind {
        case "kill-leader", "kill-follower", "kill-random":
            target = kind == "kill-leader" ? (leader ?? random) : kind == "kill-follower" ? follower : random
            cluster.kill(target)
            heal = { [cluster, target] in try cluster.start(target) }
        case "kill-two":
            let two = [random, others(random)[pickB]]
            target = two.joined(separator: "+")
            for id in two { cluster.kill(id) }
            heal = { [cluster] in for id in two { try cluster.start(id) } }
        case "pause-leader":
            target = leader ?? random
            cluster.pause(target)
            heal = { [cluster, target] in cluster.resume(target) }
        case "isolate-leader", "isolate-follower":
            target = kind == "isolate-leader" ? (leader ?? random) : follower
            let links = isolate(target)
            cluster.cut(links)
            heal = { [cluster] in cluster.cut(links, false) }
        case "bridge":
            // The bridge node sees both others; the two others do not see each other.
            let bridge = random
            let (a, b) = (others(bridge)[0], others(bridge)[1])
            target = "\(a)|\(b) via \(bridge)"
            let links = ["\(a)>\(b)", "\(b)>\(a)"]
            cluster.cut(links)
            heal = { [cluster] in cluster.cut(links, false) }
        case "one-way-leader-out":
            target = leader ?? random
            let links = others(target).map { "\(target)>\($0)" }
            cluster.cut(links)
            heal = { [cluster] in cluster.cut(links, false) }
        case "slow-disk":
            target = random
            cluster.setDisk(target, "slow 200")
            heal = { [cluster, target] in cluster.setDisk(target, "") }
        case "disk-full":
            target = random
            cluster.setDisk(target, "full")
            heal = { [cluster, target] in
                cluster.setDisk(target, "")
                // A node whose disk filled stops itself (fail-stop); the operator restarts it.
                if !cluster.running.contains(target) { try cluster.start(target) }
            }
        case "replace-node":
            // Permanent: the member's machine is gone; a new member takes its place while the
            // workloads go on. The leader half of the time.
            let old = pickB == 0 ? (leader ?? random) : follower
            print("[\(fmt(started)) s] fault \(number): replace-node \(prefix)\(old) (its data wiped)")
            do {
                let (new, out) = try cluster.replace(old)
                target = "\(old) by \(new)"
                for line in out.split(separator: "\n") { print("    \(line)") }
            } catch {
                target = old
                history.problem("replace-node \(prefix)\(old) failed: \(error)")
            }
            history.fault(.init(kind: kind, target: prefix + target, started: started, healed: history.now, group: label))
            return
        default:
            return
        }
        print("[\(fmt(started)) s] fault \(number): \(kind) \(prefix)\(target) for \(fmt(hold)) s")
        try? await Task.sleep(for: .milliseconds(Int64(hold * 1000)))
        do { try await heal() } catch { history.note("healing \(kind) \(prefix)\(target) failed: \(error)") }
        history.fault(.init(kind: kind, target: prefix + target, started: started, healed: history.now, group: label))
    }

    var prefix: String { label.map { "\($0)/" } ?? "" }

    /// Runs with `--groups`: every 0.5-1.5 x `every` s, a name server killed, paused, or every
    /// one killed, for 1.5-5 s, then brought back (empty: it learns the groups again from their
    /// next registrations).
    static func nameServerFaults(servers: LocalNameServers, history: ChaosHistory, seed: UInt64, every: Double, until: Double, kinds: [String]) async {
        let mine = kinds.filter { nameServerKinds.contains($0) }
        guard !mine.isEmpty else { return }
        var rng = SplitMix(seed: seed)
        while history.now < until {
            let wait = rng.between(0.5, 1.5) * every
            try? await Task.sleep(for: .milliseconds(Int64(min(wait, max(0, until - history.now)) * 1000)))
            guard history.now < until else { break }
            let kind = mine[rng.below(mine.count)]
            let hold = rng.between(1.5, 5.0)
            let k = rng.below(servers.endpoints.count)
            let started = history.now
            var target = "nameserver\(k + 1)"
            switch kind {
            case "kill-nameserver": servers.kill(k)
            case "pause-nameserver": servers.pause(k)
            default:
                target = "every nameserver"
                for j in servers.endpoints.indices { servers.kill(j) }
            }
            print("[\(fmt(started)) s] fault: \(kind) \(target) for \(fmt(hold)) s")
            try? await Task.sleep(for: .milliseconds(Int64(hold * 1000)))
            for j in servers.endpoints.indices {
                servers.resume(j)
                if !servers.running.contains(j) {
                    do { try servers.start(j) } catch { history.problem("restarting nameserver\(j + 1) failed: \(error)") }
                }
            }
            history.fault(.init(kind: kind, target: target, started: started, healed: history.now))
        }
    }

    /// Every 20-40 s, a `tern send` process sending as fast as it can is SIGKILLed 1-4 s in;
    /// returns the message ids it printed (acknowledged) before it died.
    static func killClients(folder: String, target: [String], history: ChaosHistory, seed: UInt64, until: Double) async -> [String: String] {
        var rng = SplitMix(seed: seed ^ 0xC11)
        var acked: [String: String] = [:]
        var k = 0
        while history.now < until {
            let pause = rng.between(20, 40)
            try? await Task.sleep(for: .milliseconds(Int64(min(pause, max(0, until - history.now)) * 1000)))
            guard history.now < until else { break }
            k += 1
            try? FileManager.default.createDirectory(atPath: "\(folder)/logs", withIntermediateDirectories: true)
            let outPath = "\(folder)/logs/cli-\(k).out"
            _ = FileManager.default.createFile(atPath: outPath, contents: nil)
            guard let outFile = FileHandle(forWritingAtPath: outPath) else { continue }
            let p = Process()
            guard let tern = siblingExecutable("tern") else {
                history.note("client kills skipped: no tern executable next to tern-chaos")
                return acked
            }
            p.executableURL = URL(fileURLWithPath: tern)
            p.arguments = ["send"] + target + ["--topic", ChaosTopic.cli, "--count", "1000000", "--body", "cli-\(k)"]
            p.standardOutput = outFile
            p.standardError = FileHandle.nullDevice
            do { try p.run() } catch { continue }
            let started = history.now
            try? await Task.sleep(for: .milliseconds(Int64(rng.between(1, 4) * 1000)))
            Foundation.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            try? outFile.close()
            let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            var n = 0
            // Complete lines only: a line cut by the kill is not counted.
            for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() where !line.isEmpty {
                acked[String(line)] = "cli-\(k) \(n)"
                n += 1
            }
            print("[\(fmt(started)) s] client kill \(k): a tern send process killed after \(n) acknowledged messages")
            history.fault(.init(kind: "client-kill", target: "tern send #\(k)", started: started, healed: history.now))
        }
        return acked
    }
}
