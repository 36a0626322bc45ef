// Three real `tern serve` processes on free loopback ports: produce while the leader is
// SIGKILLed twice (and restarted), then consume everything and check what was acknowledged.
import Foundation
import TernClient
import TernLauncher
import TernProtocol
import Testing

/// The `tern` executable built next to the test bundle (or $TERN_BINARY).
func ternBinary() -> String? {
    if let p = ProcessInfo.processInfo.environment["TERN_BINARY"] { return p }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("tern").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    let fallback = FileManager.default.currentDirectoryPath + "/.build/debug/tern"
    return FileManager.default.isExecutableFile(atPath: fallback) ? fallback : nil
}

/// Three `tern serve` nodes on free loopback ports, with data and logs in a fresh folder (a
/// `LocalCluster`, the launcher `tern cluster up` and the chaos harness use too).
final class TestCluster: @unchecked Sendable {
    let nodes: LocalCluster
    let root: String
    var ids: [String] { nodes.ids }
    var endpoints: [String] { nodes.endpoints }

    init(binary: String, extraArgs: [String] = [], nodes count: Int = 3, nodeArgs: @escaping @Sendable (String) -> [String] = { _ in [] }) throws {
        var ports: Set<Int> = []
        while ports.count < count { ports.insert(freeLoopbackPort()) }
        root = NSTemporaryDirectory() + "tern-it-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        nodes = LocalCluster(
            nodes: count, basePort: 0, dataRoot: root, extraArgs: ["--segment-mb", "16"] + extraArgs, ports: ports.sorted(),
            logDirectory: root, executable: binary, nodeArgs: nodeArgs)
    }

    func start(_ id: String) throws { try nodes.start(id) }
    func kill(_ id: String) { nodes.kill(id) }
    func stop() { nodes.stopAll() }

    func logs() -> String {
        ids.map { id in
            "--- \(id)\n"
                + ((try? String(contentsOfFile: "\(root)/\(id).log", encoding: .utf8)) ?? "").split(separator: "\n").suffix(30).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    func removeData() { try? FileManager.default.removeItem(atPath: root) }
}

func leader(of client: TernCluster, timeoutSeconds: Double = 20) async throws -> String {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(timeoutSeconds)
    while clock.now < deadline {
        if let r = try? await client.queryRoute(), !r.leader.isEmpty { return r.leader }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw ClientError.timedOut("no leader within \(timeoutSeconds) s")
}

/// Starts three nodes, waits for a leader, runs `body` with a client bootstrapped from
/// `endpoints` (all of them by default), then stops the nodes and removes their data.
func withThreeNodes(endpoints: ([String]) -> [String] = { $0 }, _ body: (TestCluster, TernCluster) async throws -> Void) async throws {
    guard let binary = ternBinary() else {
        Issue.record("the tern executable was not found next to the tests; build it first (swift build --build-tests builds it)")
        return
    }
    let cluster = try TestCluster(binary: binary)
    for id in cluster.ids { try cluster.start(id) }
    defer {
        cluster.stop()
        cluster.removeData()
    }
    let client = try TernCluster(endpoints: endpoints(cluster.endpoints))
    _ = try await leader(of: client)
    try await body(cluster, client)
    await client.shutdown()
}

@Suite("Integration: three real processes", .serialized)
struct FailoverTests {
    @Test(
        "10,000 idempotent sends while the leader is SIGKILLed twice: all delivered once, in queue order; a restarted group resumes from its committed offset",
        .timeLimit(.minutes(5)))
    func produceThroughFailovers() async throws {
        // Bootstrap from two endpoints in reverse order: any subset, any order.
        try await withThreeNodes(endpoints: { [$0[2], $0[0]] }) { cluster, client in
            try await client.createTopic("it", queues: 4)

            let total = 10_000
            let producer = Producer(cluster: client, group: "it-producer", sendTimeoutMillis: 30_000)
            let next = Counter()
            let acked = Acked()
            let killer = Task {
                var kills: [String] = []
                for threshold in [2_500, 6_000] {
                    while acked.count < threshold { try await Task.sleep(for: .milliseconds(5)) }
                    let l = try await leader(of: client)
                    cluster.kill(l)
                    kills.append(l)
                    try await Task.sleep(for: .milliseconds(800))
                    try cluster.start(l)
                }
                return kills
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<32 {
                    group.addTask {
                        while let i = next.take(below: total) {
                            let r = try await producer.send(Message(topic: "it", keys: ["k\(i)"], body: Array("m-\(i)".utf8)))
                            acked.add(i, r)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let kills = try await killer.value
            #expect(kills.count == 2)
            #expect(acked.count == total, "every send was acknowledged within its timeout")

            // Consume half with one group member, commit, stop it; SIGKILL the leader; a new member
            // of the same group must resume exactly at the committed offsets.
            var seen: [QueueRef: [ReceivedMessage]] = [:]
            let first = PullConsumer(cluster: client, group: "it-group", topic: "it")
            try await first.start()
            var consumed = 0
            while consumed < total / 2 {
                let batch = try await first.poll(maxMessages: 256, waitMillis: 500)
                for m in batch { seen[QueueRef(topic: m.topic, queueID: m.queueID), default: []].append(m) }
                consumed += batch.count
            }
            try await first.commit()
            await first.shutdown()
            let committed = seen.mapValues { ($0.last?.queueOffset ?? 0) + 1 }
            let l = try await leader(of: client)
            cluster.kill(l)
            try cluster.start(l)
            let second = PullConsumer(cluster: client, group: "it-group", topic: "it", clientID: "second")
            try await second.start()
            var firstOffsets: [QueueRef: UInt64] = [:]
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(60)
            while seen.values.reduce(0, { $0 + $1.count }) < total && clock.now < deadline {
                for m in try await second.poll(maxMessages: 256, waitMillis: 500) {
                    let q = QueueRef(topic: m.topic, queueID: m.queueID)
                    if firstOffsets[q] == nil { firstOffsets[q] = m.queueOffset }
                    seen[q, default: []].append(m)
                }
            }
            await second.shutdown()
            for (q, offset) in firstOffsets.sorted(by: { $0.key < $1.key }) {
                #expect(offset == committed[q] ?? 0, "\(q): the restarted group resumed at \(offset), committed \(committed[q] ?? 0)")
            }

            // Every acknowledged message delivered exactly once, at the offset its receipt named;
            // per queue, offsets contiguous and message ids (log positions) increasing.
            var bodies: [String: Int] = [:]
            for (q, list) in seen.sorted(by: { $0.key < $1.key }) {
                for (k, m) in list.enumerated() {
                    #expect(m.queueOffset == UInt64(k), "\(q): message \(k) has offset \(m.queueOffset)")
                    if k > 0 { #expect(list[k - 1].id < m.id, "\(q): ids out of log order at offset \(m.queueOffset)") }
                    bodies[String(decoding: m.message.body, as: UTF8.self), default: 0] += 1
                }
            }
            let duplicates = bodies.filter { $0.value > 1 }
            #expect(duplicates.isEmpty, "duplicated: \(duplicates.keys.sorted().prefix(10))")
            var lost: [Int] = []
            for (i, receipt) in acked.receipts.sorted(by: { $0.key < $1.key }) {
                guard let list = seen[receipt.queue], receipt.queueOffset < UInt64(list.count) else {
                    lost.append(i)
                    continue
                }
                let m = list[Int(receipt.queueOffset)]
                #expect(String(decoding: m.message.body, as: UTF8.self) == "m-\(i)" && m.id == receipt.messageID, "receipt \(receipt) does not hold m-\(i)")
            }
            #expect(lost.isEmpty, "acknowledged but not delivered: \(lost.prefix(20))")
            let retried = acked.receipts.values.filter(\.duplicate).count
            print("integration: killed \(kills) and one more; \(retried) sends were retries answered from the dedupe window")
            if !lost.isEmpty || !duplicates.isEmpty { print(cluster.logs()) }
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}

final class Acked: @unchecked Sendable {
    private let lock = NSLock()
    private var map: [Int: SendReceipt] = [:]
    func add(_ i: Int, _ r: SendReceipt) {
        lock.lock()
        map[i] = r
        lock.unlock()
    }
    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return map.count
    }
    var receipts: [Int: SendReceipt] {
        lock.lock()
        defer { lock.unlock() }
        return map
    }
}

/// Connects a blocking socket to `endpoint`, writes `bytes`, and reads until the peer closes
/// (or 5 s pass).
func exchange(_ endpoint: String, _ bytes: [UInt8], stopAfterFrames: Int = Int.max) -> (reply: [UInt8], closed: Bool) {
    guard let c = RawConnection(endpoint) else { return ([], false) }
    c.send(bytes)
    let (reply, closed) = c.read(seconds: 5, until: stopAfterFrames)
    return (reply, closed)
}

@Suite("Integration: a server facing bad input", .serialized)
struct BadInputTests {
    @Test(
        "garbage, a bad checksum and an oversized frame each get an error response and a closed connection; the server lives on",
        .timeLimit(.minutes(2)))
    func badFrames() async throws {
        try await withThreeNodes(endpoints: { [$0[0]] }) { cluster, client in
            let codec = FrameCodec()
            var badChecksum = codec.encode(Frame(opcode: Opcode.listTopics.rawValue, requestID: 1, body: []))
            badChecksum[8] ^= 0xFF
            var oversized = codec.header(Frame(opcode: Opcode.send.rawValue, requestID: 2, body: []))
            oversized.withUnsafeMutableBytes { h in
                h.storeBytes(of: UInt32(1 << 30).littleEndian, toByteOffset: 16, as: UInt32.self)
                h.storeBytes(of: FrameCodec.headerChecksumForTests(UnsafeRawBufferPointer(rebasing: h[0..<20])).littleEndian, toByteOffset: 20, as: UInt32.self)
            }
            for (name, bytes) in [("garbage", Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)), ("bad checksum", badChecksum), ("oversized", oversized)] {
                let (reply, closed) = exchange(cluster.endpoints[0], bytes)
                #expect(closed, "\(name): the connection is closed")
                guard case .success(.frame(let frame, _)) = codec.decode(reply) else {
                    Issue.record("\(name): no error frame in \(reply.count) reply bytes")
                    continue
                }
                #expect(frame.flags.contains(.error) && ErrorBody.decode(frame.body)?.code == ErrorCode.badFrame, "\(name)")
            }
            // A well-formed request with a malformed body: an error answer, and the connection stays.
            let badBody = codec.encode(Frame(opcode: Opcode.pull.rawValue, requestID: 3, body: [9, 9, 9]))
            let ok = codec.encode(Frame(opcode: Opcode.listTopics.rawValue, requestID: 4, body: []))
            let (reply, _) = exchange(cluster.endpoints[0], badBody + ok, stopAfterFrames: 2)
            var rest = reply
            var answers: [Frame] = []
            while case .success(.frame(let f, let used)) = codec.decode(rest) {
                answers.append(f)
                rest.removeFirst(used)
            }
            #expect(answers.map(\.requestID) == [3, 4], "the bad body is answered with an error, and the next request is served")
            #expect(answers.first.flatMap { ErrorBody.decode($0.body) }?.code == ErrorCode.badBody)
            // Still serving.
            let topics = try await client.listTopics()
            #expect(topics.isEmpty)
        }
    }
}
