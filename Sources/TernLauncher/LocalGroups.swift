// Many local broker groups behind name servers (`tern cluster up --groups N`, the multi-group
// chaos runs and tests): each group a `LocalCluster` under DATA/<group>, every one registering
// with every name server, all holding one cluster secret.
import ArgumentParser
import Foundation
import TernClient

public final class LocalGroups: @unchecked Sendable {
    public let names: [String]
    public let groups: [LocalCluster]
    public let nameServerEndpoints: [String]
    public let dataRoot: String
    public let secretPath: String
    public let executable: String
    public private(set) var nameServerProcesses: [Int: Process] = [:]

    /// `ports(k)`: group k's node ports (nil: from `basePort + 10 * k`). `extraArgs` go to every
    /// node; `nodeArgs(group, id)` to one.
    public init(
        groups count: Int, nodes: Int, basePort: Int, nameServerPorts: [Int], dataRoot: String, extraArgs: [String] = [],
        ports: ((Int) -> [Int])? = nil, executable: String = ternExecutable(),
        nodeArgs: @escaping @Sendable (String, String) -> [String] = { _, _ in [] }
    ) {
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

    public func startNameServer(_ k: Int) throws {
        try writePeerSecret(path: secretPath)
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["nameserver", "--listen", nameServerEndpoints[k], "--peer-secret", secretPath]
        let logPath = "\(logDirectory)/nameserver\(k + 1).log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        nameServerProcesses[k] = p
    }

    public func killNameServer(_ k: Int, signal sig: Int32 = SIGKILL) {
        guard let p = nameServerProcesses[k] else { return }
        Foundation.kill(p.processIdentifier, sig)
        p.waitUntilExit()
        nameServerProcesses[k] = nil
    }

    public func startAll() throws {
        try writePeerSecret(path: secretPath)
        for k in nameServerEndpoints.indices { try startNameServer(k) }
        for g in groups { try g.startAll() }
    }

    public func stopAll() {
        for g in groups { g.stopAll() }
        for p in nameServerProcesses.values { p.terminate() }
        for p in nameServerProcesses.values { p.waitUntilExit() }
        nameServerProcesses = [:]
    }

    /// Waits until every name server lists every group with a leader; returns each group's leader.
    public func waitUntilRegistered(options: TernCluster.Options = TernCluster.Options(), timeoutSeconds: Double = 30) async throws -> [String: String] {
        let ns = try NameServers(endpoints: nameServerEndpoints)
        defer { Task { await ns.shutdown() } }
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(timeoutSeconds)
        var seen: [String: String] = [:]
        while clock.now < deadline {
            var all = true
            for e in nameServerEndpoints {
                let list = try? await ns.brokerGroups(at: e)
                let live = Dictionary((list?.groups ?? []).map { ($0.group, $0.leader) }, uniquingKeysWith: { a, _ in a })
                if Set(live.keys) != Set(names) { all = false } else { seen = live }
            }
            if all { return seen }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("not every group registered with every name server within \(Int(timeoutSeconds)) s; see the logs under \(dataRoot)")
    }
}
