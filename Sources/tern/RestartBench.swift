// `tern bench restart`: how long a node takes from process start to serving, and its memory,
// once its log holds N messages: a local three-node cluster is filled, then one follower is
// SIGKILLed and started again, K times, and timed from the spawn until it answers a pull (sent
// to it alone) for the last message stored with that message.
import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernLauncher
import TernProtocol

struct BenchRestart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart",
        abstract: "Fill a local 3-node cluster's log, then SIGKILL and restart a follower K times; time each from spawn to serving.",
        discussion: """
            Serving: the restarted node answers a pull sent directly to it (not through the \
            leader) for the last message's queue offset with that message; polled every 20 ms. \
            Also reported: its resident memory (VmRSS) at that moment, and from its log the \
            snapshot it loaded and how many log entries it had to apply after it. Each send is \
            one log entry, so the log holds about --messages / --batch entries.
            """)

    @Option(help: "Data directory, new or empty (default: a new folder under ./.build/bench-restart).") var data: String?
    @Flag(help: "Keep the data directory (and the node logs in it) at the end.") var keep = false
    @Option(help: "Messages to store before the restarts.") var messages = 1_000_000
    @Option(help: "Message body size in bytes.") var bodyBytes = 100
    @Option(help: "Messages per send (one log entry each).") var batch = 64
    @Option(help: "Sends outstanding while filling.") var inflight = 64
    @Option(help: "Queues of the topic.") var queues: UInt32 = 4
    @Option(help: "Restarts of the follower.") var restarts = 3
    @Option(help: "Passed to every node: a broker snapshot every this many log entries (0: never).") var snapshotEntries = 100_000
    @Option(help: "Passed to every node: commitlog segment size in MiB.") var segmentMb = 64
    @Option(help: "Seconds a restarted node may take to serve before the run fails.") var timeout: Double = 600
    @Flag(help: "Print one JSON object instead of the table.") var json = false

    func run() async throws {
        guard messages >= 1, bodyBytes >= 0, batch >= 1, inflight >= 1, queues >= 1, restarts >= 1, timeout > 0 else {
            throw ValidationError("--messages, --batch, --inflight, --queues and --restarts must be at least 1, --timeout positive")
        }
        let root = try makeDataFolder()
        let ports = (0..<3).map { _ in freeLoopbackPort() }
        let cluster = LocalCluster(
            nodes: 3, basePort: 0, dataRoot: root, extraArgs: ["--snapshot-entries", "\(snapshotEntries)", "--segment-mb", "\(segmentMb)"], ports: ports)
        // Held from before the first node starts: Ctrl-C or SIGTERM cancels the run, and the
        // nodes are stopped below whatever happened.
        let (stops, requested) = AsyncStream<Int32>.makeStream()
        let signals = StopSignals([SIGINT, SIGTERM]) { requested.yield($0) }
        defer { signals.cancel() }
        let work = Task { try await measure(cluster, ports: ports) }
        let watcher = Task { () -> Int32? in
            for await sig in stops {
                note("signal \(sig): stopping the cluster")
                work.cancel()
                return sig
            }
            return nil
        }
        let result = await work.result
        requested.finish()
        let interrupted = await watcher.value
        cluster.stopAll()
        let problems = logProblems(cluster)
        if keep {
            note("data and node logs kept in \(root)")
        } else {
            try? FileManager.default.removeItem(atPath: root)
        }
        if interrupted != nil { throw ExitCode(130) }
        var report = try result.get()
        report.nodeLogProblems = problems
        try printReport(report)
    }

    /// `--data` (refused unless new or empty) or a new folder under ./.build/bench-restart.
    func makeDataFolder() throws -> String {
        let fm = FileManager.default
        let path: String
        if let data {
            path = data.hasPrefix("/") ? data : fm.currentDirectoryPath + "/" + data
            if let existing = try? fm.contentsOfDirectory(atPath: path), !existing.isEmpty {
                throw ValidationError("--data \(data) is not empty; the benchmark needs a fresh folder")
            }
        } else {
            path = "\(fm.currentDirectoryPath)/.build/bench-restart/run-\(Int(Date().timeIntervalSince1970))-\(getpid())"
        }
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func measure(_ cluster: LocalCluster, ports: [Int]) async throws -> RestartReport {
        try cluster.startAll()
        let client = try TernCluster(endpoints: cluster.endpoints)
        do {
            let report = try await measure(cluster, ports: ports, client: client)
            await client.shutdown()
            return report
        } catch {
            await client.shutdown()
            throw error
        }
    }

    func measure(_ cluster: LocalCluster, ports: [Int], client: TernCluster) async throws -> RestartReport {
        let clock = ContinuousClock()
        note("3 nodes on \(cluster.endpoints.joined(separator: ",")), data in \(cluster.dataRoot); leader \(try await waitForLeader(client))")
        let topic = "restart"
        try await client.createTopic(topic, queues: queues)
        let before = try await leaderStatus(client).lastIndex
        let filledFrom = clock.now
        let last = try await fill(client, topic: topic)
        let fillSeconds = (clock.now - filledFrom).seconds
        let leader = try await leaderStatus(client)
        let entries = leader.lastIndex
        note(
            String(
                format: "filled: %d messages in %.1f s (%.0f msg/s), %d log entries (%d for the messages); last message %@", messages, fillSeconds,
                Double(messages) / fillSeconds, Int(entries), Int(entries - before), "\(last)"))
        try await waitCaughtUp(client, through: entries)
        let target = PullRequest(topic: topic, queueID: last.queue.queueID, offset: last.queueOffset, maxMessages: 1)
        let leaderPort = ports[cluster.ids.firstIndex(of: leader.id)!]
        guard case .answer(let check) = pullDirect(port: leaderPort, target), check.messages.first?.id == last.messageID else {
            throw ValidationError("the leader \(leader.id) does not answer a pull of the last message (\(last)) with it")
        }
        var report = RestartReport(
            messages: messages, bodyBytes: bodyBytes, batch: batch, queues: Int(queues), entries: entries, fillEntries: entries - before,
            fillSeconds: rounded(fillSeconds, 2), fillMsgsPerSec: Int(Double(messages) / fillSeconds), snapshotEntries: snapshotEntries,
            segmentMb: segmentMb)
        var follower = ""
        for k in 1...restarts {
            let status = try await client.status()
            if !status.contains(where: { $0.id == follower && $0.role == "follower" }) {
                guard let f = status.filter({ $0.role == "follower" }).map(\.id).sorted().first else {
                    throw ValidationError("no follower to restart: \(status.map { "\($0.id) \($0.role)" })")
                }
                if !follower.isEmpty { note("\(follower) is no longer a follower; restarting \(f) from now on") }
                follower = f
            }
            let k0 = cluster.ids.firstIndex(of: follower)!
            let disk = directoryBytes("\(cluster.dataRoot)/\(follower)")
            report.logBytes = disk.size
            report.logBytesAllocated = disk.allocated
            report.follower = follower
            var sample = try await restart(cluster, follower, port: ports[k0], target: target, expect: last.messageID)
            note(
                String(
                    format:
                        "restart %d of %@: serving after %.0f ms (listening after %.0f ms, log opened in %d ms), snapshot %d, %d entries after it, RSS %.1f MiB",
                    k, follower, sample.millis, sample.listenMillis, sample.openMillis, Int(sample.snapshotIndex),
                    Int(sample.appliedAfterSnapshot),
                    Double(sample.rssBytes) / 1_048_576))
            for line in sample.startLines { note("    start: \(line)") }
            try await waitCaughtUp(client, through: entries)
            try await Task.sleep(for: .milliseconds(500))
            // Read again: a stall is logged when it ends, which may be after the first answer.
            sample.notices = StartLog("\(cluster.logDirectory)/\(follower).log", from: sample.logOffset).notices
            for line in sample.notices { note("    logged: \(line)") }
            report.samples.append(sample)
        }
        for id in cluster.ids where id != follower {
            if let pid = cluster.pid(id) {
                report.othersRssBytes[id] = [procStatusBytes(pid, "VmRSS:"), procStatusBytes(pid, "RssAnon:"), procStatusBytes(pid, "RssFile:")]
            }
        }
        return report
    }

    /// Sends `--messages` messages, `--batch` per send, `--inflight` sends outstanding; returns
    /// the receipt of the message stored last (the highest log index).
    func fill(_ client: TernCluster, topic: String) async throws -> SendReceipt {
        struct State {
            var claimed = 0
            var acked = 0
            var failed = 0
            var lastError = ""
            var last: SendReceipt?
        }
        let state = NIOLockedValueBox(State())
        let producer = Producer(cluster: client, group: "bench-restart", sendTimeoutMillis: 30_000)
        let message = Message(topic: topic, body: (0..<bodyBytes).map { UInt8(truncatingIfNeeded: $0) })
        let total = messages
        let size = batch
        let clock = ContinuousClock()
        let start = clock.now
        let progress = Task {
            while !Task.isCancelled {
                do { try await Task.sleep(for: .seconds(5)) } catch { return }
                let (acked, failed) = state.withLockedValue { ($0.acked, $0.failed) }
                let t = (clock.now - start).seconds
                note(String(format: "  fill %5.0f s: %d of %d messages, %.0f msg/s so far, %d sends failed", t, acked, total, Double(acked) / t, failed))
            }
        }
        defer { progress.cancel() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<inflight {
                group.addTask {
                    while !Task.isCancelled {
                        let n = state.withLockedValue { s -> Int in
                            let n = min(size, total - s.claimed)
                            s.claimed += n
                            return n
                        }
                        if n == 0 { return }
                        do {
                            let receipts = try await producer.send(batch: Array(repeating: message, count: n))
                            state.withLockedValue { s in
                                s.acked += n
                                if let r = receipts.max(by: { $0.messageID < $1.messageID }), s.last.map({ $0.messageID < r.messageID }) ?? true { s.last = r }
                            }
                        } catch {
                            // Given back and sent again (a send that failed may still have been
                            // stored: the count is then a little over --messages).
                            let failed = state.withLockedValue { s -> Int in
                                s.claimed -= n
                                s.failed += 1
                                s.lastError = "\(error)"
                                return s.failed
                            }
                            if failed > 100 { throw ValidationError("more than 100 sends failed; last: \(error)") }
                            try await Task.sleep(for: .milliseconds(50))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        try Task.checkCancellation()
        let s = state.withLockedValue { $0 }
        if s.failed > 0 { note("\(s.failed) sends failed and were sent again; last error: \(s.lastError)") }
        guard let last = s.last else { throw ValidationError("no send was acknowledged") }
        return last
    }

    /// SIGKILLs `id`, starts it again with the same arguments and polls it every 20 ms until a
    /// pull sent to it alone returns `expect` at the target offset.
    func restart(_ cluster: LocalCluster, _ id: String, port: Int, target: PullRequest, expect: MessageID) async throws -> RestartSample {
        cluster.kill(id)
        let logPath = "\(cluster.logDirectory)/\(id).log"
        var st = stat()
        let logOffset = stat(logPath, &st) == 0 ? UInt64(st.st_size) : 0
        let clock = ContinuousClock()
        let spawned = clock.now
        try cluster.start(id)
        guard let pid = cluster.pid(id) else { throw ValidationError("\(id) did not start") }
        var listening: ContinuousClock.Instant?
        var lastAnswer = "nothing"
        while true {
            try Task.checkCancellation()
            guard cluster.processes[id]?.isRunning ?? false else {
                let status = cluster.processes[id]?.terminationStatus ?? -1
                cluster.reap(id)
                throw ValidationError("\(id) exited with status \(status) before serving; see \(logPath)")
            }
            let answer = pullDirect(port: port, target)
            if case .refused = answer {} else if listening == nil { listening = clock.now }
            switch answer {
            case .answer(let r) where r.messages.first?.id == expect:
                let served = clock.now
                let log = StartLog(logPath, from: logOffset)
                return RestartSample(
                    millis: rounded((served - spawned).seconds * 1000, 1), listenMillis: rounded(((listening ?? served) - spawned).seconds * 1000, 1),
                    openMillis: log.openMillis, logFirst: log.first,
                    logLast: log.last, snapshotIndex: log.applied, appliedAfterSnapshot: log.last >= log.applied ? log.last - log.applied : 0,
                    rssBytes: procStatusBytes(pid, "VmRSS:"), rssAnonBytes: procStatusBytes(pid, "RssAnon:"), rssFileBytes: procStatusBytes(pid, "RssFile:"),
                    peakRssBytes: procStatusBytes(pid, "VmHWM:"), startLines: log.start, notices: log.notices,
                    logOffset: logOffset)
            case .answer(let r): lastAnswer = "\(r.messages.count) messages, queue offsets \(r.minOffset)..<\(r.maxOffset)"
            case .failed(let why): lastAnswer = why
            case .refused: break
            }
            if clock.now - spawned > .seconds(timeout) {
                throw ValidationError("\(id) did not serve the last message within \(Int(timeout)) s (last answer: \(lastAnswer)); see \(logPath)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func printReport(_ r: RestartReport) throws {
        let ms = r.samples.map(\.millis)
        let median = medianOf(ms)
        let mib = { (b: Int) in String(format: "%.1f", Double(b) / 1_048_576) }
        if json {
            struct Summary: Encodable {
                var messages, bodyBytes, batch, queues, snapshotEntries, segmentMb, fillMsgsPerSec, logBytes, logBytesAllocated, rssBytes, peakRssBytes: Int
                var entries, fillEntries, snapshotIndex, appliedAfterSnapshot: UInt64
                var fillSeconds, restartMedianMillis, restartMaxMillis: Double
                var restartMillis, listenMillis: [Double]
                var openMillis: [Int]
                var follower: String
                var othersRssBytes: [String: [Int]]
                var restarts: [RestartSample]
                var nodeLogProblems: [String]
            }
            let last = r.samples.last!
            try printJSON(
                Summary(
                    messages: r.messages, bodyBytes: r.bodyBytes, batch: r.batch, queues: r.queues, snapshotEntries: r.snapshotEntries, segmentMb: r.segmentMb,
                    fillMsgsPerSec: r.fillMsgsPerSec, logBytes: r.logBytes, logBytesAllocated: r.logBytesAllocated, rssBytes: last.rssBytes,
                    peakRssBytes: r.samples.map(\.peakRssBytes).max() ?? 0, entries: r.entries, fillEntries: r.fillEntries, snapshotIndex: last.snapshotIndex,
                    appliedAfterSnapshot: last.appliedAfterSnapshot, fillSeconds: r.fillSeconds, restartMedianMillis: rounded(median, 1),
                    restartMaxMillis: ms.max() ?? 0, restartMillis: ms, listenMillis: r.samples.map(\.listenMillis), openMillis: r.samples.map(\.openMillis),
                    follower: r.follower, othersRssBytes: r.othersRssBytes, restarts: r.samples, nodeLogProblems: r.nodeLogProblems))
            return
        }
        print(
            "restart: \(r.messages) messages of \(r.bodyBytes) B (\(r.batch) per send, \(r.queues) queues), \(r.entries) log entries, \(r.snapshotEntries == 0 ? "no snapshots" : "a snapshot every \(r.snapshotEntries) entries"), segments of \(r.segmentMb) MiB"
        )
        print(String(format: "  filled in %.1f s (%d msg/s)", r.fillSeconds, r.fillMsgsPerSec))
        print("  follower \(r.follower): data directory \(mib(r.logBytes)) MiB (\(mib(r.logBytesAllocated)) MiB allocated)")
        print("   #  serving ms  listening ms  log opened ms  snapshot  entries after  RSS MiB (anon+file)  peak MiB  stalls/elections logged")
        for (k, s) in r.samples.enumerated() {
            let cells = [
                right("\(k + 1)", 4), right(String(format: "%.1f", s.millis), 12), right(String(format: "%.1f", s.listenMillis), 14),
                right("\(s.openMillis)", 15), right("\(s.snapshotIndex)", 10),
                right("\(s.appliedAfterSnapshot)", 15), right("\(mib(s.rssBytes)) (\(mib(s.rssAnonBytes))+\(mib(s.rssFileBytes)))", 21),
                right(mib(s.peakRssBytes), 10), right("\(s.notices.count)", 25),
            ]
            print(cells.joined())
        }
        print(String(format: "restart to serving: median %.0f ms, max %.0f ms over %d restarts", median, ms.max() ?? 0, ms.count))
        if !r.othersRssBytes.isEmpty {
            print(
                "  RSS of the nodes not restarted: \(r.othersRssBytes.sorted { $0.key < $1.key }.map { "\($0.key) \(mib($0.value[0])) MiB (\(mib($0.value[1]))+\(mib($0.value[2])))" }.joined(separator: ", "))"
            )
        }
        if !r.nodeLogProblems.isEmpty {
            print("  node logs: \(r.nodeLogProblems.count) warning/error lines (first ones below)")
            for line in r.nodeLogProblems.prefix(10) { print("    \(line)") }
        }
    }
}

struct RestartSample: Encodable {
    /// From the spawn: serving, and accepting connections.
    var millis, listenMillis: Double
    var openMillis: Int
    var logFirst, logLast, snapshotIndex, appliedAfterSnapshot: UInt64
    var rssBytes, rssAnonBytes, rssFileBytes, peakRssBytes: Int
    var startLines: [String]
    /// What the node logged after its start about stalls, elections, warnings and errors (until
    /// half a second after it had caught up).
    var notices: [String]
    /// Where its log file ended when it was killed.
    var logOffset: UInt64
}

struct RestartReport {
    var messages, bodyBytes, batch, queues: Int
    var entries, fillEntries: UInt64
    var fillSeconds: Double
    var fillMsgsPerSec, snapshotEntries, segmentMb: Int
    var logBytes = 0
    var logBytesAllocated = 0
    var follower = ""
    var samples: [RestartSample] = []
    /// VmRSS, RssAnon, RssFile of the nodes not restarted, at the end.
    var othersRssBytes: [String: [Int]] = [:]
    var nodeLogProblems: [String] = []
}

/// `text` padded with spaces on the left to `n` characters.
private func right(_ text: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - text.count)) + text }

private func note(_ text: String) { FileHandle.standardError.write(Data("\(text)\n".utf8)) }

private func medianOf(_ values: [Double]) -> Double {
    let s = values.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

private func leaderStatus(_ client: TernCluster) async throws -> NodeStatus {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(30)
    while clock.now < deadline {
        if let leader = try await client.status().first(where: { $0.role == "leader" }) { return leader }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ValidationError("no leader answered a status request within 30 s")
}

/// Waits until every node has applied, and has on its disk, the log through `index`.
private func waitCaughtUp(_ client: TernCluster, through index: UInt64) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(120)
    var nodes: [NodeStatus] = []
    while clock.now < deadline {
        nodes = try await client.status()
        if nodes.allSatisfy({ $0.role != "unreachable" && $0.appliedIndex >= index && $0.durableIndex >= index }) { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ValidationError(
        "the nodes did not all apply index \(index) within 120 s: \(nodes.map { "\($0.id) \($0.role) applied \($0.appliedIndex) durable \($0.durableIndex)" })")
}

enum DirectAnswer {
    case refused
    case answer(PullResponse)
    case failed(String)
}

/// One pull sent to the node on `port` (127.0.0.1) over a connection of its own, so that no
/// other node answers it (the SDK sends reads to the leader when it knows one).
func pullDirect(port: Int, _ request: PullRequest, timeoutMillis: Int = 1000) -> DirectAnswer {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return .failed("socket: errno \(errno)") }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { return .refused }
    let codec = FrameCodec()
    let out = codec.encode(Frame(opcode: Opcode.pull.rawValue, requestID: 1, body: request.encoded()))
    var sent = 0
    while sent < out.count {
        let n = out.withUnsafeBytes { send(fd, $0.baseAddress! + sent, out.count - sent, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { return .failed("send: errno \(errno)") }
        sent += n
    }
    var buffer: [UInt8] = []
    while true {
        switch codec.decode(buffer) {
        case .failure(let e): return .failed("bad frame: \(e)")
        case .success(.frame(let frame, _)):
            if frame.flags.contains(.error) { return .failed(ErrorBody.decode(frame.body).map { "\($0)" } ?? "an undecodable error") }
            do {
                return .answer(try PullResponse.decode(frame.body))
            } catch {
                return .failed("bad pull response: \(error)")
            }
        case .success(.needMore(let more)):
            var chunk = [UInt8](repeating: 0, count: max(more, 4096))
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, more, 0) }
            guard n > 0 else { return .failed(n == 0 ? "connection closed" : "recv: errno \(errno)") }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}

/// A field of /proc/PID/status given in kB ("VmRSS:"), in bytes; 0 when unknown.
private func procStatusBytes(_ pid: Int32, _ field: String) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
        let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
    else { return 0 }
    return kib * 1024
}

/// Sizes of the regular files under `path`: apparent (st_size) and allocated (st_blocks).
private func directoryBytes(_ path: String) -> (size: Int, allocated: Int) {
    var size = 0
    var allocated = 0
    guard let files = FileManager.default.enumerator(atPath: path) else { return (0, 0) }
    for case let rel as String in files {
        var st = stat()
        if lstat(path + "/" + rel, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG {
            size += Int(st.st_size)
            allocated += Int(st.st_blocks) * 512
        }
    }
    return (size, allocated)
}

/// What a node logged at start: "opened log F...L, applied A from the snapshot, in N ms", the
/// "start:" lines (which snapshot was loaded), and lines about stalls (ticks that fell due at
/// once), elections, warnings and errors.
struct StartLog {
    var first: UInt64 = 0
    var last: UInt64 = 0
    var applied: UInt64 = 0
    var openMillis = -1
    var start: [String] = []
    var notices: [String] = []

    /// From the lines written after `offset` of the log file at `path`.
    init(_ path: String, from offset: UInt64) {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let text = String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
        for line in text.split(separator: "\n") {
            if let r = line.range(of: ": start: ") { start.append(String(line[r.upperBound...])) }
            if ["fell due at once", "andidate", " warning ", " error ", " critical "].contains(where: { line.contains($0) }) { notices.append(String(line)) }
            guard let r = line.range(of: ": opened log ") else { continue }
            let numbers = line[r.upperBound...].split(whereSeparator: { !$0.isNumber }).compactMap { UInt64($0) }
            if numbers.count >= 4 { (first, last, applied, openMillis) = (numbers[0], numbers[1], numbers[2], Int(numbers[3])) }
        }
    }
}

/// Warning, error and critical lines of every node's log, prefixed with the node.
private func logProblems(_ cluster: LocalCluster) -> [String] {
    cluster.ids.flatMap { id -> [String] in
        let text = (try? String(contentsOfFile: "\(cluster.logDirectory)/\(id).log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") }.map { "\(id): \($0)" }
    }
}
