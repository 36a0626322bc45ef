// `tern serve` (one node) and `tern cluster up` (a local group of them, as child processes).
import ArgumentParser
import CTernIO
import Foundation
import Logging
import TernClient
import TernLauncher
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

    @OptionGroup var options: ServeOptions

    func run() throws {
        let (config, level) = try options.resolve()
        try runServer(config, level: level)
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
    @Option(help: "Broker groups (g1, g2, ...) behind two name servers (docs/architecture.md, \"Many groups\"); group k's ports are 10(k-1) above g1's.")
    var groups = 1
    @Option(help: "With --groups above 1: the first name server's port; the second's follows.") var nameserverBasePort = 9876
    @Option(help: "Data directory (one subdirectory per node).") var data = "./tern-data"
    @Option(help: "Port of n1; the others follow.") var basePort = 9001
    @Option(help: "Port of n1's RocketMQ 5 gRPC front (docs/rocketmq.md); the others follow. 0: no front.") var grpcBasePort = 8081
    @Option(help: "Port of n1's HTTP listener (metrics, admin API, web console; docs/operations.md); the others follow. 0: none.")
    var httpBasePort = 8101
    @Option(help: "Storage backend for every node: auto, uring or posix.") var io: IOBackendChoice = .auto
    @Option(help: "A tern serve flag for every node, as one argument (repeatable): --node-arg=--disk-soft-limit=95.") var nodeArg: [String] = []
    @Option(help: "Certificate chain (PEM) every node serves to clients over TLS; it must name 127.0.0.1.") var tlsCert: String?
    @Option(help: "The certificate's private key (PEM).") var tlsKey: String?
    @Option(help: "PEM file of the CA that signed --tls-cert, for this command's own client (default: the system's CAs).") var tlsCa: String?
    @Flag(help: "Access control: every node checks client requests against the accounts; DATA/admin.credentials holds an account with every right.")
    var acl = false
    @Flag(help: "Run a short demo (create a topic, send, consume, kill the leader, send again), then stop.") var demo = false

    func run() async throws {
        tern_stdout_line_buffered()  // progress lines appear as they happen, also in a pipe
        guard nodes >= 1 && nodes <= 9 else { throw ValidationError("--nodes must be 1 to 9") }
        guard groups >= 1 && groups <= 9 else { throw ValidationError("--groups must be 1 to 9") }
        let (securityArgs, clientOptions) = try security()
        if groups > 1 { return try await runGroups(securityArgs: securityArgs, clientOptions: clientOptions) }
        guard grpcBasePort == 0 || (grpcBasePort > 0 && grpcBasePort + nodes <= 65536) else { throw ValidationError("--grpc-base-port must be 0 or a port") }
        let grpcPorts = grpcBasePort == 0 ? [] : (0..<nodes).map { grpcBasePort + $0 }
        let ids = (1...nodes).map { "n\($0)" }
        let grpcListen = Dictionary(uniqueKeysWithValues: zip(ids, grpcPorts.map { "127.0.0.1:\($0)" }))
        guard httpBasePort == 0 || (httpBasePort > 0 && httpBasePort + nodes <= 65536) else { throw ValidationError("--http-base-port must be 0 or a port") }
        let httpListen = Dictionary(uniqueKeysWithValues: zip(ids, (httpBasePort == 0 ? [] : (0..<nodes).map { httpBasePort + $0 }).map { "127.0.0.1:\($0)" }))
        let cluster = LocalCluster(
            nodes: nodes, basePort: basePort, dataRoot: data, extraArgs: ["--io", "\(io)"] + securityArgs + nodeArg,
            nodeArgs: { id in (grpcListen[id].map { ["--grpc-listen", $0] } ?? []) + (httpListen[id].map { ["--http-listen", $0] } ?? []) })
        // Held from before the first node starts: a SIGINT or SIGTERM at any moment after this
        // stops the nodes too, never leaves them running without this process.
        let (stopRequests, requested) = AsyncStream<Int32>.makeStream()
        let signals = demo ? nil : StopSignals([SIGINT, SIGTERM]) { requested.yield($0) }
        defer { signals?.cancel() }
        do {
            try cluster.startAll()
        } catch {
            cluster.stopAll()  // the nodes that did start
            throw error
        }
        print("tern: \(nodes) nodes starting (data in \(data), logs in \(cluster.logDirectory))")
        for (id, e) in zip(cluster.ids, cluster.endpoints) { print("  \(id)  \(e)") }
        print("endpoints: \(cluster.endpoints.joined(separator: ","))")
        if !grpcPorts.isEmpty {
            let list = ids.compactMap { grpcListen[$0] }
            print("RocketMQ 5 gRPC (official RocketMQ clients): \(list.joined(separator: ";"))" + (tlsCert == nil ? "" : " over TLS"))
        }
        if !httpListen.isEmpty {
            let scheme = tlsCert == nil ? "http" : "https"
            print(
                "web console and metrics: \(ids.compactMap { httpListen[$0] }.map { "\(scheme)://\($0)/" }.joined(separator: " "))"
                    + (acl ? " (sign in with the admin credentials)" : ""))
        }
        if cluster.usesGeneratedSecret {
            print("peers authenticate with the cluster secret in \(cluster.peerSecretPath) (docs/security.md)")
        }
        let client: TernCluster
        do {
            client = try TernCluster(endpoints: cluster.endpoints, options: clientOptions)
            print("leader: \(try await waitForLeader(client))")
        } catch {
            cluster.stopAll()
            throw error
        }
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
        var flags = tlsCert == nil ? "" : tlsCa.map { " --tls-ca \($0)" } ?? " --tls"
        if tlsCert != nil { print("clients connect over TLS (add\(flags) to every client command)") }
        if acl {
            print("access control is on: \(data)/admin.credentials holds the admin account (add --credentials to client commands)")
            flags += " --credentials \(data)/admin.credentials"
        }
        print("Try:  tern admin topic create demo --queues 4\(flags)")
        print("      tern send --topic demo --count 10\(flags)")
        print("      tern consume --topic demo --group g1 --count 10\(flags)")
        print("      tern admin cluster status\(flags)")
        print("Ctrl-C stops the cluster.")
        await client.shutdown()
        for await _ in stopRequests { break }
        print("\nstopping")
        cluster.stopAll()
        print("cluster stopped")
    }
}

