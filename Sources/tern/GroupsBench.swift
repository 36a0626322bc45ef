// `tern bench groups`: what a second broker group costs per message. One local group of three,
// and two groups of three behind two name servers, take the same paced load (--rate sends a
// second, one message each) in interleaved rounds; each round counts the CPU of every process of
// its cluster (nodes, name servers) and of this client per acknowledged message. The goal: two
// groups at most 1.1x one group's CPU per message. It also counts the client's name server
// requests during the rounds, to show that no send asks a name server.
import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernLauncher
import TernProtocol

struct BenchGroups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "groups",
        abstract: "CPU per acknowledged message of two broker groups behind name servers next to one group, at the same paced load, in interleaved rounds.")

    @Option(help: "Seconds per setup per round.") var duration: Double = 10
    @Option(help: "Rounds (each: one group, then two, or the reverse).") var rounds = 4
    @Option(help: "Sends a second, the same for both setups (below either's capacity).") var rate = 8000
    @Option(help: "Sends in flight at most.") var inflight = 64
    @Option(help: "Message body size in bytes.") var size = 1024
    @Option(help: "Queues of the topic (over both groups in the two-group setup).") var queues: UInt32 = 8
    @Flag(help: "Print a JSON summary.") var json = false

    func run() async throws {
        guard duration > 0, rounds >= 1, rate >= 1, inflight >= 1, queues >= 2 else {
            throw ValidationError("--duration, --rounds, --rate, --inflight must be positive, --queues at least 2")
        }
        let root = FileManager.default.currentDirectoryPath + "/.build/bench-groups/\(getpid())"
        var used: Set<Int> = []
        func port() -> Int {
            var p = freeLoopbackPort()
            while used.contains(p) { p = freeLoopbackPort() }
            used.insert(p)
            return p
        }
        let onePorts = (0..<3).map { _ in port() }
        let twoPorts = [(0..<3).map { _ in port() }, (0..<3).map { _ in port() }]
        let one = LocalCluster(nodes: 3, basePort: 0, dataRoot: root + "/one", ports: onePorts)
        let two = LocalGroups(groups: 2, nodes: 3, basePort: 0, nameServerPorts: [port(), port()], dataRoot: root + "/two", ports: { twoPorts[$0] })
        defer {
            one.stopAll()
            two.stopAll()
            try? FileManager.default.removeItem(atPath: root)
        }
        try one.startAll()
        try two.startAll()
        _ = try await two.waitUntilRegistered()
        let oneClient = try TernCluster(endpoints: one.endpoints)
        _ = try await waitForLeader(oneClient)
        try await oneClient.createTopic("bench", queues: queues)
        let twoClient = try TernCluster(nameservers: two.nameServerEndpoints)
        let plan = try await twoClient.createTopic("bench", queues: queues, brokerGroups: nil)
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
        let setups: [String: (Producer, () -> [Int32])] = [
            "one": (Producer(cluster: oneClient, group: "bench"), { one.ids.compactMap { one.processes[$0]?.processIdentifier } }),
            "two": (
                Producer(cluster: twoClient, group: "bench"),
                {
                    two.groups.flatMap { g in g.ids.compactMap { g.processes[$0]?.processIdentifier } }
                        + two.nameServerProcesses.values.map(\.processIdentifier)
                }
            ),
        ]
        if !json {
            print(
                "one group on \(one.endpoints.joined(separator: ",")); two groups (\(plan.map(\.description).joined(separator: " "))) behind \(two.nameServerEndpoints.joined(separator: ","))"
            )
            print("paced at \(rate) sends/s, \(inflight) in flight at most, \(size)-byte bodies, \(queues) queues")
        }
        func round(_ name: String, seconds: Double) async throws -> BenchRound {
            let (producer, pids) = setups[name]!
            return try await measurePacedRound(rate: rate, inflight: inflight, name, seconds: seconds, pids: pids()) {
                _ = try await producer.send(Message(topic: "bench", body: body))
            }
        }
        _ = try await round("one", seconds: 2)
        _ = try await round("two", seconds: 2)
        let requestsBefore = twoClient.nameServerRequests ?? 0
        var results: [BenchRound] = []
        for r in 1...rounds {
            let order = r % 2 == 1 ? ["one", "two"] : ["two", "one"]
            var got: [String: BenchRound] = [:]
            for name in order { got[name] = try await round(name, seconds: duration) }
            let (a, b) = (got["one"]!, got["two"]!)
            results += [a, b]
            if !json {
                print(
                    String(
                        format: "round %d: one group %7.0f msg/s %6.1f µs CPU/msg | two groups %7.0f msg/s %6.1f µs CPU/msg | ratio %.3f", r, a.perSecond,
                        a.cpuMicrosPerMessage, b.perSecond, b.cpuMicrosPerMessage, b.cpuMicrosPerMessage / a.cpuMicrosPerMessage))
            }
        }
        let requests = (twoClient.nameServerRequests ?? 0) - requestsBefore
        let sends = results.filter { $0.path == "two" }.reduce(0) { $0 + $1.messages }
        await oneClient.shutdown()
        await twoClient.shutdown()
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let oneCPU = median(results.filter { $0.path == "one" }.map(\.cpuMicrosPerMessage))
        let twoCPU = median(results.filter { $0.path == "two" }.map(\.cpuMicrosPerMessage))
        let oneServer = median(results.filter { $0.path == "one" }.map(\.serverMicrosPerMessage))
        let twoServer = median(results.filter { $0.path == "two" }.map(\.serverMicrosPerMessage))
        if json {
            struct Summary: Encodable {
                var rounds: [BenchRound]
                var oneCPUMicros, twoCPUMicros, ratio, oneServerMicros, twoServerMicros: Double
                var nameServerRequests, twoGroupSends, rate, inflight, size: Int
            }
            try printJSON(
                Summary(
                    rounds: results, oneCPUMicros: oneCPU, twoCPUMicros: twoCPU, ratio: twoCPU / oneCPU, oneServerMicros: oneServer,
                    twoServerMicros: twoServer, nameServerRequests: requests, twoGroupSends: sends, rate: rate, inflight: inflight, size: size))
        } else {
            print(
                String(
                    format:
                        "medians: one group %.1f µs CPU/msg (nodes %.1f), two groups %.1f µs CPU/msg (nodes and name servers %.1f); two/one %.3fx (goal: at most 1.1x)",
                    oneCPU, oneServer, twoCPU, twoServer, twoCPU / oneCPU))
            print("name server requests during the measured rounds: \(requests), for \(sends) sends through them")
        }
    }
}

