// `tern bench storage`: the commitlog's append path against the raw disk, in one run, on one
// directory. Two shapes per backend:
//  - latency: one appender, one append outstanding; each append is timed from `append` to the
//    moment the log reports it durable. Baseline: the C shim's 4 KiB pwrite + fdatasync loop.
//  - throughput: 64 appenders with up to 16 appends outstanding each, so group commit has
//    plenty waiting. Baseline: the C shim's 256 KiB pwrite + fdatasync loop.
// Both baselines overwrite a preallocated, already-written file, the best case for the disk.
// The machine is shared and noisy, so the run is split in rounds that interleave baseline and
// Tern windows; each round gives a ratio, and the median ratio is reported.
import ArgumentParser
import CTernIO
import Foundation
import TernLauncher
import TernStorage

struct StorageBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Append 1 KiB records to the commitlog and compare with raw write+fdatasync.")

    @Option(help: "Directory to run in (a temporary one under it is created and removed).")
    var dir: String = "/tmp"

    @Option(help: "Seconds per measured window.")
    var duration: Double = 3

    @Option(help: "Rounds; each measures every baseline and shape once, interleaved.")
    var rounds: Int = 3

    @Option(help: "Record body size in bytes.")
    var size: Int = 1024

    @Option(help: "Backends to measure: auto, uring or posix; repeat the option for several (default: uring and posix).")
    var io: [IOBackendChoice] = []

    @Option(name: .customLong("segment-mib"), help: "Segment size in MiB.")
    var segmentMiB: Int = 1024

    @Flag(help: "Measure a new log: no warm-up, no retention, so every segment is zero-filled (the worst case).")
    var fresh = false

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func validate() throws {
        guard duration > 0, rounds > 0, size > 0, segmentMiB > 0 else { throw ValidationError("duration, rounds, size and segment-mib must be positive") }
    }

    func run() throws {
        let root = dir + "/tern-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let say: (String) -> Void = { FileHandle.standardError.write(Data(("tern bench: " + $0 + "\n").utf8)) }

        struct Backend {
            let device: any StorageDevice
            let latency: Appender
            let throughput: Appender
            var latencyRuns: [Window] = []
            var throughputRuns: [Window] = []
        }
        var backends: [Backend] = []
        for choice in io.isEmpty ? [.uring, .posix] : io {
            let device: any StorageDevice
            do {
                device = try makeStorageDevice(choice, log: say)
            } catch {
                say("skipping --io \(choice.rawValue): \(error)")
                continue
            }
            let name = device.backendName
            say(
                "\(name): opening logs\(fresh ? "" : " (throughput log: writing and retiring 2 segments first, so it recycles them as under retention; --fresh skips this)")"
            )
            let options = CommitlogOptions(segmentSizeBytes: segmentMiB << 20, recycledSegmentsMax: fresh ? 0 : 4)
            backends.append(
                Backend(
                    device: device,
                    latency: try Appender(
                        device: device, directory: root + "/lat-\(name)", options: options, bodyBytes: size, window: 1, retire: !fresh, warm: false),
                    throughput: try Appender(
                        device: device, directory: root + "/thr-\(name)", options: options, bodyBytes: size, window: 64 * 16, retire: !fresh, warm: !fresh)))
        }
        guard !backends.isEmpty else { throw ValidationError("no io backend could be opened") }

        var rawLatency: [Raw] = [], rawThroughput: [Raw] = []
        for round in 1...rounds {
            say("round \(round)/\(rounds): raw 4 KiB, raw 256 KiB, then each backend's latency and throughput shapes, \(duration)s each")
            rawLatency.append(try rawLoop(root, block: 4096, file: 64 << 20))
            rawThroughput.append(try rawLoop(root, block: 256 << 10, file: 256 << 20))
            for k in backends.indices {
                backends[k].device.waitForBackgroundWork()
                backends[k].latencyRuns.append(try backends[k].latency.window(seconds: duration))
                backends[k].device.waitForBackgroundWork()
                backends[k].throughputRuns.append(try backends[k].throughput.window(seconds: duration))
            }
        }
        for b in backends {
            try b.latency.close()
            try b.throughput.close()
            b.device.shutdown()
        }

        var results: [[String: Any]] = []
        for b in backends {
            let p50Ratios = zip(b.latencyRuns, rawLatency).map { $0.p50us / $1.p50us }
            let mbpsRatios = zip(b.throughputRuns, rawThroughput).map { $0.payloadMBps / $1.mbps }
            results.append([
                "backend": b.device.backendName,
                "latency": Window.medianJSON(b.latencyRuns),
                "throughput": Window.medianJSON(b.throughputRuns),
                "ratio_p50_vs_raw": median(p50Ratios), "ratio_p50_vs_raw_rounds": p50Ratios,
                "ratio_mbps_vs_raw": median(mbpsRatios), "ratio_mbps_vs_raw_rounds": mbpsRatios,
            ])
        }
        let rawLatencyJSON = Raw.medianJSON(rawLatency), rawThroughputJSON = Raw.medianJSON(rawThroughput)

        if json {
            let object: [String: Any] = [
                "record_bytes": size, "window_s": duration, "rounds": rounds, "directory": dir, "fresh_log": fresh,
                "raw": ["latency_4k": rawLatencyJSON, "throughput_256k": rawThroughputJSON],
                "backends": results,
                "goal_ratio_mbps_vs_raw_min": 0.8, "goal_ratio_p50_vs_raw_max": 1.5,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("Medians over \(rounds) rounds of \(fmt(duration, 1)) s windows; ratios are medians of per-round ratios.")
        print("raw 4 KiB write+fdatasync:   \(Raw.line(rawLatencyJSON))")
        print("raw 256 KiB write+fdatasync: \(Raw.line(rawThroughputJSON))")
        print("")
        print("backend   shape       appends/s      MB/s   fsyncs/s  bytes/fsync   p50 us   p99 us   ratio")
        for r in results {
            let name = r["backend"] as! String
            for (key, ratioKey) in [("latency", "ratio_p50_vs_raw"), ("throughput", "ratio_mbps_vs_raw")] {
                let m = r[key] as! [String: Double]
                let ratio = r[ratioKey] as! Double
                let rounds = (r[ratioKey + "_rounds"] as! [Double]).map { fmt($0, 2) }.joined(separator: " ")
                let what =
                    key == "latency"
                    ? "p50 / raw p50 = \(fmt(ratio, 2)) (goal <= 1.5; rounds \(rounds))"
                    : "MB/s / raw MB/s = \(fmt(ratio, 2)) (goal >= 0.8; rounds \(rounds))"
                print(
                    "\(pad(name, 9)) \(pad(key, 10)) \(lpad(fmt(m["appends_per_s"]!, 0), 10)) \(lpad(fmt(m["mb_per_s"]!, 1), 9)) \(lpad(fmt(m["fsyncs_per_s"]!, 0), 10)) \(lpad(fmt(m["bytes_per_fsync"]!, 0), 12)) \(lpad(fmt(m["p50_us"]!, 0), 8)) \(lpad(fmt(m["p99_us"]!, 0), 8))   \(what)"
                )
            }
        }
        print("(MB/s counts record bodies only, 1 MB = 10^6 bytes; fsyncs/s counts write batches, each ending in one fdatasync per segment file written)")
    }

    func rawLoop(_ root: String, block: Int, file: Int) throws -> Raw {
        var latencies = [UInt64](repeating: 0, count: 1 << 20)
        var elapsed = 0.0
        let n = tern_raw_write_sync_loop(root, block, file, duration, &latencies, latencies.count, &elapsed)
        guard n > 0 else { throw ValidationError("raw baseline failed: errno \(-n)") }
        var q = Quantiles(unit: 1e-3)  // nanoseconds recorded, microseconds read
        for ns in latencies[0..<min(Int(n), latencies.count)] { q.record(ns) }
        return Raw(ops: n, seconds: elapsed, block: block, p50us: q.value(at: 0.50), p99us: q.value(at: 0.99))
    }
}

struct Raw {
    var ops: Int64
    var seconds: Double
    var block: Int
    var p50us: Double
    var p99us: Double
    var mbps: Double { Double(ops) * Double(block) / seconds / 1e6 }
    var json: [String: Double] { ["ops_per_s": Double(ops) / seconds, "mb_per_s": mbps, "p50_us": p50us, "p99_us": p99us, "block_bytes": Double(block)] }
    static func medianJSON(_ runs: [Raw]) -> [String: Double] { medianOfKeys(runs.map(\.json)) }
    static func line(_ m: [String: Double]) -> String {
        "\(fmt(m["ops_per_s"]!, 0)) ops/s, \(fmt(m["mb_per_s"]!, 1)) MB/s, p50 \(fmt(m["p50_us"]!, 0)) us, p99 \(fmt(m["p99_us"]!, 0)) us"
    }
}

struct Window {
    var appends: Int
    var seconds: Double
    var payloadMBps: Double
    var fsyncs: Int
    var bytesWritten: Int
    var p50us: Double
    var p99us: Double
    var json: [String: Double] {
        [
            "appends_per_s": Double(appends) / seconds, "mb_per_s": payloadMBps,
            "fsyncs_per_s": Double(fsyncs) / seconds, "bytes_per_fsync": Double(bytesWritten) / Double(max(1, fsyncs)),
            "p50_us": p50us, "p99_us": p99us,
        ]
    }
    static func medianJSON(_ runs: [Window]) -> [String: Double] { medianOfKeys(runs.map(\.json)) }
}

/// One commitlog driven from this thread with `window` appends outstanding: each is replaced by a
/// new one as soon as the log reports it durable (a closed loop, like the peers' load generator).
final class Appender {
    let log: Commitlog
    let body: [UInt8]
    let window: Int
    let retire: Bool
    var next: UInt64 = 1
    let clock = ContinuousClock()

    init(device: any StorageDevice, directory: String, options: CommitlogOptions, bodyBytes: Int, window: Int, retire: Bool, warm: Bool) throws {
        log = try Commitlog(directory: directory, device: device, options: options)
        body = (0..<bodyBytes).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        self.window = window
        self.retire = retire
        // The first segment's zero-fill happens here, outside any window.
        try log.append([LogEntry(index: next, term: 1, body: body)])
        next += 1
        try log.flush()
        if warm {
            var entries: [LogEntry] = []
            while log.segmentCount < 3 {
                entries.removeAll(keepingCapacity: true)
                for _ in 0..<256 {
                    entries.append(LogEntry(index: next, term: 1, body: body))
                    next += 1
                }
                try log.append(entries)
                try log.pump(wait: false)
            }
            try log.flush()
            try log.deleteSegments(through: log.durableIndex)
        }
    }

    func close() throws { try log.close() }

    func window(seconds: Double) throws -> Window {
        var started: [ContinuousClock.Instant] = []
        started.reserveCapacity(1 << 21)
        var latencies: [UInt64] = []
        latencies.reserveCapacity(1 << 21)
        let first = next
        var acknowledged = next - 1
        let batchesBefore = log.stats.batches, bytesBefore = log.stats.bytesWritten
        let origin = clock.now
        let end = origin.advanced(by: .nanoseconds(Int64(seconds * 1e9)))
        while true {
            let t = clock.now
            if t < end {
                while next - 1 - acknowledged < UInt64(window) {
                    try log.append([LogEntry(index: next, term: 1, body: body)])
                    started.append(t)
                    next += 1
                }
            } else if acknowledged == next - 1 {
                break
            }
            let durable = try log.pump(wait: true)
            let done = clock.now
            while acknowledged < durable {
                acknowledged += 1
                latencies.append(nanos(done - started[Int(acknowledged - first)]))
            }
            // Retention: keep two segments; older ones are retired (and recycled).
            if retire && log.segmentCount > 2 { try log.deleteSegments(through: acknowledged) }
        }
        let elapsed = Double(nanos(clock.now - origin)) / 1e9
        var q = Quantiles(unit: 1e-3)  // nanoseconds recorded, microseconds read
        for ns in latencies { q.record(ns) }
        return Window(
            appends: latencies.count, seconds: elapsed,
            payloadMBps: Double(latencies.count * body.count) / elapsed / 1e6,
            fsyncs: log.stats.batches - batchesBefore, bytesWritten: log.stats.bytesWritten - bytesBefore,
            p50us: q.value(at: 0.50), p99us: q.value(at: 0.99))
    }
}

func nanos(_ d: Duration) -> UInt64 {
    UInt64(d.components.seconds) * 1_000_000_000 + UInt64(d.components.attoseconds / 1_000_000_000)
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func medianOfKeys(_ maps: [[String: Double]]) -> [String: Double] {
    var out: [String: Double] = [:]
    for key in maps.first?.keys ?? [:].keys { out[key] = median(maps.compactMap { $0[key] }) }
    return out
}

func fmt(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
