// `tern bench produce | consume | failover`: load against a running cluster (or, for failover,
// a local one this command starts), with figures from HdrHistogram.
import ArgumentParser
import Foundation
import Histogram
import NIOConcurrencyHelpers
import TernClient
import TernLauncher
import TernProtocol

/// Latencies in microseconds, shared by the load tasks.
final class Recorder: Sendable {
    struct State {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var window = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var ok = 0
        var failed = 0
        var bytes = 0
        var windowOK = 0
        /// Sends acknowledged during the warm-up (counted only toward --messages).
        var warm = 0
        var lastError: String?
    }
    let state = NIOLockedValueBox(State())

    func record(micros: UInt64, bytes: Int) {
        state.withLockedValue { s in
            _ = s.histogram.record(micros)
            _ = s.window.record(micros)
            s.ok += 1
            s.windowOK += 1
            s.bytes += bytes
        }
    }

    func fail(_ error: Error) {
        state.withLockedValue { s in
            s.failed += 1
            s.lastError = "\(error)"
        }
    }

    /// Count and p99 (ms) since the last call.
    func takeWindow() -> (count: Int, p99: Double) {
        state.withLockedValue { s in
            let v = (s.windowOK, Double(s.window.valueAtPercentile(99)) / 1000)
            s.window.reset()
            s.windowOK = 0
            return v
        }
    }
}