/// Sends at `rate` a second from at most `inflight` tasks for `seconds` (a send that falls behind
/// its slot goes at once); counts acknowledgements and the CPU of `pids` and this process.
func measurePacedRound(
    rate: Int, inflight: Int, _ path: String, seconds: Double, pids: [Int32], _ send: @escaping @Sendable () async throws -> Void
)
    async throws -> BenchRound
{
    let counts = NIOLockedValueBox((ok: 0, failed: 0))
    let before = ProcessSample(pids)
    let clock = ContinuousClock()
    let start = clock.now
    let end = start + .seconds(seconds)
    let total = Int(Double(rate) * seconds)
    let next = NIOLockedValueBox(0)
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<inflight {
            group.addTask {
                while true {
                    let k = next.withLockedValue { n -> Int in
                        defer { n += 1 }
                        return n
                    }
                    guard k < total else { return }
                    let slot = start + .nanoseconds(Int64(Double(k) / Double(rate) * 1e9))
                    if slot > clock.now { try? await Task.sleep(until: slot, clock: clock) }
                    if clock.now > end + .seconds(5) { return }
                    do {
                        try await send()
                        counts.withLockedValue { $0.ok += 1 }
                    } catch {
                        counts.withLockedValue { $0.failed += 1 }
                    }
                }
            }
        }
    }
    return BenchRound(path, before: before, after: ProcessSample(pids), counts: counts.withLockedValue { $0 })
}
