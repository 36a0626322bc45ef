// Black-box abuse of three real processes (docs/security.md): random and mutated frames, slow
// senders holding a header open, floods of connections and of outstanding requests, while a
// producer keeps sending. The nodes stay up, answer errors, close bad connections, and every
// send is acknowledged throughout.
import Foundation
import TernClient
import TernLauncher
import TernProtocol
import Testing

/// A raw TCP connection to a node, for saying things a client never would.
final class RawConnection {
    let fd: Int32

    init?(_ endpoint: String) {
        let parts = endpoint.split(separator: ":")
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(String(parts[0]))
        addr.sin_port = UInt16(parts[1])!.bigEndian
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else {
            close(fd)
            return nil
        }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }

    /// Reads for up to `seconds`: the bytes, and whether the node closed the connection.
    func read(seconds: Double, until frames: Int = Int.max) -> (bytes: [UInt8], closed: Bool) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                out += buffer[0..<n]
                if RawConnection.frames(in: out).count >= frames { return (out, false) }
                continue
            }
            return (out, n == 0 || errno == ECONNRESET)
        }
    }

    static func frames(in bytes: [UInt8]) -> [Frame] {
        var rest = bytes
        var out: [Frame] = []
        while case .success(.frame(let f, let used)) = FrameCodec().decode(rest) {
            out.append(f)
            rest.removeFirst(used)
        }
        return out
    }
}

