// Two broker groups of three real processes behind two real name servers: a topic spread over
// both, producers and a consumer group across them, a leader killed in one group, every name
// server killed, and a stale route refused.
import Foundation
import TernLauncher
import TernProtocol
import Testing

@testable import TernClient

@Suite("Integration: two broker groups behind name servers", .serialized)
struct MultiGroupTests {
    @Test("spread, consume across groups, fail over in one group, ride out the name servers' loss, refuse a stale route", .timeLimit(.minutes(4)))
    func twoGroups() async throws {
        guard let binary = ternBinary() else {
            Issue.record("the tern executable was not found next to the tests")
            return
        }
        let root = NSTemporaryDirectory() + "tern-mg-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var portsByGroup: [[Int]] = []
        var used: Set<Int> = []
        func port() -> Int {
            var p = freeLoopbackPort()
            while used.contains(p) { p = freeLoopbackPort() }
            used.insert(p)
            return p
        }
        for _ in 0..<2 { portsByGroup.append((0..<3).map { _ in port() }) }
        let ports = portsByGroup
        let local = LocalGroups(
            groups: 2, nodes: 3, basePort: 0, nameServerPorts: [port(), port()], dataRoot: root, extraArgs: ["--segment-mb", "16"], ports: { ports[$0] },
            executable: binary)
        try local.startAll()
        defer {
            local.stopAll()
            try? FileManager.default.removeItem(atPath: root)
        }
        _ = try await local.waitUntilRegistered()
        var options = TernCluster.Options()
        options.routeRefreshMillis = 300  // refreshes while the name servers restart, below
        let client = try TernCluster(nameservers: local.nameServerEndpoints, options: options)
        defer { Task { await client.shutdown() } }

        // A topic spread over both groups; a send right after the create finds it.
        let plan = try await client.createTopic("mg", queues: 8, brokerGroups: nil)
        #expect(plan == [TopicPlacement(group: "g1", queues: 4), TopicPlacement(group: "g2", queues: 4)])
        #expect(try await client.createTopic("mg", queues: 8, brokerGroups: nil) == plan, "creating again with the same arguments is idempotent")
        let described = try await client.describeTopic("mg")
        #expect(described.queues.map(\.queueID) == Array(0..<8))

        let producer = Producer(cluster: client, group: "mg-producer", sendTimeoutMillis: 30_000)
        var receipts: [String: SendReceipt] = [:]
        for k in 0..<200 {
            let r = try await producer.send(Message(topic: "mg", keys: ["k\(k)"], body: Array("m\(k)".utf8)))
            receipts["m\(k)"] = r
        }
        let perGroup = Dictionary(grouping: receipts.values, by: \.brokerGroup).mapValues(\.count)
        #expect(perGroup == ["g1": 100, "g2": 100], "round robin over all eight queues: \(perGroup)")

        // A send carrying a client's message id (a RocketMQ client's UNIQ_KEY, retried with the
        // same id) goes to that id's queue every time, so its group stores it once.
        _ = try await client.createTopic("mg-uniq", queues: 8, brokerGroups: nil)
        var retried: [SendReceipt] = []
        for k in 0..<6 {
            var m = Message(topic: "mg-uniq", body: Array("uniq\(k)".utf8))
            m.properties[DedupeProperty.clientMessageID] = "client-id-\(k)"
            let first = try await producer.send(m)
            let again = try await producer.send(m)
            #expect(again.duplicate && again.brokerGroup == first.brokerGroup && again.queue == first.queue && again.queueOffset == first.queueOffset)
            retried.append(first)
        }
        #expect(Set(retried.map(\.brokerGroup)).count == 2, "ids spread over both groups: \(retried.map(\.description))")

        // Lookups by id name the group; the same index in the other group is another message.
        let sample = receipts["m7"]!
        #expect(text(try await client.message(id: sample.groupMessageID)) == "m7")
        #expect(sample.groupMessageID.description.hasPrefix("\(sample.brokerGroup)/"))
        #expect(GroupMessageID(sample.groupMessageID.description) == sample.groupMessageID)
        #expect(try await client.messages(topic: "mg", key: "k9").map(text) == ["m9"])

        // Two members of one consumer group share the queues of both groups; nothing lost or doubled.
        let a = PullConsumer(cluster: client, group: "mg-consumers", topic: "mg", clientID: "a")
        let b = PullConsumer(cluster: client, group: "mg-consumers", topic: "mg", clientID: "b")
        try await a.start()
        try await b.start()
        try await a.heartbeat()  // learns that b took half of its queues in each group
        var seen: [String: Int] = [:]
        let clock = ContinuousClock()
        var deadline = clock.now + .seconds(30)
        while seen.count < 200 && clock.now < deadline {
            for c in [a, b] {
                for m in try await c.poll(maxMessages: 64, waitMillis: 100) { seen[text(m), default: 0] += 1 }
            }
        }
        #expect(seen.count == 200 && seen.values.allSatisfy { $0 == 1 }, "\(seen.count) distinct, doubled: \(seen.filter { $0.value > 1 }.keys.sorted())")
        try await a.heartbeat()
        try await b.heartbeat()
        let owned = (a.groupAssignment + b.groupAssignment).flatMap { g in g.queues.map { "\(g.group):\($0.queueID)" } }
        #expect(owned.sorted() == ["g1:0", "g1:1", "g1:2", "g1:3", "g2:0", "g2:1", "g2:2", "g2:3"], "\(owned)")
        #expect(a.groupAssignment.allSatisfy { !$0.queues.isEmpty } && b.groupAssignment.allSatisfy { !$0.queues.isEmpty })
        try await a.commit()
        try await b.commit()

        // Kill g1's leader: sends go on, to both groups, after g1 elects another.
        let g1 = try await client.brokerGroup("g1")
        let g1Leader = try await leader(of: g1)
        local.groups[0].kill(g1Leader)
        var after: [String: Int] = [:]
        for k in 200..<240 {
            let r = try await producer.send(Message(topic: "mg", body: Array("m\(k)".utf8)))
            after[r.brokerGroup, default: 0] += 1
        }
        #expect(Set(after.keys) == ["g1", "g2"], "\(after)")

        // Every name server down: the routes already known keep sends and consumption going.
        local.killNameServer(0)
        local.killNameServer(1)
        for k in 240..<260 { _ = try await producer.send(Message(topic: "mg", body: Array("m\(k)".utf8))) }
        deadline = clock.now + .seconds(30)
        while seen.count < 260 && clock.now < deadline {
            for c in [a, b] {
                for m in try await c.poll(maxMessages: 64, waitMillis: 100) { seen[text(m), default: 0] += 1 }
            }
        }
        #expect(seen.count == 260, "after the kills: \(seen.count) of 260")
        await a.shutdown()
        await b.shutdown()
        // A new client, with no route yet, says why it cannot start.
        let fresh = try TernCluster(nameservers: local.nameServerEndpoints)
        do {
            _ = try await Producer(cluster: fresh).send(Message(topic: "mg", body: [1]))
            Issue.record("a send without any name server or known route succeeded")
        } catch let e as ClientError {
            #expect("\(e)".contains("name server"), "\(e)")
        }
        await fresh.shutdown()

        // A stale route (g2's name on g1's addresses) is refused before anything is sent.
        try local.groups[0].start(g1Leader)
        let stale = TernCluster(
            group: "g2", endpoints: local.groups[0].endpoints, leader: nil, options: TernCluster.Options(), eventLoopGroup: client.group, tls: nil)
        do {
            _ = try await stale.leaderCall(
                .send, SendRequest(topic: "mg", queueID: 0, producerGroup: "p", producerID: 0, sequence: 0, messages: [WireMessage(body: [1])]).encoded(),
                timeoutMillis: 1500)
            Issue.record("a node of g1 took a send meant for g2")
        } catch let e as ClientError {
            #expect("\(e)".contains("broker group g1, not of g2"), "\(e)")
        }
        await stale.shutdown()

        // The name servers come back empty and learn every group from its next registration;
        // meanwhile their routes are marked incomplete and the client keeps the groups it knows
        // (a refresh every 300 ms here): sends go on to both groups throughout.
        try local.startNameServer(0)
        try local.startNameServer(1)
        var during: [String: Int] = [:]
        let restartEnd = clock.now + .seconds(3)
        while clock.now < restartEnd {
            let r = try await producer.send(Message(topic: "mg", body: Array("restart".utf8)))
            during[r.brokerGroup, default: 0] += 1
        }
        #expect(Set(during.keys) == ["g1", "g2"], "sends while the name servers restarted: \(during)")
        _ = try await local.waitUntilRegistered(timeoutSeconds: 20)
    }
}
