// `tern cluster up --groups N`: N local broker groups behind two name servers, and the demo that
// runs across them.
import ArgumentParser
import Foundation
import TernClient
import TernLauncher
import TernProtocol

extension ClusterUp {
    func runGroups(securityArgs: [String], clientOptions: TernCluster.Options) async throws {
        let stride = 10
        guard basePort > 0, basePort + stride * groups <= 65536 else { throw ValidationError("--base-port must leave room for \(groups) groups") }
        let nsPorts = [nameserverBasePort, nameserverBasePort + 1]
        var ranges: [(String, Range<Int>)] = [
            ("--base-port", basePort..<(basePort + stride * (groups - 1) + nodes)), ("--nameserver-base-port", nsPorts[0]..<(nsPorts[1] + 1)),
        ]
        if grpcBasePort > 0 { ranges.append(("--grpc-base-port", grpcBasePort..<(grpcBasePort + stride * (groups - 1) + nodes))) }
        if httpBasePort > 0 { ranges.append(("--http-base-port", httpBasePort..<(httpBasePort + stride * (groups - 1) + nodes))) }
        for (k, a) in ranges.enumerated() {
            for b in ranges[(k + 1)...] where a.1.overlaps(b.1) {
                throw ValidationError("with \(groups) groups the ports of \(a.0) (\(a.1.lowerBound)-\(a.1.upperBound - 1)) reach those of \(b.0); move one")
            }
        }
        let ids = (1...nodes).map { "n\($0)" }
        let grpc = grpcBasePort, http = httpBasePort
        // The name servers start with the groups: no warm-up (a topic created right after the
        // "ready" line must reach every group); one restarted later is covered by the other's answers.
        let local = LocalGroups(
            groups: groups, nodes: nodes, basePort: basePort, nameServerPorts: nsPorts, dataRoot: data, extraArgs: ["--io", "\(io)"] + securityArgs + nodeArg,
            nameServerWarmupSeconds: 0,
            nodeArgs: { group, id in
                let k = Int(group.dropFirst())! - 1
                let n = ids.firstIndex(of: id) ?? 0
                return (grpc == 0 ? [] : ["--grpc-listen", "127.0.0.1:\(grpc + stride * k + n)"])
                    + (http == 0 ? [] : ["--http-listen", "127.0.0.1:\(http + stride * k + n)"])
            })
        let (stopRequests, requested) = AsyncStream<Int32>.makeStream()
        let signals = demo ? nil : StopSignals([SIGINT, SIGTERM]) { requested.yield($0) }
        defer { signals?.cancel() }
        let clock = ContinuousClock()
        let started = clock.now
        do {
            try local.startAll()
        } catch {
            local.stopAll()
            throw error
        }
        print("tern: \(groups) broker groups of \(nodes) nodes and \(nsPorts.count) name servers starting (data in \(data), logs under each group's logs/)")
        print("name servers: \(local.nameServerEndpoints.joined(separator: ","))   (logs in \(local.logDirectory))")
        for (k, (name, g)) in zip(local.names, local.groups).enumerated() {
            print("group \(name): endpoints \(g.endpoints.joined(separator: ","))")
            if grpc > 0 { print("  RocketMQ 5 gRPC: \((0..<nodes).map { "127.0.0.1:\(grpc + stride * k + $0)" }.joined(separator: ";"))") }
            if http > 0 {
                print(
                    "  web console and metrics: \((0..<nodes).map { "http\(tlsCert == nil ? "" : "s")://127.0.0.1:\(http + stride * k + $0)/" }.joined(separator: " "))"
                )
            }
        }
        print(
            "peers authenticate with the cluster secret in \(local.secretPath); registrations are signed with the key derived from it, the name servers' --registration-key (docs/security.md)"
        )
        let client: TernCluster
        do {
            let leaders = try await local.waitUntilRegistered(options: clientOptions)
            client = try TernCluster(nameservers: local.nameServerEndpoints, options: clientOptions)
            let took = String(format: "%.1f", (clock.now - started).seconds)
            print(
                "ready in \(took) s: \(local.names.map { "\($0) led by \(leaders[$0] ?? "?")" }.joined(separator: ", ")), behind \(local.nameServerEndpoints.joined(separator: ","))"
            )
        } catch {
            local.stopAll()
            throw error
        }
        if demo {
            do {
                try await runGroupsDemo(local: local, client: client)
            } catch {
                print("demo failed: \(error)")
                await client.shutdown()
                local.stopAll()
                throw ExitCode(1)
            }
            await client.shutdown()
            local.stopAll()
            print("cluster stopped")
            return
        }
        let defaultNS = nsPorts == [9876, 9877]
        let flags =
            (defaultNS ? "" : " --nameservers \(local.nameServerEndpoints.joined(separator: ","))")
            + (tlsCert == nil ? "" : tlsCa.map { " --tls-ca \($0)" } ?? " --tls")
            + (acl ? " --credentials \(data)/admin.credentials" : "")
        print("Client commands reach every group through the name servers\(defaultNS ? " (found on 127.0.0.1:9876 by default)" : "").")
        print("Try:  tern admin topic create demo --queues 8\(flags)")
        print("      tern send --topic demo --count 10\(flags)")
        print("      tern consume --topic demo --group g1 --count 10\(flags)")
        print("      tern admin cluster status\(flags)")
        print("Ctrl-C stops the cluster.")
        await client.shutdown()
        for await _ in stopRequests { break }
        print("\nstopping")
        local.stopAll()
        print("cluster stopped")
    }
}

