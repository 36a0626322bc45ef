// `tern bench metrics`: what metrics cost. Two local three-node groups side by side, one plain
// and one with its HTTP listeners on (the shell timing every step's latencies) and scraped at
// /metrics on every node every --scrape-interval seconds; the same producer load, 128 sends in
// flight, in interleaved rounds (plain then metered, then metered then plain, and so on). Reports each group's throughput and the
// ratio (the goal: metrics cost at most 3%).
import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernLauncher
import TernProtocol

struct BenchMetrics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics",
        abstract: "Throughput of a local 3-node group with metrics on and scraped, next to one without, in interleaved rounds.")

    @Option(help: "Seconds per group per round.") var duration: Double = 10
    @Option(help: "Rounds (each: plain, then metered).") var rounds = 3
    @Option(help: "Sends in flight (one message each).") var inflight = 128
    @Option(help: "Message body size in bytes.") var size = 1024
    @Option(help: "Seconds between scrapes of each node's /metrics.") var scrapeInterval: Double = 1
    @Flag(help: "Print a JSON summary.") var json = false

    func run() async throws {
        guard duration > 0, rounds >= 1, inflight >= 1, scrapeInterval > 0 else {
            throw ValidationError("--duration, --rounds, --inflight and --scrape-interval must be positive")
        }
        let root = FileManager.default.currentDirectoryPath + "/.build/bench-metrics/\(getpid())"
        var ports: Set<Int> = []
        while ports.count < 9 { ports.insert(freeLoopbackPort()) }
        let list = ports.sorted()
        let httpPorts = ["n1": list[6], "n2": list[7], "n3": list[8]]
        let plain = LocalCluster(nodes: 3, basePort: 0, dataRoot: root + "/plain", extraArgs: [], ports: Array(list[0..<3]), nodeArgs: { _ in [] })
        let metered = LocalCluster(
            nodes: 3, basePort: 0, dataRoot: root + "/metered", extraArgs: [], ports: Array(list[3..<6]),
            nodeArgs: { id in ["--http-listen", "127.0.0.1:\(httpPorts[id]!)"] })
        defer {
            plain.stopAll()
            metered.stopAll()
            try? FileManager.default.removeItem(atPath: root)
        }
        try plain.startAll()
        try metered.startAll()
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
        var producers: [String: (Producer, [Int32], TernCluster)] = [:]
        for (name, cluster) in [("plain", plain), ("metered", metered)] {
            let client = try TernCluster(endpoints: cluster.endpoints)
            _ = try await waitForLeader(client)
            try await client.createTopic("bench", queues: 8)
            producers[name] = (Producer(cluster: client, group: "bench"), cluster.ids.compactMap { cluster.processes[$0]?.processIdentifier }, client)
        }
        if !json {
            print(
                "plain group on \(plain.endpoints.joined(separator: ",")); metered on \(metered.endpoints.joined(separator: ",")), scraped every \(scrapeInterval) s"
            )
        }
        let scrapes = NIOLockedValueBox((count: 0, failed: 0, bytes: 0))
        func round(_ name: String, seconds: Double) async throws -> BenchRound {
            let (producer, pids, _) = producers[name]!
            let scraper: Task<Void, Never>? =
                name == "metered"
                ? Task {
                    while !Task.isCancelled {
                        for port in httpPorts.values.sorted() {
                            if let text = httpGet(port: port, path: "/metrics"), text.contains("tern_raft_commit_index") {
                                scrapes.withLockedValue { $0 = ($0.count + 1, $0.failed, $0.bytes + text.utf8.count) }
                            } else {
                                scrapes.withLockedValue { $0.failed += 1 }
                            }
                        }
                        try? await Task.sleep(for: .seconds(scrapeInterval))
                    }
                } : nil
            defer { scraper?.cancel() }
            return try await measureRound(inflight: inflight, name, seconds: seconds, pids: pids) {
                _ = try await producer.send(Message(topic: "bench", body: body))
            }
        }
        _ = try await round("plain", seconds: 1)
        _ = try await round("metered", seconds: 1)
        var results: [BenchRound] = []
        for r in 1...rounds {
            // ABBA: which group goes first alternates, so that a drift over the run (disk,
            // caches, the other tenants of the machine) favours neither.
            let a: BenchRound
            let b: BenchRound
            if r % 2 == 1 {
                a = try await round("plain", seconds: duration)
                b = try await round("metered", seconds: duration)
            } else {
                b = try await round("metered", seconds: duration)
                a = try await round("plain", seconds: duration)
            }
            results += [a, b]
            if !json {
                print(
                    String(
                        format: "round %d: plain %8.0f msg/s %6.1f µs CPU/msg | metered %8.0f msg/s %6.1f µs CPU/msg | ratio %.3f", r, a.perSecond,
                        a.cpuMicrosPerMessage, b.perSecond, b.cpuMicrosPerMessage, b.perSecond / a.perSecond))
            }
        }
        for (_, (_, _, client)) in producers { await client.shutdown() }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let plainRate = median(results.filter { $0.path == "plain" }.map(\.perSecond))
        let meteredRate = median(results.filter { $0.path == "metered" }.map(\.perSecond))
        let plainCPU = median(results.filter { $0.path == "plain" }.map(\.cpuMicrosPerMessage))
        let meteredCPU = median(results.filter { $0.path == "metered" }.map(\.cpuMicrosPerMessage))
        let s = scrapes.withLockedValue { $0 }
        guard s.count > 0 else { throw ValidationError("no scrape of /metrics succeeded (\(s.failed) failed)") }
        if json {
            struct Summary: Encodable {
                var rounds: [BenchRound]
                var plainPerSecond, meteredPerSecond, ratio, plainCPUMicros, meteredCPUMicros: Double
                var scrapes, scrapesFailed, meanScrapeBytes, inflight, size: Int
            }
            try printJSON(
                Summary(
                    rounds: results, plainPerSecond: plainRate, meteredPerSecond: meteredRate, ratio: meteredRate / plainRate, plainCPUMicros: plainCPU,
                    meteredCPUMicros: meteredCPU, scrapes: s.count, scrapesFailed: s.failed, meanScrapeBytes: s.bytes / s.count, inflight: inflight, size: size)
            )
        } else {
            print(
                String(
                    format:
                        "medians: plain %.0f msg/s, %.1f µs CPU/msg; metered %.0f msg/s, %.1f µs CPU/msg; metered/plain throughput %.3fx (goal: at least 0.97x); %d scrapes (%d failed), %d bytes each",
                    plainRate, plainCPU, meteredRate, meteredCPU, meteredRate / plainRate, s.count, s.failed, s.bytes / s.count))
        }
    }
}

/// A plain HTTP/1.1 GET of 127.0.0.1:port/path on a new connection; the body, or nil on any
/// failure or a status other than 200. For benchmarks and checks, not a client for the world.
func httpGet(port: Int, path: String, timeoutSeconds: Int = 5) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    var expected: Int?
    while expected.map({ response.count < $0 }) ?? true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return nil }
        if n == 0 { break }
        response.append(contentsOf: buffer[0..<n])
        // Once the head is in: the whole response is the head plus Content-Length bytes.
        if expected == nil, let end = response.firstRange(of: Array("\r\n\r\n".utf8)) {
            let head = String(decoding: response[..<end.lowerBound], as: UTF8.self).lowercased()
            if let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
                let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
            {
                expected = end.upperBound + length
            }
        }
    }
    let text = String(decoding: response, as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 200"), let split = text.range(of: "\r\n\r\n") else { return nil }
    return String(text[split.upperBound...])
}
