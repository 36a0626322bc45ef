// `tern serve` (one node) and `tern cluster up` (a local group of them, as child processes).
import ArgumentParser
import CTernIO
import Foundation
import Logging
import TernClient
import TernRaft
import TernServer
import TernStorage

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one node of a Tern group.",
        discussion: """
            Clients and peers use the same port (--listen); --peers lists every member's, this \
            node's included. Settings may also come from --config FILE, one `name = value` per \
            line with the long flag names (flags given on the command line win).
            SIGTERM or Ctrl-C stops the node after its disk writes in flight complete.
            """)

    @Option(help: "This node's id; must appear in --peers.") var id: String?
    @Option(help: "host:port to listen on, for clients and peers.") var listen: String?
    @Option(help: "Every member as id=host:port, comma separated.") var peers: String?
    @Option(help: "Data directory.") var data: String?
    @Option(help: "Storage backend: auto (io_uring, else POSIX, said in the log), uring or posix.") var io: IOBackendChoice?
    @Option(help: "Raft tick in milliseconds (election timeout: 10 to 20 ticks; heartbeat: 2).") var tickMs: UInt64?
    @Flag(help: "Create a topic (4 queues) on its first send.") var autoCreateTopics = false
    @Option(help: "Largest message body in bytes.") var maxMessageBytes: Int?
    @Option(help: "Commitlog segment size in MiB.") var segmentMb: Int?
    @Option(help: "An undecided transaction is first checked this long after it was stored (ms; default 6000).") var transactionCheckFirstMs: UInt64?
    @Option(help: "... then checked again every this long (ms; default 30000).") var transactionCheckIntervalMs: UInt64?
    @Option(help: "... at most this many times, then rolled back (default 15).") var transactionMaxChecks: UInt32?
    @Option(help: "A config file of `name = value` lines.") var config: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"
    @Option(help: "Dial these peers elsewhere than their --peers endpoint, as id=host:port (a chaos test's proxies).") var dial: String?
    @Option(help: "Chaos tests only: a control file that can make this node's disk slow (\"slow MS\") or full (\"full\").") var faultFile: String?
    @Option(help: .hidden) var plant: [String] = []
    @Flag(help: "This node's disk was replaced (empty): rejoin without voting until safe (docs/raft.md).") var lostDisk = false
    @Flag(help: "Open a log that recovery calls corrupt by cutting it at the damage (what is cut must come back from the peers; docs/storage.md).") var repair = false

    func run() throws {
        var file: [String: String] = [:]
        if let path = config {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read config file \(path)") }
            for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
                let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2 else { throw ValidationError("\(path):\(n + 1): expected name = value") }
                file[parts[0]] = parts[1]
            }
            let known: Set = ["id", "listen", "peers", "data", "io", "tick-ms", "auto-create-topics", "max-message-bytes", "segment-mb", "log-level",
                              "transaction-check-first-ms", "transaction-check-interval-ms", "transaction-max-checks"]
            if let unknown = file.keys.sorted().first(where: { !known.contains($0) }) { throw ValidationError("\(path): unknown setting \(unknown)") }
        }
        guard let id = id ?? file["id"] else { throw ValidationError("--id is required") }
        guard let listen = listen ?? file["listen"] else { throw ValidationError("--listen is required") }
        guard let peerText = peers ?? file["peers"] else { throw ValidationError("--peers is required") }
        guard let data = data ?? file["data"] else { throw ValidationError("--data is required") }
        var members: [NodeID: String] = [:]
        for item in peerText.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, parseEndpoint(kv[1]) != nil else { throw ValidationError("--peers: \(item) is not id=host:port") }
            guard members[NodeID(kv[0])] == nil else { throw ValidationError("--peers names \(kv[0]) twice") }
            members[NodeID(kv[0])] = kv[1]
        }
        guard members[NodeID(id)] != nil else { throw ValidationError("--peers does not name this node (\(id))") }
        guard members[NodeID(id)] == listen else { throw ValidationError("--peers gives \(id) as \(members[NodeID(id)]!), but --listen is \(listen)") }

        var cfg = ServerConfig(id: NodeID(id), listen: listen, peers: members, dataDirectory: data)
        if let io { cfg.io = io } else if let v = file["io"] {
            guard let c = IOBackendChoice(rawValue: v) else { throw ValidationError("io = \(v): expected auto, uring or posix") }
            cfg.io = c
        }
        if let t = tickMs ?? file["tick-ms"].flatMap({ UInt64($0) }) {
            guard t >= 1 && t <= 10_000 else { throw ValidationError("--tick-ms must be 1 to 10000") }
            cfg.tickMillis = t
        }
        cfg.autoCreateTopics = autoCreateTopics || file["auto-create-topics"] == "true"
        if let m = maxMessageBytes ?? file["max-message-bytes"].flatMap({ Int($0) }) {
            guard m >= 1 && m <= 64 << 20 else { throw ValidationError("--max-message-bytes must be 1 to 67108864") }
            cfg.maxMessageBytes = m
        }
        if let m = segmentMb ?? file["segment-mb"].flatMap({ Int($0) }) {
            guard m >= 8 && m <= 4096 else { throw ValidationError("--segment-mb must be 8 to 4096") }
            cfg.segmentBytes = m << 20
        }
        if let v = transactionCheckFirstMs ?? file["transaction-check-first-ms"].flatMap({ UInt64($0) }) {
            guard v >= 100 else { throw ValidationError("--transaction-check-first-ms must be at least 100") }
            cfg.transactionCheckFirstMillis = v
        }
        if let v = transactionCheckIntervalMs ?? file["transaction-check-interval-ms"].flatMap({ UInt64($0) }) {
            guard v >= 100 else { throw ValidationError("--transaction-check-interval-ms must be at least 100") }
            cfg.transactionCheckIntervalMillis = v
        }
        if let v = transactionMaxChecks ?? file["transaction-max-checks"].flatMap({ UInt32($0) }) {
            guard v >= 1 && v <= 1000 else { throw ValidationError("--transaction-max-checks must be 1 to 1000") }
            cfg.transactionMaxChecks = v
        }
        if let dial {
            for item in dial.split(separator: ",") {
                let kv = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard kv.count == 2, parseEndpoint(kv[1]) != nil, members[NodeID(kv[0])] != nil, kv[0] != id else { throw ValidationError("--dial: \(item) is not peer=host:port for another member") }
                cfg.dial[NodeID(kv[0])] = kv[1]
            }
        }
        cfg.faultFile = faultFile
        for name in plant {
            guard let bug = PlantedBugs.all.first(where: { $0.0 == name })?.1 else { throw ValidationError("--plant \(name) is unknown") }
            cfg.plantedBugs.insert(bug)
        }
        cfg.lostDisk = lostDisk
        cfg.repairCorruption = repair
        let levelText = file["log-level"] ?? logLevel
        guard let level = Logger.Level(rawValue: levelText) else { throw ValidationError("log level \(levelText) is unknown") }
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, logLevel: level) }
        let logger = Logger(label: "tern.\(id)")
        let server = TernServer(config: cfg, logger: logger)
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                logger.notice("signal \(sig): stopping")
                server.stop()
            }
            s.resume()
            sources.append(s)
        }
        do {
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(2)
        }
        do {
            try server.wait()
        } catch {
            throw ExitCode(1)
        }
        _ = sources
    }
}