func runGroupsDemo(local: LocalGroups, client: TernCluster) async throws {
    print("\n== demo: topic \"demo\" with 8 queues over \(local.names.joined(separator: ", "))")
    let plan = try await client.createTopic("demo", queues: 8, brokerGroups: nil)
    print("   placed \(plan.map(\.description).joined(separator: " "))")
    let producer = Producer(cluster: client, group: "demo-producer")
    print("== sending 10 messages (round robin over every group's queues)")
    for k in 0..<10 {
        let r = try await producer.send(Message(topic: "demo", keys: ["k\(k)"], body: Array("hello \(k)".utf8)))
        print("   sent \(r)")
    }
    print("== consuming as group demo-group (each group's leader assigns its own queues)")
    let consumer = PullConsumer(cluster: client, group: "demo-group", topic: "demo")
    try await consumer.start()
    var got = 0
    let clock = ContinuousClock()
    let until = clock.now + .seconds(15)
    while got < 10 && clock.now < until {
        for m in try await consumer.poll(waitMillis: 500) {
            print("   got \(m.brokerGroup)/\(m.id) \(m.topic)#\(m.queueID)@\(m.queueOffset) body=\"\(String(decoding: m.message.body, as: UTF8.self))\"")
            got += 1
        }
    }
    try await consumer.commit()
    await consumer.shutdown()
    guard got >= 10 else { throw ValidationError("consumed \(got) of 10 messages") }
    let g1 = try await client.brokerGroup(local.names[0])
    let leader = try await waitForLeader(g1)
    print("== SIGKILL \(local.names[0])'s leader \(leader); every group keeps taking sends")
    local.groups[0].kill(leader)
    var groupsUsed = Set<String>()
    for k in 0..<8 {
        let r = try await producer.send(Message(topic: "demo", body: Array("after kill \(k)".utf8)))
        groupsUsed.insert(r.brokerGroup)
    }
    print("   8 more sent, stored by \(groupsUsed.sorted().joined(separator: " and "))")
    print("== SIGKILL name server 1: routes already known keep working")
    local.killNameServer(0)
    let r = try await producer.send(Message(topic: "demo", body: Array("name server down".utf8)))
    print("   sent \(r)")
    try local.groups[0].start(leader)
    try local.startNameServer(0)
    try await Task.sleep(for: .seconds(2))
    for (group, nodes) in try await client.statusByGroup() {
        for n in nodes { print("   \(group.padding(4))  \(n.id.padding(4))  \(n.role.padding(10))  term \(n.term)  commit \(n.commitIndex)") }
    }
    print("== demo done")
}
