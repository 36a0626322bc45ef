// Bug 1 of the house-in-order issue, on real processes: a leader paused (SIGSTOP) past its lease
// while the other two elect a new leader and commit an offset must not answer a read of that
// offset from its old state when it resumes. Its peers' messages are held back by relays (as a
// slow network would), so only its own clock can tell it that its lease is gone: the server must
// deliver every tick that fell due during the pause before it handles the request that queued
// meanwhile. Before the fix the server ticked once per timer firing, resumed with its lease
// intact, and answered the old offset.
import Foundation
import NIOPosix
import TernChaos
import TernClient
import TernLauncher
import TernProtocol
import Testing

/// The `tern-chaos` executable built next to the tests (nodes with relays and test hooks).
func ternChaosBinary() -> String? {
    guard let tern = ternBinary() else { return nil }
    let path = URL(fileURLWithPath: tern).deletingLastPathComponent().appendingPathComponent("tern-chaos").path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

/// One request on its own blocking connection, written now; its reply read later (the node may
/// be stopped in between: the kernel queues both the connection and the bytes).
final class RawCall {
    let fd: Int32
    let codec = FrameCodec()

    init(endpoint: String, opcode: Opcode, body: [UInt8]) throws {
        let parts = endpoint.split(separator: ":")
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(String(parts[0]))
        addr.sin_port = UInt16(Int(parts[1])!).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw ClientError.timedOut("connect to \(endpoint): errno \(errno)") }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let bytes = codec.encode(Frame(opcode: opcode.rawValue, requestID: 1, body: body))
        let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == bytes.count else { throw ClientError.timedOut("send to \(endpoint): errno \(errno)") }
    }

    /// The reply frame (or nil when the connection closed or timed out first).
    func reply() -> Frame? {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if case .success(.frame(let frame, _)) = codec.decode(buffer) { return frame }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            buffer += chunk[0..<n]
        }
    }

    deinit { close(fd) }
}

func describe(_ frame: Frame?) -> String {
    guard let frame else { return "nothing (connection closed or timed out)" }
    if frame.flags.contains(.error) { return ErrorBody.decode(frame.body).map { "\($0)" } ?? "an undecodable error" }
    return (try? QueryOffsetResponse.decode(frame.body)).map { "offset \($0.offset.map(String.init) ?? "none")" } ?? "\(frame.body.count) bytes"
}

@Suite("Integration: ticks after a pause", .serialized)
struct TickCatchUpTests {
    @Test("a leader SIGSTOPped past its lease, cut off by relays, answers no stale offset when it resumes", .timeLimit(.minutes(3)))
    func pausedLeaderServesNoStaleRead() async throws {
        guard let binary = ternChaosBinary() else {
            Issue.record("tern-chaos was not found next to the tests; swift build --build-tests builds it")
            return
        }
        let folder = NSTemporaryDirectory() + "tern-tick-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let cluster = try ChaosCluster(folder: folder, io: .auto, group: group, executable: binary)
        try cluster.startAll()
        let client = try TernCluster(endpoints: cluster.endpoints)
        do {
            try await run(cluster, client)
        } catch {
            Issue.record("\(error)")
        }
        // The relays live on `group`: stop the nodes and relays before the group.
        cluster.stopAll()
        await client.shutdown()
        try? await group.shutdownGracefully()
        if ProcessInfo.processInfo.environment["TERN_KEEP"] == nil { try? FileManager.default.removeItem(atPath: folder) }
    }

    func run(_ cluster: ChaosCluster, _ client: TernCluster) async throws {
        let oldID = try await waitForLeader(client)
        let old = cluster.endpoints[cluster.ids.firstIndex(of: oldID)!]
        try await client.createTopic("tick", queues: 1)
        let queue = QueueRef(topic: "tick", queueID: 0)
        let commit = { (endpoint: String, offset: UInt64) throws -> Frame? in
            try RawCall(endpoint: endpoint, opcode: .commitOffset, body: CommitOffsetRequest(group: "g", offsets: [queue: offset]).encoded()).reply()
        }
        let first = try commit(old, 5)
        #expect(first.map { !$0.flags.contains(.error) } == true, "the first commit failed: \(String(describing: first))")
        // The old leader serves the offset under its lease (a leader elected a moment ago has
        // none until its first heartbeats are echoed: ask again until it does).
        var before: Frame?
        for _ in 0..<50 {
            before = try RawCall(endpoint: old, opcode: .queryOffset, body: QueryOffsetRequest(group: "g", queue: queue).encoded()).reply()
            if let f = before, !f.flags.contains(.error) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(before.flatMap { try? QueryOffsetResponse.decode($0.body).offset } == 5, "before the pause: \(describe(before))")

        // Pause it, then hold back everything between it and its peers.
        cluster.pause(oldID)
        let others = cluster.ids.filter { $0 != oldID }
        cluster.cut(others.flatMap { ["\($0)>\(oldID)", "\(oldID)>\($0)"] })

        // The other two elect a leader and commit a newer offset.
        let survivors = try TernCluster(endpoints: others.map { cluster.endpoints[cluster.ids.firstIndex(of: $0)!] })
        var newLeader = ""
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while clock.now < deadline {
            if let r = try? await survivors.queryRoute(), !r.leader.isEmpty, r.leader != oldID {
                newLeader = cluster.endpoints[cluster.ids.firstIndex(of: r.leader)!]
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(!newLeader.isEmpty, "no new leader within 30 s")
        guard !newLeader.isEmpty else {
            cluster.resume(oldID)
            return
        }
        let second = try commit(newLeader, 9)
        #expect(second.map { !$0.flags.contains(.error) } == true, "the second commit failed: \(String(describing: second))")

        // A read queued at the paused old leader; then it resumes, still cut off.
        let stale = try RawCall(endpoint: old, opcode: .queryOffset, body: QueryOffsetRequest(group: "g", queue: queue).encoded())
        try await Task.sleep(for: .milliseconds(200))
        cluster.resume(oldID)
        let answer = stale.reply()
        print("tick catch-up test: the resumed old leader answered \(describe(answer))")
        #expect(answer != nil, "the resumed old leader did not answer")
        if let answer, !answer.flags.contains(.error) {
            let offset = try QueryOffsetResponse.decode(answer.body).offset
            #expect(offset != 5, "the resumed old leader served the offset it had before the pause (a stale read under an expired lease)")
        }
        await survivors.shutdown()
    }
}