extension IOBackendChoice {
    init?(rawValue text: String) {
        switch text {
        case "auto": self = .auto
        case "uring": self = .uring
        case "posix": self = .posix
        default: return nil
        }
    }
}

/// The `tern` executable itself, for starting nodes as child processes.
func ternExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// A local group of `tern serve` processes.
final class LocalCluster: @unchecked Sendable {
    let ids: [String]
    let endpoints: [String]
    let dataRoot: String
    let extraArgs: [String]
    /// Arguments for one node only (a chaos run's relays and fault file).
    let nodeArgs: @Sendable (String) -> [String]
    let logDirectory: String
    private(set) var processes: [String: Process] = [:]

    init(nodes: Int, basePort: Int, dataRoot: String, extraArgs: [String] = [], ports: [Int]? = nil, logDirectory: String? = nil,
         nodeArgs: @escaping @Sendable (String) -> [String] = { _ in [] }) {
        ids = (1...nodes).map { "n\($0)" }
        endpoints = (ports ?? (0..<nodes).map { basePort + $0 }).map { "127.0.0.1:\($0)" }
        self.dataRoot = dataRoot
        self.extraArgs = extraArgs
        self.nodeArgs = nodeArgs
        self.logDirectory = logDirectory ?? dataRoot + "/logs"
    }

