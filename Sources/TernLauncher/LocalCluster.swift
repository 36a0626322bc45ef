// Starting Tern nodes as child processes on this machine (`tern cluster up`, the chaos harness,
// the integration tests), finding a free loopback port, waiting for a leader, and the log
// format every node writes.
import ArgumentParser
import Foundation
import Logging
import TernClient
import TernServer

/// The executable `name` in the same folder as this one (`tern-chaos` next to `tern`), if there.
public func siblingExecutable(_ name: String) -> String? {
    let path = URL(fileURLWithPath: ternExecutable()).deletingLastPathComponent().appendingPathComponent(name).path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

/// This executable itself, for starting nodes as child processes.
public func ternExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// Runs `tern admin member replace OLD --with NEW --endpoint ENDPOINT` against the members at
/// `via`, as an operator would (docs/operations.md); its printed steps, or why it failed.
public func runMemberReplace(tern: String, old: String, new: String, endpoint: String, via: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tern)
    p.arguments = ["admin", "member", "replace", old, "--with", new, "--endpoint", endpoint, "--endpoints", via.joined(separator: ",")]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw ValidationError("tern admin member replace \(old) --with \(new) failed (\(p.terminationStatus)):\n\(out)") }
    return out
}

/// A local group of `tern serve` processes.
public final class LocalCluster: @unchecked Sendable {
    public let ids: [String]
    public let endpoints: [String]
    public let dataRoot: String
    public let extraArgs: [String]
    /// Arguments for one node only (a chaos run's relays and fault file).
    public let nodeArgs: @Sendable (String) -> [String]
    public let logDirectory: String
    /// The program each node runs, and the arguments before the node's own (`tern serve`).
    public let executable: String
    public let serveCommand: [String]
    public private(set) var processes: [String: Process] = [:]

    public init(
        nodes: Int, basePort: Int, dataRoot: String, extraArgs: [String] = [], ports: [Int]? = nil, logDirectory: String? = nil,
        executable: String = ternExecutable(), serveCommand: [String] = ["serve"],
        nodeArgs: @escaping @Sendable (String) -> [String] = { _ in [] }
    ) {
        self.executable = executable
        self.serveCommand = serveCommand
        ids = (1...nodes).map { "n\($0)" }
        endpoints = (ports ?? (0..<nodes).map { basePort + $0 }).map { "127.0.0.1:\($0)" }
        self.dataRoot = dataRoot
        self.extraArgs = extraArgs
        self.nodeArgs = nodeArgs
        self.logDirectory = logDirectory ?? dataRoot + "/logs"
    }

    public var peers: String { zip(ids, endpoints).map { "\($0)=\($1)" }.joined(separator: ",") }

    /// The cluster secret every node is given, created on first start unless the arguments name
    /// one or turn authentication off (docs/security.md).
    public var peerSecretPath: String { dataRoot + "/peer-secret" }

    /// True when the nodes are given the cluster secret (more than one node, and the arguments
    /// neither name a secret nor turn authentication off).
    public var usesGeneratedSecret: Bool { !peerArgs.isEmpty }

    private var peerArgs: [String] {
        let given = (extraArgs + nodeArgs(ids[0])).contains { $0.hasPrefix("--peer-secret") || $0.hasPrefix("--insecure-peers") }
        return ids.count > 1 && !given ? ["--peer-secret", peerSecretPath] : []
    }

    /// Writes a new random secret (mode 0600) unless the file exists.
    public func ensurePeerSecret() throws {
        guard !peerArgs.isEmpty else { return }
        try writePeerSecret(path: peerSecretPath)
    }

    public func start(_ id: String) throws {
        let k = ids.firstIndex(of: id)!
        try launch(id, ["--id", id, "--listen", endpoints[k], "--peers", peers, "--data", "\(dataRoot)/\(id)"] + peerArgs + extraArgs + nodeArgs(id))
    }

    /// Starts a node that is not one of `ids`: empty, it waits to be added to the group
    /// (`tern serve --join`; docs/operations.md, "Replacing a member"). Its data goes under
    /// the same root; `kill`, `pid` and `stopAll` know it by its id.
    public func startJoining(_ id: String, listen: String, join: String, extra: [String] = []) throws {
        let secret = ids.count > 1 && !peerArgs.isEmpty ? ["--peer-secret", peerSecretPath] : []
        try launch(id, ["--id", id, "--listen", listen, "--join", join, "--data", "\(dataRoot)/\(id)"] + secret + extraArgs + extra)
    }

