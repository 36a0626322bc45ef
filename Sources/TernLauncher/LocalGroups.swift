// Many local broker groups behind name servers (`tern cluster up --groups N`, the multi-group
// chaos runs and tests): each group a `LocalCluster` under DATA/<group>, every one registering
// with every name server, all holding one cluster secret.
import ArgumentParser
import Foundation
import TernClient
import TernNameServer
import TernServer

public final class LocalGroups: @unchecked Sendable {
    public let names: [String]
    public let groups: [LocalCluster]
    public let nameServerEndpoints: [String]
    public let dataRoot: String
    public let secretPath: String
    public let executable: String
    let warmup: Int?

    /// `ports(k)`: group k's node ports (nil: from `basePort + 10 * k`). `extraArgs` go to every
    /// node; `nodeArgs(group, id)` to one.
    public init(
        groups count: Int, nodes: Int, basePort: Int, nameServerPorts: [Int], dataRoot: String, extraArgs: [String] = [],
        ports: ((Int) -> [Int])? = nil, executable: String = ternExecutable(), nameServerWarmupSeconds: Int? = nil,
        nodeArgs: @escaping @Sendable (String, String) -> [String] = { _, _ in [] }
    ) {
        warmup = nameServerWarmupSeconds
        names = (1...count).map { "g\($0)" }
        nameServerEndpoints = nameServerPorts.map { "127.0.0.1:\($0)" }
        self.dataRoot = dataRoot
        self.executable = executable
        secretPath = dataRoot + "/peer-secret"
        let list = nameServerEndpoints.joined(separator: ",")
        let secret = secretPath
        groups = names.enumerated().map { k, name in
            LocalCluster(
                nodes: nodes, basePort: basePort + 10 * k, dataRoot: "\(dataRoot)/\(name)",
                extraArgs: ["--broker-group", name, "--nameservers", list, "--peer-secret", secret] + extraArgs, ports: ports?(k),
                executable: executable, nodeArgs: { id in nodeArgs(name, id) })
        }
    }

    public var logDirectory: String { dataRoot + "/logs" }

    private lazy var servers = LocalNameServers(
        endpoints: nameServerEndpoints, secretPath: secretPath, logDirectory: logDirectory, executable: executable, warmupSeconds: warmup)
    public var nameServerProcesses: [Int: Process] { servers.processes }
    public func startNameServer(_ k: Int) throws { try servers.start(k) }
    public func killNameServer(_ k: Int, signal sig: Int32 = SIGKILL) { servers.kill(k, signal: sig) }

    public func startAll() throws {
        try writePeerSecret(path: secretPath)
        for k in nameServerEndpoints.indices { try startNameServer(k) }
        for g in groups { try g.startAll() }
    }

    public func stopAll() {
        for g in groups { g.stopAll() }
        servers.stopAll()
    }

    /// Waits until every name server lists every group with a leader; returns each group's leader.
    public func waitUntilRegistered(options: TernCluster.Options = TernCluster.Options(), timeoutSeconds: Double = 30) async throws -> [String: String] {
        try await waitForRegistrations(nameServers: nameServerEndpoints, groups: names, timeoutSeconds: timeoutSeconds)
    }
}

/// Name servers as child processes (`tern nameserver`), logging to LOGS/nameserverK.log.
public final class LocalNameServers: @unchecked Sendable {
    public let endpoints: [String]
    public let secretPath: String
    public let logDirectory: String
    public let executable: String
    public private(set) var processes: [Int: Process] = [:]
    private var paused: Set<Int> = []

    /// `--warmup-seconds` of every name server (nil: the default).
    public let warmupSeconds: Int?

    public init(endpoints: [String], secretPath: String, logDirectory: String, executable: String = ternExecutable(), warmupSeconds: Int? = nil) {
        self.warmupSeconds = warmupSeconds
        self.endpoints = endpoints
        self.secretPath = secretPath
        self.logDirectory = logDirectory
        self.executable = executable
    }

    /// The name servers' registration key file, beside the secret.
    var keyPath: String { URL(fileURLWithPath: secretPath).deletingLastPathComponent().appendingPathComponent("registration-key").path }

    /// Name servers get the registration key derived from the secret, never the secret: derived
    /// again by `startAll`, so that it follows a secret file that changed; written by `start`
    /// only when missing (a restart in a chaos run spawns the process and nothing more).
    private func writeKey(replace: Bool) throws {
        guard replace || !FileManager.default.fileExists(atPath: keyPath) else { return }
        try writeKeyFile(
            path: keyPath, text: RegistrationKey.file(for: try PeerSecrets.load(path: secretPath)), what: "registration key file", replace: replace)
    }

    public func start(_ k: Int) throws {
        try writePeerSecret(path: secretPath)
        try writeKey(replace: false)
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["nameserver", "--listen", endpoints[k], "--registration-key", keyPath] + (warmupSeconds.map { ["--warmup-seconds", "\($0)"] } ?? [])
        let logPath = "\(logDirectory)/nameserver\(k + 1).log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        processes[k] = p
    }

    public func startAll() throws {
        try writePeerSecret(path: secretPath)
        try writeKey(replace: true)
        for k in endpoints.indices { try start(k) }
    }

    public func kill(_ k: Int, signal sig: Int32 = SIGKILL) {
        guard let p = processes[k] else { return }
        if paused.remove(k) != nil { Foundation.kill(p.processIdentifier, SIGCONT) }
        Foundation.kill(p.processIdentifier, sig)
        p.waitUntilExit()
        processes[k] = nil
    }

    public func pause(_ k: Int) {
        guard let p = processes[k] else { return }
        Foundation.kill(p.processIdentifier, SIGSTOP)
        paused.insert(k)
    }

    public func resume(_ k: Int) {
        guard paused.remove(k) != nil, let p = processes[k] else { return }
        Foundation.kill(p.processIdentifier, SIGCONT)
    }

    public var running: [Int] { endpoints.indices.filter { processes[$0]?.isRunning ?? false } }

    public func stopAll() {
        for k in Array(paused) { resume(k) }
        for p in processes.values { p.terminate() }
        for p in processes.values { p.waitUntilExit() }
        processes = [:]
    }
}

/// Waits until every name server lists every group with a leader; returns each group's leader.
public func waitForRegistrations(nameServers: [String], groups: [String], timeoutSeconds: Double = 30) async throws -> [String: String] {
    let ns = try NameServers(endpoints: nameServers)
    defer { Task { await ns.shutdown() } }
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(timeoutSeconds)
    var seen: [String: String] = [:]
    while clock.now < deadline {
        var all = true
        for e in nameServers {
            let list = try? await ns.brokerGroups(at: e)
            let live = Dictionary((list?.groups ?? []).map { ($0.group, $0.leader) }, uniquingKeysWith: { a, _ in a })
            if Set(live.keys) != Set(groups) { all = false } else { seen = live }
        }
        if all { return seen }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ValidationError("not every group registered with every name server within \(Int(timeoutSeconds)) s")
}
