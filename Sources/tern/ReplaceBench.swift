// `tern bench replace`: a local three-member group under steady load has each of its three
// original members replaced in turn by a new one, by the documented procedure (docs/operations.md,
// "Replacing a member"): start the new node with --join, run `tern admin member replace`, stop
// the old node and delete its data. Reports the longest pause in acknowledgements, each new
// member's catch-up rate next to the disk's sequential write rate, and checks that every
// acknowledged message is still where its receipt said. `--short` is the form `make test` runs.
import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernLauncher
import TernProtocol

struct BenchReplace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replace",
        abstract: "Replace each member of a local 3-node group in turn under steady load; print the longest acknowledgement pause and catch-up rates.")

    @Option(help: "Data directory, new or empty (default: a new folder under ./.build/bench-replace).") var data: String?
    @Flag(help: "Keep the data directory (and the node logs in it) at the end.") var keep = false
    @Option(help: "MiB of messages stored before the first replacement (what a new member catches up on).") var fillMb = 256
    @Option(help: "Message body size in bytes.") var bodyBytes = 1024
    @Option(help: "Sends outstanding, during the fill and the steady load.") var inflight = 16
    @Option(help: "Steady load during the replacements: sends per second (0: as fast as --inflight allows).") var rate = 500
    @Option(help: "Seconds of steady load before and after each replacement.") var settle: Double = 2
    @Flag(help: "The short form for tests: 4 MiB, 200 sends a second.") var short = false
    @Option(
        help:
            "Six loopback ports, comma separated (three members, then their replacements); default: free ones. A test picks them from its own ledger, so that clusters of tests running beside it never take the same."
    )
    var ports: String?
    @Flag(help: "Print one JSON object after the table.") var json = false

    struct Report: Encodable {
        var fillMiB: Double
        var acknowledged = 0
        var lost = 0
        var failedSends = 0
        var longestPauseMillis = 0.0
        var longestPauseDuring = ""
        var diskWriteMiBps = 0.0
        var replacements: [Replacement] = []
    }
    struct Replacement: Encodable {
        var old, new: String
        var wasLeader: Bool
        var seconds: Double
        var catchUpSeconds: Double
        var catchUpMiB: Double
        var catchUpMiBps: Double
        var longestPauseMillis: Double
    }

    func run() async throws {
        let fill = short ? 4 : fillMb
        let load = short ? 200 : rate
        let root = try makeFolder()
        let ports =
            try ports.map { text -> [Int] in
                let list = text.split(separator: ",").compactMap { Int($0) }
                guard list.count == 6 else { throw ValidationError("--ports takes six ports, comma separated") }
                return list
            } ?? (0..<6).map { _ in freeLoopbackPort() }
        let cluster = LocalCluster(nodes: 3, basePort: 0, dataRoot: root, extraArgs: ["--segment-mb", "16"], ports: Array(ports[0..<3]))
        let result: Result<Report, Error>
        do {
            try cluster.startAll()
            result = .success(try await measure(cluster, ports: ports, fillMiB: fill, rate: load))
        } catch {
            result = .failure(error)
        }
        cluster.stopAll()
        if keep { note("data and node logs kept in \(root)") } else { try? FileManager.default.removeItem(atPath: root) }
        let report = try result.get()
        print(
            String(
                format: "replaced 3 of 3 members under load: %d messages acknowledged, %d lost, %d sends failed; longest acknowledgement pause %.0f ms (%@)",
                report.acknowledged, report.lost, report.failedSends, report.longestPauseMillis, report.longestPauseDuring))
        print(String(format: "disk: sequential writes with fdatasync every 4 MiB: %.0f MiB/s", report.diskWriteMiBps))
        print("old  new  was leader  replace s  catch-up s  caught up on MiB  MiB/s  longest pause ms")
        for r in report.replacements {
            print(
                String(
                    format: "%@  %@  %@  %9.1f  %10.1f  %16.1f  %5.0f  %16.0f", r.old.padding(3), r.new.padding(3), (r.wasLeader ? "yes" : "no").padding(10),
                    r.seconds, r.catchUpSeconds, r.catchUpMiB, r.catchUpMiBps, r.longestPauseMillis))
        }
        if json { try printJSON(report) }
        if report.lost > 0 { throw ExitCode(1) }
    }

    func makeFolder() throws -> String {
        let fm = FileManager.default
        let path: String
        if let data {
            path = data.hasPrefix("/") ? data : fm.currentDirectoryPath + "/" + data
            if let existing = try? fm.contentsOfDirectory(atPath: path), !existing.isEmpty { throw ValidationError("--data \(data) is not empty") }
        } else {
            path = "\(fm.currentDirectoryPath)/.build/bench-replace/run-\(Int(Date().timeIntervalSince1970))-\(getpid())"
        }
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Acknowledgements as they arrive: receipts, and the gaps between consecutive ones.
    final class Acks: @unchecked Sendable {
        struct State {
            var receipts: [Int: SendReceipt] = [:]
            var last: ContinuousClock.Instant?
            var longest: Duration = .zero
            var longestAt = ""
            var phase = "fill"
            var failed = 0
            var next = 0
        }
        let state = NIOLockedValueBox(State())
        func claim() -> Int {
            state.withLockedValue { s in
                defer { s.next += 1 }; return s.next
            }
        }
        func add(_ i: Int, _ r: SendReceipt, at t: ContinuousClock.Instant) {
            state.withLockedValue { s in
                s.receipts[i] = r
                if let l = s.last, t - l > s.longest, s.phase != "fill" {
                    s.longest = t - l
                    s.longestAt = s.phase
                }
                s.last = max(s.last ?? t, t)
            }
        }
        /// Starts a phase: the longest pause is measured again from here.
        func phase(_ name: String) -> Duration {
            state.withLockedValue { s in
                let before = s.longest
                s.phase = name
                s.longest = .zero
                return before
            }
        }
    }

    func measure(_ cluster: LocalCluster, ports: [Int], fillMiB: Int, rate: Int) async throws -> Report {
        let client = try TernCluster(endpoints: cluster.endpoints)
        defer { Task { await client.shutdown() } }
        note("3 nodes on \(cluster.endpoints.joined(separator: ",")); leader \(try await waitForLeader(client))")
        try await client.createTopic("replace", queues: 4)
        var report = Report(fillMiB: Double(fillMiB))
        report.diskWriteMiBps = diskWriteRate(cluster.dataRoot)
        let acks = Acks()
        let producer = Producer(cluster: client, group: "bench-replace", sendTimeoutMillis: 60_000)
        let body = (0..<bodyBytes).map { UInt8(truncatingIfNeeded: $0) }
        let fillMessages = fillMiB * 1_048_576 / max(1, bodyBytes + 64)
        let clock = ContinuousClock()
        let paced = NIOLockedValueBox(false)
        let stop = NIOLockedValueBox(false)
        let workers = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<inflight {
                    group.addTask {
                        var nextAt = clock.now
                        while !stop.withLockedValue({ $0 }) {
                            if paced.withLockedValue({ $0 }) && rate > 0 {
                                nextAt = max(nextAt, clock.now - .seconds(1)) + .microseconds(Int64(1_000_000 * inflight / rate))
                                try await clock.sleep(until: nextAt)
                            }
                            let i = acks.claim()
                            var m = Message(topic: "replace", keys: ["m\(i)"], body: body)
                            m.properties["worker"] = "\(w)"
                            do {
                                let r = try await producer.send(m)
                                acks.add(i, r, at: clock.now)
                            } catch {
                                acks.state.withLockedValue { $0.failed += 1 }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        while acks.state.withLockedValue({ $0.receipts.count }) < fillMessages { try await Task.sleep(for: .milliseconds(100)) }
        note("filled \(fillMessages) messages (\(fillMiB) MiB); steady load of \(rate) sends/s from now on")
        paced.withLockedValue { $0 = true }
        _ = acks.phase("steady load")
        try await Task.sleep(for: .seconds(settle))

        var endpoints = cluster.endpoints
        var overall: (Duration, String) = (.zero, "")
        for (k, old) in ["n1", "n2", "n3"].enumerated() {
            let new = "n\(4 + k)"
            let endpoint = "127.0.0.1:\(ports[3 + k])"
            let leaderBefore = try await waitForLeader(client)
            let others = endpoints.filter { $0 != endpoints[k] }
            try cluster.startJoining(new, listen: endpoint, join: others[0])
            let before = acks.phase("replacing \(old) by \(new)")
            if before > overall.0 { overall = (before, acks.state.withLockedValue { $0.longestAt }) }
            note("replacing \(old)\(old == leaderBefore ? " (the leader)" : "") by \(new) at \(endpoint)")
            let started = clock.now
            let output = try runMemberReplace(tern: ternExecutable(), old: old, new: new, endpoint: endpoint, via: others)
            let seconds = (clock.now - started).seconds
            // What the new member's log wrote since it started: the catch-up, plus the load of
            // the moment since it caught up.
            let written = try await client.status().first { $0.id == new }?.bytesWritten ?? 0
            for line in output.split(separator: "\n") { note("    \(line)") }
            cluster.kill(old)
            try? FileManager.default.removeItem(atPath: "\(cluster.dataRoot)/\(old)")
            endpoints[k] = endpoint
            try await Task.sleep(for: .seconds(settle))
            let pause = acks.phase("steady load")
            let catchUp = catchUpSeconds(output)
            let mib = Double(written) / 1_048_576
            report.replacements.append(
                Replacement(
                    old: old, new: new, wasLeader: old == leaderBefore, seconds: rounded(seconds), catchUpSeconds: rounded(catchUp), catchUpMiB: rounded(mib),
                    catchUpMiBps: rounded(catchUp > 0 ? mib / catchUp : 0), longestPauseMillis: rounded(pause.seconds * 1000)))
            if pause > overall.0 { overall = (pause, "replacing \(old) by \(new)") }
        }
        stop.withLockedValue { $0 = true }
        try await workers.value
        report.longestPauseMillis = rounded(overall.0.seconds * 1000)
        report.longestPauseDuring = overall.1
        let receipts = acks.state.withLockedValue { $0.receipts }
        report.acknowledged = receipts.count
        report.failedSends = acks.state.withLockedValue { $0.failed }
        report.lost = try await countLost(client, receipts)
        return report
    }

    /// Seconds from "1/4 adding" to "3/4 promoting" in the replace output (the new member
    /// receives the log from its addition on).
    func catchUpSeconds(_ output: String) -> Double {
        func at(_ marker: String) -> Double? {
            output.split(separator: "\n").first { $0.contains(marker) }.flatMap { Double($0.trimmingCharacters(in: .whitespaces).split(separator: "s")[0]) }
        }
        return (at("3/4 promoting") ?? 0) - (at("1/4 adding") ?? 0)
    }

    /// Every receipt's message read back at its queue offset from the final group.
    func countLost(_ client: TernCluster, _ receipts: [Int: SendReceipt]) async throws -> Int {
        var byQueue: [UInt32: [UInt64: MessageID]] = [:]
        for r in receipts.values { byQueue[r.queue.queueID, default: [:]][r.queueOffset] = r.messageID }
        var lost = 0
        for q in byQueue.keys.sorted() {
            var found: [UInt64: MessageID] = [:]
            var offset: UInt64 = 0
            let want = byQueue[q]!
            let end = (want.keys.max() ?? 0) + 1
            while offset < end {
                let r = try await client.pull(topic: "replace", queue: q, offset: offset, maxMessages: 256)
                if r.messages.isEmpty { break }
                for m in r.messages { found[m.queueOffset] = m.id }
                offset = r.messages.last!.queueOffset + 1
            }
            for (o, id) in want where found[o] != id { lost += 1 }
        }
        return lost
    }
}

/// Sequential writes of 1 MiB with an fdatasync every 4 MiB, 64 MiB in all, under `folder`.
private func diskWriteRate(_ folder: String) -> Double {
    let path = folder + "/disk-rate.tmp"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return 0 }
    defer {
        close(fd)
        unlink(path)
    }
    let chunk = [UInt8](repeating: 0x5A, count: 1 << 20)
    let start = ContinuousClock.now
    for k in 0..<64 {
        guard chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == chunk.count else { return 0 }
        if k % 4 == 3 { fdatasync(fd) }
    }
    return 64 / max((ContinuousClock.now - start).seconds, 1e-6)
}

private func rounded(_ x: Double) -> Double { (x * 10).rounded() / 10 }

private func note(_ text: String) { FileHandle.standardError.write(Data("\(text)\n".utf8)) }

extension Duration {
    fileprivate var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