    /// Whether the node with this id (one of `ids` or started with `startJoining`) runs.
    public func isRunning(_ id: String) -> Bool { processes[id]?.isRunning ?? false }

    private func launch(_ id: String, _ arguments: [String]) throws {
        try ensurePeerSecret()
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = serveCommand + arguments
        let logPath = "\(logDirectory)/\(id).log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        processes[id] = p
    }

    public func startAll() throws { for id in ids { try start(id) } }

    public func kill(_ id: String, signal sig: Int32 = SIGKILL) {
        guard let p = processes[id] else { return }
        Foundation.kill(p.processIdentifier, sig)
        p.waitUntilExit()
        processes[id] = nil
    }

    /// Sends a signal and leaves the process be (SIGSTOP, SIGCONT).
    public func signal(_ id: String, _ sig: Int32) {
        if let p = processes[id] { Foundation.kill(p.processIdentifier, sig) }
    }

    public var running: [String] { ids.filter { processes[$0]?.isRunning ?? false } }

    /// Forgets a process that exited by itself (so that `start` may run it again).
    public func reap(_ id: String) {
        if let p = processes[id], !p.isRunning { processes[id] = nil }
    }

    /// The process id of a running node.
    public func pid(_ id: String) -> Int32? { processes[id].map(\.processIdentifier) }

    public func stopAll() {
        for p in processes.values { p.terminate() }
        for p in processes.values { p.waitUntilExit() }
        processes = [:]
    }
}

/// Writes a new random cluster secret (mode 0600) to `path` unless the file exists.
public func writePeerSecret(path: String) throws {
    try writeKeyFile(
        path: path, text: "# Tern cluster secret (docs/security.md): every member holds the same file, mode 0600.\n\(PeerSecrets.generate())\n",
        what: "peer secret file")
}

/// Writes `text` to a new owner-only file at `path`: kept when it exists, unless `replace`
/// (then written beside it and renamed over it, so that a reader sees the old file or the new).
func writeKeyFile(path: String, text: String, what: String, replace: Bool = false) throws {
    guard replace || !FileManager.default.fileExists(atPath: path) else { return }
    try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
    let target = replace ? path + ".new" : path
    if replace { unlink(target) }
    let fd = open(target, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard fd >= 0 else { throw ValidationError("cannot create the \(what) \(target): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
        throw ValidationError("cannot write the \(what) \(target): \(String(cString: strerror(errno)))")
    }
    if replace, rename(target, path) != 0 {
        throw ValidationError("cannot replace the \(what) \(path): \(String(cString: strerror(errno)))")
    }
}

/// A loopback port free now, never handed out before by this process, and below the kernel's
/// ephemeral range (32768 and up here), so that no outgoing connection takes it before the node
/// binds it. Candidates start at a point drawn from the process id and go up. (A port from
/// `bind(0)`, released and handed out again, once went to two clusters started side by side:
/// the node that could not bind it left its test's client talking to the other cluster.)
public func freeLoopbackPort() -> Int {
    for _ in 0..<2_000 {
        let port = portLedger.next()
        if canBindLoopback(port) { return port }
    }
    return kernelChosenPort()  // the whole range busy: let the kernel choose
}

private final class PortLedger: @unchecked Sendable {
    private let lock = NSLock()
    private var cursor = Int(getpid()) &* 7919 % 12_000
    /// The next candidate, never the same twice in this process.
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        cursor += 1
        return 20_000 + cursor % 12_000
    }
}

private let portLedger = PortLedger()

private func canBindLoopback(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let len = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } } == 0
}

private func kernelChosenPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

public func waitForLeader(_ client: TernCluster, timeoutSeconds: Double = 30) async throws -> String {
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

/// One line per event on standard error, with a millisecond UTC timestamp (failovers are
/// read off these logs, and whole seconds hide them).
public struct LineLogHandler: LogHandler {
    let label: String
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]

    public init(label: String, logLevel: Logger.Level) {
        self.label = label
        self.logLevel = logLevel
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        let stamp = String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
            Int(ts.tv_nsec / 1_000_000))
        FileHandle.standardError.write(Data("\(stamp) \(event.level) \(label): \(event.message)\n".utf8))
    }
}

extension String {
    /// Padded with spaces on the right to `n` characters (for tables).
    public func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

extension Duration {
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