struct BenchProduce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Send as fast as acknowledgements allow, K sends outstanding; latency from send to acknowledgement.")
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Topic (created with 8 queues when missing).") var topic = "bench"
    @Option(help: "Message body size in bytes.") var size = 1024
    @Option(help: "Sends outstanding at once.") var inflight = 1
    @Option(help: "Messages per send (1: one message per request).") var batch = 1
    @Option(help: "Seconds to run.") var duration: Double = 10
    @Option(help: "Seconds of load before measuring.") var warmup: Double = 1
    @Option(name: .customLong("messages"), help: "Stop once this many messages are acknowledged (0: run for --duration); fills a backlog.") var stopAfter = 0
    @Flag(help: "Print a JSON summary instead of the table.") var json = false
    @Option(help: "Server process ids (comma separated) whose CPU and peak resident memory are reported.") var pids = ""
    @Option(help: "Label of the RESULT line.") var label = "tern-3node"
    @Flag(help: "Print one RESULT line in the format of ../shared/bench/peers (bench/compare.sh reads it).") var resultLine = false

    func run() async throws {
        guard inflight >= 1, batch >= 1, size >= 0, duration > 0 else {
            throw ValidationError("--inflight and --batch must be at least 1, --duration positive")
        }
        let serverPIDs = try parsePIDs(pids)
        let cluster = try endpoints.cluster()
        do {
            _ = try await cluster.describeTopic(topic)
        } catch {
            try? await cluster.createTopic(topic, queues: 8)
        }
        let producer = Producer(cluster: cluster, group: "tern-bench")
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
        let recorder = Recorder()
        let clock = ContinuousClock()
        let start = clock.now
        let measureFrom = start + .seconds(warmup)
        let end = measureFrom + .seconds(duration)
        let messages = (0..<batch).map { _ in Message(topic: topic, body: body) }
        let progress = Task {
            var t = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                t += 1
                let w = recorder.takeWindow()
                FileHandle.standardError.write(Data(String(format: "  %3ds  %9d msg/s  p99 %7.2f ms\n", t, w.count * batch, w.p99).utf8))
            }
        }
        // CPU and log counters when the measured window opens; again when the senders stop.
        let opening = Task { () -> (ProcessSample, [NodeStatus]) in
            try? await Task.sleep(until: measureFrom, clock: clock)
            return (ProcessSample(serverPIDs), (try? await cluster.status()) ?? [])
        }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<inflight {
                group.addTask {
                    while clock.now < end {
                        if stopAfter > 0 && recorder.state.withLockedValue({ $0.ok + $0.warm }) * batch >= stopAfter { break }
                        let sent = clock.now
                        do {
                            if batch == 1 { _ = try await producer.send(messages[0]) } else { _ = try await producer.send(batch: messages) }
                            if sent >= measureFrom {
                                recorder.record(micros: UInt64((clock.now - sent).seconds * 1e6), bytes: size * batch)
                            } else {
                                recorder.state.withLockedValue { $0.warm += 1 }
                            }
                        } catch {
                            if sent >= measureFrom { recorder.fail(error) }
                        }
                    }
                }
            }
        }
        progress.cancel()
        // A run stopped by --messages measured until it stopped.
        let measured = max(min(duration, (clock.now - measureFrom).seconds), 1e-3)
        let (s0, n0) = await opening.value
        let s1 = ProcessSample(serverPIDs)
        let n1 = (try? await cluster.status()) ?? []
        await cluster.shutdown()
        let s = recorder.state.withLockedValue { $0 }
        let h = s.histogram
        let msgs = Double(s.ok * batch) / measured
        let mb = Double(s.bytes) / measured / 1e6
        func ms(_ p: Double) -> Double { Double(h.valueAtPercentile(p)) / 1000 }
        // The leader's fdatasync rate and bytes per fdatasync over the window.
        var syncsPerSecond = 0.0, bytesPerSync = 0.0
        if let leader = n1.first(where: { $0.role == "leader" }), let before = n0.first(where: { $0.id == leader.id }) {
            let syncs = Double(leader.syncedBatches &- before.syncedBatches)
            syncsPerSecond = syncs / measured
            bytesPerSync = syncs > 0 ? Double(leader.bytesWritten &- before.bytesWritten) / syncs : 0
        }
        if resultLine {
            let cpu = s1.describe(since: s0)
            let peak = serverPIDs.map { peakResidentMiB($0) }
            print(
                String(
                    format:
                        "RESULT system=tern label=%@ inflight=%d conns=%d size=%d window_s=%.2f acked=%d msgs_per_s=%.0f MB_per_s=%.2f lat_ms_p50=%.3f lat_ms_p99=%.3f lat_ms_p999=%.3f lat_ms_max=%.3f errors=%d %@ batch=%d fsync_per_s=%.0f bytes_per_fsync=%.0f peak_rss_mib_each=%@",
                    label, inflight, 3, size, measured, s.ok * batch, msgs, mb, ms(50), ms(99), ms(99.9), Double(h.max) / 1000, s.failed, cpu, batch,
                    syncsPerSecond, bytesPerSync,
                    peak.map { String($0) }.joined(separator: "/")))
        } else if json {
            struct Summary: Encodable {
                var size, inflight, batch, sends, failed, msgsPerSec: Int
                var duration, mbPerSec, p50Ms, p99Ms, p999Ms, maxMs: Double
            }
            try printJSON(
                Summary(
                    size: size, inflight: inflight, batch: batch, sends: s.ok, failed: s.failed, msgsPerSec: Int(msgs),
                    duration: duration, mbPerSec: rounded(mb, 2), p50Ms: ms(50), p99Ms: ms(99), p999Ms: ms(99.9), maxMs: Double(h.max) / 1000))
        } else {
            print("produce: \(size) B, \(inflight) in flight, \(batch) per send, \(String(format: "%.1f", measured)) s")
            print(String(format: "  %.0f msg/s  %.2f MB/s  sends %d  failed %d", msgs, mb, s.ok, s.failed))
            print(String(format: "  latency p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms", ms(50), ms(99), ms(99.9), Double(h.max) / 1000))
            if let e = s.lastError { print("  last error: \(e)") }
            if syncsPerSecond > 0 { print(String(format: "  leader log: %.0f fdatasync/s, %.0f bytes per fdatasync", syncsPerSecond, bytesPerSync)) }
        }
        if s.failed > 0 { throw ExitCode(1) }
    }
}