    var peers: String { zip(ids, endpoints).map { "\($0)=\($1)" }.joined(separator: ",") }

    func start(_ id: String) throws {
        let k = ids.firstIndex(of: id)!
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ternExecutable())
        p.arguments = ["serve", "--id", id, "--listen", endpoints[k], "--peers", peers, "--data", "\(dataRoot)/\(id)"] + extraArgs + nodeArgs(id)
        let logPath = "\(logDirectory)/\(id).log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        processes[id] = p
    }

    func startAll() throws { for id in ids { try start(id) } }

    func kill(_ id: String, signal sig: Int32 = SIGKILL) {
        guard let p = processes[id] else { return }
        Foundation.kill(p.processIdentifier, sig)
        p.waitUntilExit()
        processes[id] = nil
    }

    /// Sends a signal and leaves the process be (SIGSTOP, SIGCONT).
    func signal(_ id: String, _ sig: Int32) {
        if let p = processes[id] { Foundation.kill(p.processIdentifier, sig) }
    }

    var running: [String] { ids.filter { processes[$0]?.isRunning ?? false } }

    /// Forgets a process that exited by itself (so that `start` may run it again).
    func reap(_ id: String) {
        if let p = processes[id], !p.isRunning { processes[id] = nil }
    }

    func stopAll() {
        for p in processes.values { p.terminate() }
        for p in processes.values { p.waitUntilExit() }
        processes = [:]
    }
}

struct Cluster: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Local clusters for trying Tern out.", subcommands: [ClusterUp.self])
}

struct ClusterUp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a local Tern group on loopback; Ctrl-C stops it.",
        discussion: "Nodes n1, n2, ... listen on 127.0.0.1 from --base-port up; each logs to DATA/logs/ID.log.")

    @Option(help: "Nodes in the group.") var nodes = 3
    @Option(help: "Data directory (one subdirectory per node).") var data = "./tern-data"
    @Option(help: "Port of n1; the others follow.") var basePort = 9001
    @Option(help: "Storage backend for every node: auto, uring or posix.") var io: IOBackendChoice = .auto
    @Flag(help: "Run a short demo (create a topic, send, consume, kill the leader, send again), then stop.") var demo = false

    func run() async throws {
        tern_stdout_line_buffered()  // progress lines appear as they happen, also in a pipe
        guard nodes >= 1 && nodes <= 9 else { throw ValidationError("--nodes must be 1 to 9") }
        let cluster = LocalCluster(nodes: nodes, basePort: basePort, dataRoot: data, extraArgs: ["--io", "\(io)"])
        try cluster.startAll()
        print("tern: \(nodes) nodes starting (data in \(data), logs in \(cluster.logDirectory))")
        for (id, e) in zip(cluster.ids, cluster.endpoints) { print("  \(id)  \(e)") }
        print("endpoints: \(cluster.endpoints.joined(separator: ","))")
        let client = try TernCluster(endpoints: cluster.endpoints)
        let leader = try await waitForLeader(client)
        print("leader: \(leader)")
        if demo {
            do {
                try await runDemo(cluster: cluster, client: client)
            } catch {
                print("demo failed: \(error)")
                await client.shutdown()
                cluster.stopAll()
                throw ExitCode(1)
            }
            await client.shutdown()
            cluster.stopAll()
            print("cluster stopped")
            return
        }
        print("Try:  tern admin topic create demo --queues 4")
        print("      tern send --topic demo --count 10")
        print("      tern consume --topic demo --group g1 --count 10")
        print("      tern admin cluster status")
        print("Ctrl-C stops the cluster.")
        await client.shutdown()
        let stop = AsyncStream<Int32> { continuation in
            signal(SIGINT, SIG_IGN)
            signal(SIGTERM, SIG_IGN)
            for sig in [SIGINT, SIGTERM] {
                let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                s.setEventHandler { continuation.yield(sig) }
                s.resume()
                nonisolated(unsafe) let keep = s
                continuation.onTermination = { _ in keep.cancel() }
            }
        }
        for await _ in stop { break }
        print("\nstopping")
        cluster.stopAll()
        print("cluster stopped")
    }
}