extension ClusterUp {
    /// The nodes' TLS and access-control flags, and this command's own client options.
    func security() throws -> ([String], TernCluster.Options) {
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        if tlsCa != nil && tlsCert == nil { throw ValidationError("--tls-ca is for a cluster started with --tls-cert") }
        let absolute = { (path: String) in path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path }
        let tlsArgs = (tlsCert.map { ["--tls-cert", absolute($0), "--tls-key", absolute(tlsKey!)] } ?? []) + (tlsCa.map { ["--tls-ca", absolute($0)] } ?? [])
        var clientOptions = TernCluster.Options()
        if tlsCert != nil { clientOptions.tls = ClientTLS(caFile: tlsCa) }
        var aclArgs: [String] = []
        if acl {
            let path = absolute(data) + "/admin.credentials"
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: path) {
                var rng = SystemRandomNumberGenerator()
                let secret = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
                try writeCredentials(path: path, accessKey: "admin", secret: secret)
            }
            clientOptions.credentials = try Credentials(file: path)
            aclArgs = ["--acl", "--acl-admin", path]
        }
        return (tlsArgs + aclArgs, clientOptions)
    }
}

func runDemo(cluster: LocalCluster, client: TernCluster) async throws {
    print("\n== demo: topic \"demo\" with 4 queues")
    do {
        try await client.createTopic("demo", queues: 4)
    } catch ClientError.broker(let e) where e.code == .topicExists {
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
