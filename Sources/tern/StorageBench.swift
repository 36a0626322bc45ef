// `tern bench storage`: the commitlog's append path against the raw disk, in one run, on one
// directory. Two shapes per backend:
//  - latency: one appender, one append outstanding; each append is timed from `append` to the
//    moment the log reports it durable. Baseline: the C shim's 4 KiB pwrite + fdatasync loop.
//  - throughput: 64 appenders with up to 16 appends outstanding each, so group commit has
//    plenty waiting. Baseline: the C shim's 256 KiB pwrite + fdatasync loop.
// Both baselines overwrite a preallocated, already-written file, the best case for the disk.
import ArgumentParser
import CTernIO
import Foundation
import TernStorage

struct StorageBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Append 1 KiB records to the commitlog and compare with raw write+fdatasync.")

    @Option(help: "Directory to run in (a temporary one under it is created and removed).")
    var dir: String = "/tmp"

    @Option(help: "Seconds per measured shape.")
    var duration: Double = 5

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

    func run() throws {
        let root = dir + "/tern-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let say: (String) -> Void = { line in
            FileHandle.standardError.write(Data(("tern bench: " + line + "\n").utf8))
        }

        say("raw baseline: 4 KiB pwrite+fdatasync for \(duration)s")
        let rawLatency = try rawLoop(root, block: 4096, file: 64 << 20)
        say("raw baseline: 256 KiB pwrite+fdatasync for \(duration)s")
        let rawThroughput = try rawLoop(root, block: 256 << 10, file: 256 << 20)

        var results: [[String: Any]] = []
        let backends: [IOBackendChoice] = io.isEmpty ? [.uring, .posix] : io
        for choice in backends {
            let device: any StorageDevice
            do {
                device = try makeStorageDevice(choice, log: say)
            } catch {
                say("skipping --io \(choice.rawValue): \(error)")
                continue
            }
            defer { device.shutdown() }
            say("\(device.backendName): latency shape (1 appender, 1 outstanding) for \(duration)s")
            let latency = try measure(device: device, root: root + "/lat-\(device.backendName)", appenders: 1, outstanding: 1, say: say)
            say("\(device.backendName): throughput shape (64 appenders x 16 outstanding) for \(duration)s")
            let throughput = try measure(device: device, root: root + "/thr-\(device.backendName)", appenders: 64, outstanding: 16, say: say)
            results.append([
                "backend": device.backendName,
                "latency": latency.json,
                "throughput": throughput.json,
                "ratio_mbps_vs_raw": throughput.payloadMBps / rawThroughput.mbps,
                "ratio_p50_vs_raw": latency.p50us / rawLatency.p50us,
            ])
        }

        if json {
            let object: [String: Any] = [
                "record_bytes": size, "duration_s": duration, "directory": dir, "fresh_log": fresh,
                "raw": ["latency_4k": rawLatency.json, "throughput_256k": rawThroughput.json],
                "backends": results,
                "goal_ratio_mbps_vs_raw_min": 0.8, "goal_ratio_p50_vs_raw_max": 1.5,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("raw 4 KiB write+fdatasync:   \(rawLatency.line)")
        print("raw 256 KiB write+fdatasync: \(rawThroughput.line)")
        print("")
        print("backend   shape       appends/s      MB/s   fsyncs/s  bytes/fsync   p50 us   p99 us   ratio")
        for r in results {
            let name = r["backend"] as! String
            for (shape, key, ratioKey) in [("latency", "latency", "ratio_p50_vs_raw"), ("throughput", "throughput", "ratio_mbps_vs_raw")] {
                let m = r[key] as! [String: Double]
                let ratio = r[ratioKey] as! Double
                let what = key == "latency" ? "p50/raw p50 \(fmt(ratio, 2)) (goal <= 1.5)" : "MB/s / raw MB/s \(fmt(ratio, 2)) (goal >= 0.8)"
                print("\(pad(name, 9)) \(pad(shape, 10)) \(lpad(fmt(m["appends_per_s"]!, 0), 10)) \(lpad(fmt(m["mb_per_s"]!, 1), 9)) \(lpad(fmt(m["fsyncs_per_s"]!, 0), 10)) \(lpad(fmt(m["bytes_per_fsync"]!, 0), 12)) \(lpad(fmt(m["p50_us"]!, 0), 8)) \(lpad(fmt(m["p99_us"]!, 0), 8))   \(what)")
            }
        }
        print("(MB/s counts record bodies only; 1 MB = 10^6 bytes)")
    }

    struct Raw {
        var ops: Int64
        var seconds: Double
        var block: Int
        var p50us: Double
        var p99us: Double
        var mbps: Double { Double(ops) * Double(block) / seconds / 1e6 }
        var line: String { "\(fmt(Double(ops) / seconds, 0)) ops/s, \(fmt(mbps, 1)) MB/s, p50 \(fmt(p50us, 0)) us, p99 \(fmt(p99us, 0)) us" }
        var json: [String: Double] { ["ops_per_s": Double(ops) / seconds, "mb_per_s": mbps, "p50_us": p50us, "p99_us": p99us, "block_bytes": Double(block)] }
    }

    func rawLoop(_ root: String, block: Int, file: Int) throws -> Raw {
        var latencies = [UInt64](repeating: 0, count: 1 << 20)
        var elapsed = 0.0
        let n = tern_raw_write_sync_loop(root, block, file, duration, &latencies, latencies.count, &elapsed)
        guard n > 0 else { throw ValidationError("raw baseline failed: errno \(-n)") }
        let sorted = latencies[0..<min(Int(n), latencies.count)].sorted()
        return Raw(ops: n, seconds: elapsed, block: block, p50us: percentile(sorted, 0.50) / 1000, p99us: percentile(sorted, 0.99) / 1000)
    }

    struct Measured {
        var appends: Int
        var seconds: Double
        var payloadMBps: Double
        var fsyncs: Int
        var bytesWritten: Int
        var p50us: Double
        var p99us: Double
        var json: [String: Double] {
            ["appends_per_s": Double(appends) / seconds, "mb_per_s": payloadMBps,
             "fsyncs_per_s": Double(fsyncs) / seconds, "bytes_per_fsync": Double(bytesWritten) / Double(max(1, fsyncs)),
             "p50_us": p50us, "p99_us": p99us]
        }
    }

    /// Drives one commitlog from this thread: `appenders * outstanding` appends in flight, each
    /// replaced by a new one as soon as the log reports it durable.
    func measure(device: any StorageDevice, root: String, appenders: Int, outstanding: Int, say: (String) -> Void) throws -> Measured {
        let options = CommitlogOptions(segmentSizeBytes: segmentMiB << 20)
        let log = try Commitlog(directory: root, device: device, options: options)
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let window = appenders * outstanding
        var started: [UInt64] = []   // start time of append i, indexed from base
        started.reserveCapacity(1 << 22)
        var latencies: [UInt64] = []
        latencies.reserveCapacity(1 << 22)
        var next: UInt64 = 1
        var acknowledged: UInt64 = 0
        let clock = ContinuousClock()
        var origin = clock.now
        func now() -> UInt64 {
            let d = clock.now - origin
            return UInt64(d.components.seconds) * 1_000_000_000 + UInt64(d.components.attoseconds / 1_000_000_000)
        }
        // Warm-up outside the window: the first segment's zero-fill, and the background
        // preparation of the next one, would otherwise land in the measurement.
        try log.append([LogEntry(index: next, term: 1, body: body)])
        try log.flush()
        next += 1
        acknowledged += 1
        started.append(0)
        if appenders > 1 && !fresh {
            // Steady state of a broker with retention: segments retired behind the log are
            // recycled instead of zero-filling new files. Write and retire two segments first.
            say("warm-up: writing and retiring 2 segments so the log recycles, as under retention (--fresh skips this)")
            var entries: [LogEntry] = []
            while log.segmentCount < 3 {
                entries.removeAll(keepingCapacity: true)
                for _ in 0..<256 {
                    entries.append(LogEntry(index: next, term: 1, body: body))
                    started.append(0)
                    next += 1
                }
                try log.append(entries)
                try log.pump(wait: false)
            }
            try log.flush()
            acknowledged = next - 1
            try log.deleteSegments(through: acknowledged)
        }
        device.waitForBackgroundWork()
        let end = UInt64(duration * 1e9)
        origin = clock.now
        let batchesBefore = log.stats.batches, bytesBefore = log.stats.bytesWritten
        while true {
            let t = now()
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
            let done = now()
            while acknowledged < durable {
                acknowledged += 1
                latencies.append(done - started[Int(acknowledged - 1)])
            }
            // Retention: keep two segments, retire (recycle) the rest behind the durable end.
            if log.segmentCount > 2 && !fresh { try log.deleteSegments(through: acknowledged) }
        }
        let seconds = Double(now()) / 1e9
        let stats = log.stats
        try log.close()
        try? FileManager.default.removeItem(atPath: root)
        let sorted = latencies.sorted()
        return Measured(
            appends: latencies.count, seconds: seconds,
            payloadMBps: Double(latencies.count * size) / seconds / 1e6,
            fsyncs: stats.batches - batchesBefore, bytesWritten: stats.bytesWritten - bytesBefore,
            p50us: percentile(sorted, 0.50) / 1000, p99us: percentile(sorted, 0.99) / 1000)
    }
}

func percentile(_ sorted: some Collection<UInt64>, _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let i = Int((Double(sorted.count - 1) * p).rounded())
    return Double(sorted[sorted.index(sorted.startIndex, offsetBy: i)])
}

func fmt(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