struct BenchConsume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume",
        abstract: "Read a topic's backlog from its first offset, K pulls outstanding, as fast as pulls allow.",
        discussion:
            "Reads by offset (no consumer group, no offset commits): the broker's read path. Each of the K workers owns every K-th queue and pulls up to 1,024 messages at a time from the node(s) given."
    )
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Topic.") var topic = "bench"
    @Option(help: "Pulls outstanding at once (at most one per queue).") var inflight = 4
    @Option(help: "Seconds to run (stops earlier when the backlog is read).") var duration: Double = 60
    @Option(help: "Server process ids (comma separated) whose CPU and peak resident memory are reported.") var pids = ""
    @Flag(help: "Print a JSON summary.") var json = false
    @Flag(help: "Print one RESULT line (bench/compare.sh reads it).") var resultLine = false

    func run() async throws {
        guard inflight >= 1, duration > 0 else { throw ValidationError("--inflight must be at least 1, --duration positive") }
        let serverPIDs = try parsePIDs(pids)
        let cluster = try endpoints.cluster()
        let queues = try await cluster.describeTopic(topic).queues
        let workers = max(1, min(inflight, queues.count))
        let recorder = Recorder()
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .seconds(duration)
        let s0 = ProcessSample(serverPIDs)
        let progress = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let w = recorder.takeWindow()
                FileHandle.standardError.write(Data("  \(w.count) msg/s\n".utf8))
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<workers {
                group.addTask {
                    var offsets = Dictionary(
                        uniqueKeysWithValues: stride(from: w, to: queues.count, by: workers).map { (queues[$0].queueID, queues[$0].minOffset) })
                    while clock.now < end && !offsets.isEmpty {
                        for q in offsets.keys.sorted() {
                            let r = try await cluster.pull(topic: topic, queue: q, offset: offsets[q]!, maxMessages: 1024)
                            for m in r.messages { recorder.record(micros: 0, bytes: m.message.body.count) }
                            if r.messages.isEmpty && r.nextOffset >= r.maxOffset { offsets[q] = nil } else { offsets[q] = r.nextOffset }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        progress.cancel()
        let elapsed = (clock.now - start).seconds
        let s1 = ProcessSample(serverPIDs)
        await cluster.shutdown()
        let s = recorder.state.withLockedValue { $0 }
        let msgs = Double(s.ok) / elapsed
        let mb = Double(s.bytes) / elapsed / 1e6
        if resultLine {
            print(
                String(
                    format:
                        "CONSUME system=tern label=tern-consume inflight=%d messages=%d window_s=%.2f msgs_per_s=%.0f MB_per_s=%.2f %@ peak_rss_mib_each=%@",
                    workers, s.ok, elapsed, msgs, mb, s1.describe(since: s0), serverPIDs.map { String(peakResidentMiB($0)) }.joined(separator: "/")))
        } else if json {
            struct Summary: Encodable {
                var messages, msgsPerSec: Int
                var seconds, mbPerSec: Double
            }
            try printJSON(Summary(messages: s.ok, msgsPerSec: Int(msgs), seconds: rounded(elapsed, 2), mbPerSec: rounded(mb, 2)))
        } else {
            print(String(format: "consume: %d messages in %.2f s (%d pulls outstanding): %.0f msg/s, %.2f MB/s", s.ok, elapsed, workers, msgs, mb))
        }
    }
}

struct BenchFailover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Start a local 3-node cluster, SIGKILL the leader repeatedly under a steady producer, and time each failover.",
        discussion:
            "Failover time: from the SIGKILL to the first acknowledged send after it (through the new leader). The killed node is restarted and caught up before the next kill."
    )
    @Option(help: "Leader kills.") var kills = 20
    @Option(help: "Data directory (wiped first).") var data = "/tmp/tern-failover"
    @Option(help: "Port of n1.") var basePort = 9101
    @Option(help: "Raft tick of the nodes in ms.") var tickMs = 50
    @Flag(help: "Print a JSON summary.") var json = false

    func run() async throws {
        try? FileManager.default.removeItem(atPath: data)
        let cluster = LocalCluster(nodes: 3, basePort: basePort, dataRoot: data, extraArgs: ["--tick-ms", "\(tickMs)"])
        try cluster.startAll()
        defer { cluster.stopAll() }
        let client = try TernCluster(endpoints: cluster.endpoints)
        _ = try await waitForLeader(client)
        try await client.createTopic("failover", queues: 4)
        let producer = Producer(cluster: client, group: "failover", sendTimeoutMillis: 30_000)
        // (sent, acknowledged) of every send: a failover ends with the first send that started
        // after the kill and was acknowledged (a send in flight at the kill may have been
        // answered by the dying leader).
        let acks = NIOLockedValueBox<[(sent: ContinuousClock.Instant, acked: ContinuousClock.Instant)]>([])
        let clock = ContinuousClock()
        let load = Task {
            while !Task.isCancelled {
                do {
                    let sent = clock.now
                    _ = try await producer.send(Message(topic: "failover", body: [UInt8](repeating: 7, count: 1024)))
                    let now = clock.now
                    acks.withLockedValue { $0.append((sent, now)) }
                } catch {
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
        }
        var times: [Double] = []
        for k in 1...kills {
            try await Task.sleep(for: .seconds(1))
            let leader = try await waitForLeader(client)
            acks.withLockedValue { $0.removeAll() }
            let killedAt = clock.now
            cluster.kill(leader)
            var recovered: ContinuousClock.Instant?
            while recovered == nil {
                try await Task.sleep(for: .milliseconds(2))
                recovered = acks.withLockedValue { a in a.first(where: { $0.sent > killedAt })?.acked }
                if clock.now - killedAt > .seconds(30) { throw ValidationError("no acknowledged send within 30 s of killing \(leader)") }
            }
            let ms = (recovered! - killedAt).seconds * 1000
            times.append(ms)
            FileHandle.standardError.write(Data(String(format: "  kill %2d: %@ -> first ack after %.0f ms\n", k, leader, ms).utf8))
            try cluster.start(leader)
            // Wait until the restarted node has caught up.
            let deadline = clock.now + .seconds(20)
            while clock.now < deadline {
                let s = try await client.status()
                if let me = s.first(where: { $0.id == leader }), let top = s.map(\.commitIndex).max(), me.role != "unreachable", me.commitIndex + 100 >= top {
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        load.cancel()
        _ = await load.value
        await client.shutdown()
        let q = Quantiles(times)  // milliseconds
        func pct(_ p: Double) -> Double { q.value(at: p / 100) }
        if json {
            struct Summary: Encodable { var kills, p50Ms, p99Ms, maxMs, tickMs: Int }
            try printJSON(Summary(kills: kills, p50Ms: Int(pct(50)), p99Ms: Int(pct(99)), maxMs: Int(q.max), tickMs: Int(tickMs)))
        } else {
            print(
                String(
                    format: "failover over %d leader kills (tick %d ms): p50 %.0f ms  p99 %.0f ms  max %.0f ms  min %.0f ms", kills, tickMs, pct(50), pct(99),
                    q.max, times.min() ?? 0))
        }
    }
}

/// CPU time of some processes, of this one and of the whole machine, read from /proc at one moment
/// (the peers' load generator reports the same figures).
struct ProcessSample: Sendable {
    let at = ContinuousClock.now
    var servers: [Double] = []  // seconds of CPU per server process
    var me = 0.0
    var machineBusy = 0.0  // seconds of busy CPU, all cores
    var machineTotal = 0.0

    init(_ pids: [Int32]) {
        servers = pids.map { ProcessSample.cpuSeconds("/proc/\($0)/stat") }
        me = ProcessSample.cpuSeconds("/proc/self/stat")
        if let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8), let line = text.split(separator: "\n").first {
            let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            if v.count >= 5 {
                machineTotal = v.prefix(8).reduce(0, +) / 100
                machineBusy = machineTotal - (v[3] + v[4]) / 100
            }
        }
    }

    /// utime + stime in seconds (fields 14 and 15, counted after the command's closing parenthesis).
    static func cpuSeconds(_ path: String) -> Double {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / 100
    }

    func describe(since s0: ProcessSample) -> String {
        let wall = max((at - s0.at).seconds, 1e-9)
        let each = zip(servers, s0.servers).map { ($0 - $1) / wall * 100 }
        let busy = machineTotal > s0.machineTotal ? (machineBusy - s0.machineBusy) / (machineTotal - s0.machineTotal) * 100 : 0
        return String(
            format: "server_cpu_pct=%.0f server_cpu_pct_each=%@ loadgen_cpu_pct=%.0f machine_busy_pct=%.0f",
            each.reduce(0, +), each.map { String(format: "%.0f", $0) }.joined(separator: "/"), (me - s0.me) / wall * 100, busy)
    }
}

/// A process's peak resident memory (VmHWM) in MiB, 0 when unknown.
func peakResidentMiB(_ pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
    else { return 0 }
    return kib / 1024
}

/// `--pids`: comma-separated process ids.
func parsePIDs(_ text: String) throws -> [Int32] {
    try text.split(separator: ",").map { p -> Int32 in
        guard let v = Int32(p) else { throw ValidationError("--pids: \(p) is not a process id") }
        return v
    }
}
