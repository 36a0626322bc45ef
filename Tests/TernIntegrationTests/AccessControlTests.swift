// Access control on three real processes (docs/security.md): accounts made by the --acl-admin
// account, each right allowed and refused, the same after the leader is killed (the accounts
// are replicated through the log), and a deleted account's open connection refused at once.
import Foundation
import TernClient
import TernLauncher
import TernProtocol
import Testing

@testable import TernClient

@Suite("Integration: access control", .serialized)
struct AccessControlTests {
    @Test("each right allowed and refused, before and after a leader kill; wrong secrets, no account and a deleted account refused", .timeLimit(.minutes(4)))
    func rightsAcrossFailover() async throws {
        guard let binary = ternBinary() else {
            Issue.record("the tern executable was not found next to the tests")
            return
        }
        let dir = NSTemporaryDirectory() + "tern-acl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rootFile = dir + "/root.credentials"
        try writeFile(rootFile, "access-key = root\nsecret-key = root-secret-0123456789\n", mode: 0o600)
        let cluster = try TestCluster(binary: binary, extraArgs: ["--acl", "--acl-admin", rootFile])
        for id in cluster.ids { try cluster.start(id) }
        defer {
            cluster.stop()
            cluster.removeData()
        }
        func client(_ key: String?, _ secret: String = "") throws -> TernCluster {
            var o = TernCluster.Options()
            o.requestTimeoutMillis = 8000
            if let key { o.credentials = Credentials(accessKey: key, secret: secret.isEmpty ? "\(key)-secret-0123456789" : secret) }
            return try TernCluster(endpoints: cluster.endpoints, options: o)
        }
        let root = try client("root", "root-secret-0123456789")
        let first = try await leader(of: root)
        for t in ["orders", "audit"] { try await root.createTopic(t, queues: 2) }
        func secret(_ key: String) -> [UInt8] { Array("\(key)-secret-0123456789".utf8) }
        try await root.putAccount(Account(accessKey: "producer", secret: secret("producer"), topics: ["orders": .publish]))
        try await root.putAccount(
            Account(accessKey: "consumer", secret: secret("consumer"), topics: ["orders": .subscribe], groups: ["billing": .subscribe]))
        try await root.putAccount(Account(accessKey: "tx", secret: secret("tx"), defaultTopic: .publish, groups: ["txg": .publish]))
        try await root.putAccount(Account(accessKey: "ops", secret: secret("ops"), admin: true))
        try await Task.sleep(for: .milliseconds(300))  // every member applied the accounts

        func code(_ body: () async throws -> Void) async -> ErrorCode? {
            do {
                try await body()
                return nil
            } catch {
                return (error as? ClientError)?.code ?? ErrorCode(rawValue: 9999)
            }
        }
        func message(_ m: String) -> TernClient.Message { TernClient.Message(topic: "orders", body: Array(m.utf8)) }

        /// Every right, allowed and refused; `round` names the messages.
        func checkRights(_ round: String) async throws {
            let producer = try client("producer")
            let consumer = try client("consumer")
            let tx = try client("tx")
            let ops = try client("ops")
            defer {
                for c in [producer, consumer, tx, ops] { Task { await c.shutdown() } }
            }
            // Topic publish: allowed where granted, denied by default.
            #expect(
                await code { _ = try await Producer(cluster: producer, group: "p").send(message("\(round)-1")) } == nil, "\(round): producer sends to orders")
            #expect(
                await code { _ = try await Producer(cluster: producer, group: "p").send(TernClient.Message(topic: "audit", body: [1])) } == .permissionDenied,
                "\(round): producer to audit")
            #expect(await code { _ = try await Producer(cluster: consumer, group: "p").send(message("no")) } == .permissionDenied, "\(round): consumer sends")
            // Topic and group subscribe.
            let pull = PullConsumer(cluster: consumer, group: "billing", topic: "orders")
            #expect(await code { try await pull.start() } == nil, "\(round): consumer joins billing")
            var got = 0
            for _ in 0..<20 where got == 0 { got += try await pull.poll(waitMillis: 200).count }
            #expect(got > 0, "\(round): consumer reads orders")
            #expect(await code { try await pull.commit() } == nil, "\(round): consumer commits")
            await pull.shutdown()
            #expect(
                await code { try await PullConsumer(cluster: consumer, group: "other", topic: "orders").start() } == .permissionDenied,
                "\(round): consumer as group other")
            #expect(
                await code { try await PullConsumer(cluster: consumer, group: "billing", topic: "audit").start() } == .permissionDenied,
                "\(round): consumer of audit")
            #expect(
                await code { try await PullConsumer(cluster: producer, group: "billing", topic: "orders").start() } == .permissionDenied,
                "\(round): producer consumes")
            let simple = SimpleConsumer(cluster: consumer, group: "billing", topic: "orders")
            let deliveries = try await simple.receive(max: 4, waitMillis: 500)
            #expect(!deliveries.isEmpty, "\(round): receive as billing")
            for d in deliveries { try await simple.ack(d) }
            #expect(
                await code { _ = try await SimpleConsumer(cluster: consumer, group: "other", topic: "orders").receive(max: 1) } == .permissionDenied,
                "\(round): receive as other")
            // Group publish: a transaction of producer group txg ends; of group other, it may not.
            let txg = TransactionProducer(cluster: tx, group: "txg") { _ in .commit }
            let ended = try await txg.send(message("\(round)-tx")) { _ in .commit }
            #expect(ended.ended, "\(round): txg commits its transaction")
            let otherTx = TransactionProducer(cluster: tx, group: "other") { _ in .commit }
            let half = try await otherTx.producer.send(
                TernClient.Message(topic: "orders", properties: [TransactionProperty.half: "true"], body: Array("half".utf8)))
            #expect(await code { try await otherTx.end(half.messageID, .rollback) } == .permissionDenied, "\(round): other ends a transaction")
            // The admin right.
            #expect(await code { try await producer.createTopic("\(round)-p", queues: 1) } == .permissionDenied, "\(round): producer creates a topic")
            #expect(await code { _ = try await producer.accounts() } == .permissionDenied, "\(round): producer lists accounts")
            #expect(await code { try await ops.createTopic("\(round)-ops", queues: 1) } == nil, "\(round): ops creates a topic")
            #expect(try await ops.accounts().map(\.accessKey) == ["consumer", "ops", "producer", "tx"], "\(round): ops lists accounts")
            #expect(try await ops.accounts().allSatisfy { $0.secret.isEmpty }, "\(round): secrets are never listed")
            // Without an account, or with a wrong secret: nothing.
            let nobody = try client(nil)
            #expect(await code { _ = try await nobody.status() } == .unauthenticated, "\(round): no account")
            await nobody.shutdown()
            let wrong = try client("producer", "not-the-secret-0123456789")
            #expect(await code { _ = try await wrong.status() } == .unauthenticated, "\(round): wrong secret")
            await wrong.shutdown()
            let unknown = try client("ghost")
            #expect(await code { _ = try await unknown.status() } == .unauthenticated, "\(round): unknown account")
            await unknown.shutdown()
        }

        try await checkRights("before")
        cluster.kill(first)
        var second = first
        for _ in 0..<200 where second == first || second.isEmpty {
            try await Task.sleep(for: .milliseconds(50))
            second = (try? await root.queryRoute().leader) ?? first
        }
        #expect(second != first, "a new leader was elected")
        try await checkRights("after")
        try cluster.start(first)

        // A deleted account's open connection loses its rights at once; put back, it works again.
        let producer = try client("producer")
        let p = Producer(cluster: producer, group: "p")
        _ = try await p.send(message("still"))
        try await root.deleteAccount("producer")
        #expect(await code { _ = try await p.send(message("deleted")) } == .unauthenticated, "a deleted account")
        try await root.putAccount(Account(accessKey: "producer", secret: secret("producer"), topics: ["orders": .publish]))
        #expect(await code { _ = try await p.send(message("restored")) } == nil, "the account put back")
        // A new secret ends the connections that proved the old one.
        try await root.putAccount(Account(accessKey: "producer", secret: Array("a-new-secret-0123456789".utf8), topics: ["orders": .publish]))
        do {
            _ = try await p.send(message("old secret"))
            Issue.record("a connection that proved the old secret still sends")
        } catch {
            #expect("\(error)".contains("has a new secret"), "old secret: \(error)")
        }
        await producer.shutdown()

        // Give-backs: a consumer may give back what it may consume, not a message of a topic it
        // has no right on (the copy would land in its retry topic); its group's retry topic is
        // the group's to consume.
        let consumer = try client("consumer")
        let audit = try await Producer(cluster: root, group: "p").send(TernClient.Message(topic: "audit", body: Array("secret".utf8)))
        let ordersMessage = try await Producer(cluster: root, group: "p").send(message("to retry"))
        func giveBack(_ id: MessageID) async -> ErrorCode? {
            await code {
                _ = try await consumer.leaderCall(.sendBack, SendBackRequest(group: "billing", id: id, delayMillis: 0, maxReconsumeTimes: 3).encoded())
            }
        }
        #expect(await giveBack(audit.messageID) == .permissionDenied, "giving back a message of audit")
        #expect(await giveBack(ordersMessage.messageID) == nil, "giving back a message of orders")
        #expect(await code { try await PullConsumer(cluster: consumer, group: "billing", topic: "%RETRY%billing").start() } == nil, "the retry topic")
        let outsider = try client("producer", "a-new-secret-0123456789")
        #expect(
            await code { _ = try await outsider.pull(topic: "%RETRY%billing", queue: 0, offset: 0) } == .permissionDenied, "another account's retry topic")
        await outsider.shutdown()

        // A held long poll is answered once the account is deleted, not when its wait ends.
        let end = try await root.pull(topic: "orders", queue: 0, offset: 0).maxOffset
        let held = Task {
            let clock = ContinuousClock()
            let start = clock.now
            let result = await code {
                _ = try await consumer.anyCall(
                    .pull, PullRequest(topic: "orders", queueID: 0, offset: end, maxWaitMillis: 20_000).encoded(), timeoutMillis: 25_000)
            }
            return (result, clock.now - start)
        }
        try await Task.sleep(for: .milliseconds(500))
        try await root.deleteAccount("consumer")
        let (heldResult, waited) = await held.value
        #expect(heldResult == .unauthenticated, "the held pull: \(String(describing: heldResult))")
        #expect(waited < .seconds(10), "answered after \(waited), not at the end of its 20 s wait")
        await consumer.shutdown()

        // The CLI: an account made with --new-credentials sends with --credentials.
        let joined = cluster.endpoints.joined(separator: ",")
        let made = try runTern(
            binary,
            [
                "admin", "acl", "put", "cli", "--new-credentials", dir + "/cli.credentials", "--topic", "orders=pub", "--endpoints", joined, "--credentials",
                rootFile,
            ])
        #expect(made.status == 0, "acl put: \(made.output)")
        let sent = try runTern(binary, ["send", "--topic", "orders", "--count", "2", "--endpoints", joined, "--credentials", dir + "/cli.credentials"])
        #expect(sent.status == 0, "send as cli: \(sent.output)")
        let denied = try runTern(binary, ["send", "--topic", "audit", "--count", "1", "--endpoints", joined, "--credentials", dir + "/cli.credentials"])
        #expect(denied.status != 0 && denied.output.contains("may not send to topic audit"), "send to audit as cli: \(denied.output)")
        let listed = try runTern(binary, ["admin", "acl", "list", "--endpoints", joined, "--credentials", rootFile])
        #expect(listed.status == 0 && listed.output.contains("orders=pub") && !listed.output.contains("secret"), "acl list: \(listed.output)")
        await root.shutdown()
    }
}

func writeFile(_ path: String, _ text: String, mode: mode_t) throws {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    chmod(path, mode)
}