@Suite("Integration: abuse from the network", .serialized)
struct AbuseTests {
    @Test(
        "random and mutated frames, slow senders, connection and request floods: nodes stay up, answer errors, close bad connections, and keep acknowledging",
        .timeLimit(.minutes(4)))
    func abuse() async throws {
        guard let binary = ternBinary() else {
            Issue.record("the tern executable was not found next to the tests")
            return
        }
        let cluster = try TestCluster(binary: binary, extraArgs: ["--max-connections", "40", "--max-requests-per-connection", "32"])
        for id in cluster.ids { try cluster.start(id) }
        defer {
            cluster.stop()
            cluster.removeData()
        }
        let client = try TernCluster(endpoints: cluster.endpoints)
        _ = try await leader(of: client)
        try await client.createTopic("abuse", queues: 2)
        try await client.createTopic("held", queues: 1)

        // A producer sends throughout; every send must be acknowledged.
        let producing = Task {
            let producer = Producer(cluster: client, group: "abuse-producer", sendTimeoutMillis: 20_000)
            var acked = 0
            var failures: [String] = []
            let clock = ContinuousClock()
            let until = clock.now + .seconds(25)
            while clock.now < until {
                do {
                    _ = try await producer.send(TernClient.Message(topic: "abuse", body: Array("m\(acked)".utf8)))
                    acked += 1
                } catch {
                    failures.append("\(error)")
                }
            }
            return (acked, failures)
        }

        let codec = FrameCodec()
        var rng = SystemRandomNumberGenerator()
        // Slow senders: half a header, then nothing; closed within the first-frame deadline.
        // To the followers: the leader gets the connection flood below, whose evictions would
        // close them first.
        let firstLeader = try await leader(of: client)
        let followers = zip(cluster.ids, cluster.endpoints).filter { $0.0 != firstLeader }.map(\.1)
        let slow = (0..<20).compactMap { k -> RawConnection? in
            let c = RawConnection(followers[k % followers.count])
            c?.send(Array(codec.encode(Frame(opcode: 1, requestID: 1, body: [])).prefix(10)))
            return c
        }
        // Random bytes: answered BAD_FRAME and closed.
        var badFrames = 0
        for k in 0..<60 {
            guard let c = RawConnection(cluster.endpoints[k % 3]) else { continue }
            c.send((0..<Int.random(in: 24...400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            let (bytes, closed) = c.read(seconds: 5)
            let codes = RawConnection.frames(in: bytes).compactMap { ErrorBody.decode($0.body)?.code }
            if closed && codes.contains(.badFrame) { badFrames += 1 }
        }
        #expect(badFrames >= 55, "random bytes answered BAD_FRAME and closed: \(badFrames) of 60")

        // Mutated requests (valid frames, bodies damaged): every one answered, none fatal.
        let seeds: [(Opcode, [UInt8])] = [
            (
                .send,
                SendRequest(topic: "abuse", queueID: 0, messages: [WireMessage(tag: "t", keys: ["k"], properties: ["a": "1"], body: [1, 2, 3])]).encoded()
            ),
            (.pull, PullRequest(topic: "abuse", queueID: 0, offset: 0, sqlFilter: "a > 0").encoded()),
            (.heartbeat, HeartbeatRequest(group: "g", clientID: "c", mode: .clustering, topics: ["abuse"]).encoded()),
            (.commitOffset, CommitOffsetRequest(group: "g", offsets: [QueueRef(topic: "abuse", queueID: 0): 1]).encoded()),
            (.receive, ReceiveRequest(group: "g", topic: "abuse", maxMessages: 2).encoded()),
            (.queryMessage, QueryMessageRequest(topic: "abuse", key: "k").encoded()),
            (.createTopic, TopicRequest(name: "x", queues: 2).encoded()),
            (.aclChange, AclCommand.delete(accessKey: "nobody").encoded()),
        ]
        var answered = 0
        var sent = 0
        var unanswered: [Opcode] = []
        for round in 0..<30 {
            guard let c = RawConnection(cluster.endpoints[round % 3]) else { continue }
            var batch: [UInt8] = []
            var ops: [UInt64: Opcode] = [:]
            for k in 0..<20 {
                let (op, body) = seeds[(round + k) % seeds.count]
                ops[UInt64(k + 1)] = op
                var mutated = body
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !mutated.isEmpty {
                    mutated[Int.random(in: 0..<mutated.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
                if Bool.random(using: &rng) { mutated = Array(mutated.prefix(Int.random(in: 0...mutated.count, using: &rng))) }
                batch += codec.encode(Frame(opcode: op.rawValue, requestID: UInt64(k + 1), body: mutated))
                sent += 1
            }
            c.send(batch)
            let answers = RawConnection.frames(in: c.read(seconds: 5, until: 20).bytes).filter { $0.flags.contains(.response) }
            answered += answers.count
            for id in Set(ops.keys).subtracting(answers.map(\.requestID)) { unanswered.append(ops[id]!) }
        }
        // A pull or receive whose mutated wait is long is held, as it should be; nothing else may go unanswered.
        #expect(unanswered.allSatisfy { $0 == .pull || $0 == .receive }, "unanswered: \(unanswered)")
        #expect(answered + unanswered.count == sent && answered >= sent - 30, "mutated requests answered: \(answered) of \(sent)")

        // Connection flood: 300 idle connections to the leader (more than 256 may wait for a
        // first frame: the oldest are closed), then more clients than --max-connections.
        let leaderID = try await leader(of: client)
        let leaderEndpoint = cluster.endpoints[cluster.ids.firstIndex(of: leaderID)!]
        let idle = (0..<300).compactMap { _ in RawConnection(leaderEndpoint) }
        var busy = 0
        var clients: [RawConnection] = []
        for k in 0..<60 {
            guard let c = RawConnection(leaderEndpoint) else { continue }
            c.send(codec.encode(Frame(opcode: Opcode.queryRoute.rawValue, requestID: UInt64(k), body: NameRequest(name: "").encoded())))
            let f = RawConnection.frames(in: c.read(seconds: 5, until: 1).bytes).first
            if let f, f.flags.contains(.error), ErrorBody.decode(f.body)?.code == .busy, ErrorBody.decode(f.body)!.message.contains("--max-connections") {
                busy += 1
            }
            clients.append(c)
        }
        #expect(busy >= 20, "clients beyond --max-connections 40 refused BUSY: \(busy) of 60 (the test's own client holds some)")
        let evicted = idle.prefix(40).filter { $0.read(seconds: 0.2).closed }.count
        #expect(evicted >= 30, "the oldest idle connections were closed: \(evicted) of the first 40")
        clients.removeAll()
        // The leader has seen those clients go once a new client is served again.
        var served = false
        for k in 0..<100 where !served {
            guard let c = RawConnection(leaderEndpoint) else { continue }
            c.send(codec.encode(Frame(opcode: Opcode.queryRoute.rawValue, requestID: UInt64(k), body: NameRequest(name: "").encoded())))
            served = RawConnection.frames(in: c.read(seconds: 2, until: 1).bytes).first.map { !$0.flags.contains(.error) } ?? false
            if !served { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(served, "a client is served again once the flood's clients are gone")

        // Request flood: long polls pipelined on one connection, more than it may hold.
        if let c = RawConnection(leaderEndpoint) {
            var batch: [UInt8] = []
            for k in 0..<100 {
                batch += codec.encode(
                    Frame(
                        opcode: Opcode.pull.rawValue, requestID: UInt64(k + 1),
                        body: PullRequest(topic: "held", queueID: 0, offset: 0, maxWaitMillis: 3000).encoded()))
            }
            c.send(batch)
            let frames = RawConnection.frames(in: c.read(seconds: 2, until: 68).bytes)
            let refused = frames.filter { ErrorBody.decode($0.body)?.message.contains("waiting for their answers") == true }.count
            #expect(refused == 68, "pulls beyond 32 outstanding answered BUSY at once: \(refused) of 68")
        }

        // The slow senders were closed by their deadline (10 s after connecting).
        try await Task.sleep(for: .seconds(11))
        let slowClosed = slow.filter { $0.read(seconds: 0.5).closed }.count
        #expect(slowClosed == slow.count, "slow senders closed: \(slowClosed) of \(slow.count)")

        let (acked, failures) = await producing.value
        #expect(failures.isEmpty, "sends failed during the abuse: \(failures.prefix(3))")
        #expect(acked > 100, "acknowledged \(acked) sends")
        #expect(cluster.nodes.running.count == 3, "every node still runs")
        #expect(try await client.status().count == 3)
        await client.shutdown()
    }
}