func waitForLeader(_ client: TernCluster, timeoutSeconds: Double = 30) async throws -> String {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(timeoutSeconds)
    while clock.now < deadline {
        if let route = try? await client.queryRoute(), !route.leader.isEmpty {
            return route.leader
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ValidationError("no leader within \(Int(timeoutSeconds)) s; see the node logs")
}

func runDemo(cluster: LocalCluster, client: TernCluster) async throws {
    print("\n== demo: topic \"demo\" with 4 queues")
    do {
        try await client.createTopic("demo", queues: 4)
    } catch ClientError.broker(let e) where e.code == 102 {
        print("   (exists with another queue count: \(e.message))")
    }
    let producer = Producer(cluster: client, group: "demo-producer")
    print("== sending 10 messages (each acknowledged after a quorum fsync)")
    for k in 0..<10 {
        let r = try await producer.send(Message(topic: "demo", tag: k % 2 == 0 ? "even" : "odd", keys: ["k\(k)"], body: Array("hello \(k)".utf8)))
        print("   sent \(r.messageID) to \(r.queue) at offset \(r.queueOffset)")
    }
    print("== consuming as group demo-group")
    let consumer = PullConsumer(cluster: client, group: "demo-group", topic: "demo")
    try await consumer.start()
    var got = 0
    let clock = ContinuousClock()
    let until = clock.now + .seconds(10)
    while got < 10 && clock.now < until {
        for m in try await consumer.poll(waitMillis: 500) {
            print("   got \(m.id) \(m.topic)#\(m.queueID)@\(m.queueOffset) tag=\(m.message.tag) body=\"\(String(decoding: m.message.body, as: UTF8.self))\"")
            got += 1
        }
    }
    try await consumer.commit()
    await consumer.shutdown()
    guard got >= 10 else { throw ValidationError("consumed \(got) of 10 messages") }
    try await printStatus(client)
    let leader = try await waitForLeader(client)
    print("== SIGKILL the leader \(leader), then send through the new one")
    let killed = clock.now
    cluster.kill(leader)
    let r = try await producer.send(Message(topic: "demo", body: Array("after failover".utf8)))
    print("   sent \(r.messageID) \(String(format: "%.0f", (clock.now - killed).seconds * 1000)) ms after the kill")
    print("== restarting \(leader)")
    try cluster.start(leader)
    try await Task.sleep(for: .seconds(2))
    try await printStatus(client)
    print("== demo done")
}

func printStatus(_ client: TernCluster) async throws {
    print("   node  role        term  commit   last")
    for n in try await client.status() {
        print("   \(n.id.padding(4))  \(n.role.padding(10))  \(String(n.term).padding(4))  \(String(n.commitIndex).padding(7))  \(n.lastIndex)")
    }
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// One line per event on standard error, with a millisecond UTC timestamp (failovers are
/// read off these logs, and whole seconds hide them).
struct LineLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        let stamp = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, Int(ts.tv_nsec / 1_000_000))
        FileHandle.standardError.write(Data("\(stamp) \(event.level) \(label): \(event.message)\n".utf8))
    }
}
