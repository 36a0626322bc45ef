import Glibc
import TernBroker
import TernProtocol
import TernRaft
import TernStorage
import Testing

@testable import TernNode

/// A single-node driver that snapshots every 5 entries, with consume-queue files of 4 rows.
private func snapshotDriver(_ name: String, directory: String? = nil) throws -> Driver {
    try Driver(name, directory: directory) { config in
        config.snapshotEveryEntries = 5
        config.queueFileRows = 4
    }
}

/// The broker's state without its applied index (a leader's no-op changes only that).
private func stateBytes(_ node: Node) -> [UInt8] {
    let s = node.broker.snapshot()
    return [s[0]] + s[9...]
}

private func files(_ directory: String) -> [String] {
    guard let d = opendir(directory) else { return [] }
    defer { closedir(d) }
    var out: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if !name.hasPrefix(".") { out.append(name) }
    }
    return out.sorted()
}

/// Fills a node: a topic of 2 queues, 23 sends (one producer's with sequences), an offset
/// commit, a delayed message not yet due.
private func fill(_ d: Driver) throws -> [String] {
    try d.elect()
    _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 2))
    var bodies: [String] = []
    for k in 0..<23 {
        bodies.append("m\(k)")
        _ = try d.call(.send, sendRequest(["m\(k)"], queue: UInt32(k % 2), producer: 9, sequence: UInt64(k + 1)))
    }
    _ = try d.call(.commitOffset, CommitOffsetRequest(group: "g", offsets: [QueueRef(topic: "t", queueID: 0): 3]))
    var later = WireMessage(tag: "x", body: Array("later".utf8))
    later.properties[Delay.delayMillisProperty] = "3600000"
    _ = try d.call(.send, SendRequest(topic: "t", queueID: 1, producerGroup: "pg", messages: [later]))
    return bodies
}

private func pullAll(_ d: Driver, queue: UInt32) throws -> [String] {
    let r = try PullResponse.decode(try d.call(.pull, PullRequest(topic: "t", queueID: queue, offset: 0, maxMessages: 100)))
    return r.messages.map { String(decoding: $0.message.body, as: UTF8.self) }
}

@Suite("Node: snapshots and a restart that does not replay", .serialized)
struct SnapshotTests {
    @Test("a restart loads the newest snapshot and applies only the log after it; state, reads and dedupe are as before")
    func restartFromSnapshot() throws {
        let d = try snapshotDriver("snap")
        _ = try fill(d)
        let snapshotIndex = d.node.lastSnapshotIndex
        #expect(snapshotIndex > 0 && snapshotIndex % 5 == 0)
        let before = stateBytes(d.node)
        let pulled = (try pullAll(d, queue: 0), try pullAll(d, queue: 1))
        let last = d.node.replica.log.lastIndex
        try d.close()
        #expect(files(d.directory + "/snapshots").count == 2)

        let again = try snapshotDriver("snap", directory: d.directory)
        #expect(again.node.replica.raft.appliedIndex == snapshotIndex)
        #expect(again.node.startReport.contains { $0.hasPrefix("loaded snapshot \(snapshotIndex)") })
        try again.elect()
        #expect(again.node.replica.raft.appliedIndex == last + 1)  // the new term's no-op
        #expect(stateBytes(again.node) == before)
        #expect(try pullAll(again, queue: 0) == pulled.0)
        #expect(try pullAll(again, queue: 1) == pulled.1)
        let retry = try SendResponse.decode(try again.call(.send, sendRequest(["m22"], queue: 0, producer: 9, sequence: 23)))
        #expect(retry.duplicate)
        try again.close()
    }

    @Test("a damaged newest snapshot is set aside for the older one; with none usable the broker is rebuilt from the whole log")
    func damagedSnapshots() throws {
        let d = try snapshotDriver("snapdamage")
        _ = try fill(d)
        let before = stateBytes(d.node)
        try d.close()
        let dir = d.directory + "/snapshots"
        let names = files(dir)
        #expect(names.count == 2)
        func flip(_ path: String, at offset: Int) {
            let fd = open(path, O_RDWR)
            var b: UInt8 = 0
            _ = pread(fd, &b, 1, off_t(offset))
            b ^= 0x10
            _ = pwrite(fd, &b, 1, off_t(offset))
            close(fd)
        }
        flip(dir + "/" + names[1], at: 40)
        let older = UInt64(names[0].dropFirst(9))!
        let again = try snapshotDriver("snapdamage", directory: d.directory)
        #expect(again.node.replica.raft.appliedIndex == older)
        #expect(again.node.startReport.first?.contains("is damaged") == true)
        #expect(again.node.startReport.last?.hasPrefix("loaded snapshot \(older)") == true)
        try again.elect()
        #expect(stateBytes(again.node) == before)
        try again.close()
        #expect(files(dir).contains { $0.hasSuffix(".unusable") })

        // Remove every consume-queue file: the remaining snapshots cannot be used.
        for name in files(d.directory + "/cq") { unlink(d.directory + "/cq/" + name) }
        let rebuilt = try snapshotDriver("snapdamage", directory: d.directory)
        #expect(rebuilt.node.replica.raft.appliedIndex == 0)
        #expect(rebuilt.node.startReport.contains { $0.contains("cannot be used: consume queue file") })
        #expect(rebuilt.node.startReport.last?.hasPrefix("no snapshot: the broker is rebuilt") == true)
        try rebuilt.elect()
        #expect(stateBytes(rebuilt.node) == before)
        try rebuilt.close()
    }

    @Test("queue files of a deleted topic stay while a kept snapshot names them, then go")
    func deletedTopicFilesCollected() throws {
        let d = try snapshotDriver("snapcollect")
        _ = try fill(d)
        let created = files(d.directory + "/cq")
        #expect(!created.isEmpty)
        _ = try d.call(.deleteTopic, TopicRequest(name: "t", queues: 0))
        // Two more snapshots (entries of offset commits): the snapshots kept no longer name "t".
        for k in 0..<12 {
            _ = try d.call(.createTopic, TopicRequest(name: "u\(k)", queues: 1))
        }
        #expect(files(d.directory + "/cq").allSatisfy { !created.contains($0) })
        try d.close()
    }
}

@Suite("Node: retention", .serialized)
struct RetentionTests {
    /// One node, 1 MiB segments, at most 6 MiB of log files and 64 KiB of queue files (up to 4 retired segments kept for
    /// reuse count too), a snapshot every 10 entries.
    private func retentionDriver(_ name: String, directory: String? = nil) throws -> Driver {
        try Driver(name, directory: directory) { config in
            config.snapshotEveryEntries = 10
            config.queueFileRows = 16
            config.retentionBytes = (6 << 20) + (64 << 10)  // six segments and the queue files beside them
            config.retentionCheckMillis = 10
        }
    }

    @Test("retention trims the log's front by size: queue minimums rise, segments go, a released delayed message survives as its copy, a restart agrees")
    func trimsBySize() throws {
        let d = try retentionDriver("retention")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        var delayed = WireMessage(tag: "x", body: Array("later".utf8))
        delayed.properties[Delay.delayMillisProperty] = "2000"
        let delayedSend = try SendResponse.decode(try d.call(.send, SendRequest(topic: "t", queueID: 0, producerGroup: "pg", messages: [delayed])))
        let big = String(repeating: "b", count: 20_000)
        for k in 0..<300 {
            let keyed = WireMessage(tag: "x", keys: ["k"], body: Array(("\(k)" + big).utf8))
            _ = try d.call(.send, SendRequest(topic: "t", queueID: 0, producerGroup: "pg", messages: [keyed]))
            if k % 10 == 0 { try d.tick() }  // retention is checked on ticks
        }
        try d.tick(200)  // 2 s: the delayed message is released, with a copy, at the queue's end
        for k in 300..<340 {
            _ = try d.call(.send, sendRequest(["\(k)" + big]))
            if k % 10 == 0 { try d.tick() }
        }
        let node = d.node
        #expect(node.broker.trimIndex > delayedSend.entryIndex)
        #expect(node.replica.log.firstIndex > delayedSend.entryIndex)  // the delayed message's first entry is gone
        #expect(node.replica.log.segmentRanges.count <= 5)
        guard let bounds = node.broker.bounds(QueueRef(topic: "t", queueID: 0)) else { return }
        #expect(bounds.min > 0)
        // A pull from 0 answers from the minimum, and everything from there is readable.
        let r = try PullResponse.decode(try d.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0, maxMessages: 1000, maxBytes: UInt32.max)))
        #expect(r.minOffset == bounds.min)
        #expect(r.messages.first?.queueOffset == bounds.min)
        #expect(r.messages.map(\.queueOffset) == Array(bounds.min..<bounds.max))
        let later = r.messages.first { $0.message.body == Array("later".utf8) }
        #expect(later?.id == MessageID(entryIndex: delayedSend.entryIndex, slot: 0))  // its id, read from its copy
        #expect(try node.broker.message(MessageID(entryIndex: delayedSend.entryIndex, slot: 0))?.message.body == Array("later".utf8))
        // Four queues: the topic's, a key index bucket (trimmed with it; a lookup finds what is
        // still stored), the timer log (its one row went when its minute was loaded) and a
        // late-place bucket (its row names the recent release, not trimmed).
        let files = node.broker.queueFiles.allBounds
        #expect(files.count == 4 && files.filter { $0.minOffset > 0 }.count == 3)
        let byKey = try MessageList.decode(try d.call(.queryMessage, QueryMessageRequest(topic: "t", key: "k", max: 1000)))
        #expect(!byKey.messages.isEmpty && byKey.messages.map(\.id) == r.messages.filter { $0.message.keys == ["k"] }.map(\.id))
        let before = r.messages.map(\.id)
        try d.close()

        let again = try retentionDriver("retention", directory: d.directory)
        try again.elect()
        let r2 = try PullResponse.decode(try again.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0, maxMessages: 1000, maxBytes: UInt32.max)))
        #expect(r2.messages.map(\.id) == before)
        try again.close()
    }

    @Test("a trim never passes a delayed message that is not due yet")
    func pinnedByDelayed() throws {
        let d = try retentionDriver("retentionpin")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        var delayed = WireMessage(tag: "x", body: Array("much later".utf8))
        delayed.properties[Delay.delayMillisProperty] = "3600000"
        let sent = try SendResponse.decode(try d.call(.send, SendRequest(topic: "t", queueID: 0, producerGroup: "pg", messages: [delayed])))
        let big = String(repeating: "b", count: 20_000)
        for k in 0..<450 {
            _ = try d.call(.send, sendRequest(["\(k)" + big]))
            if k % 10 == 0 { try d.tick() }
        }
        #expect(d.node.broker.trimIndex > 0)
        #expect(d.node.broker.trimIndex <= sent.entryIndex)
        #expect(d.node.replica.log.firstIndex <= sent.entryIndex)
        try d.close()
    }
}

@Suite("Node: disk watermarks", .serialized)
struct DiskLimitTests {
    @Test("above the hard limit the leader refuses sends with STORAGE_FULL; pulls and offset commits go on; below it sends are taken again")
    func hardLimitRefusesSends() throws {
        let d = try Driver("disklimit")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        _ = try d.call(.send, sendRequest(["before"]))
        d.node.diskUsedFraction = 0.95
        let refused = d.reply(try d.request(.send, sendRequest(["refused"]).encoded()))
        guard case .failure(let e)? = refused else {
            Issue.record("a send above the hard limit was not refused: \(String(describing: refused))")
            return
        }
        #expect(e.code == ErrorCode.storageFull)
        #expect(e.code.action == .retryLater)
        let pulled = try PullResponse.decode(try d.call(.pull, PullRequest(topic: "t", queueID: 0, offset: 0)))
        #expect(pulled.messages.map { String(decoding: $0.message.body, as: UTF8.self) } == ["before"])
        _ = try d.call(.commitOffset, CommitOffsetRequest(group: "g", offsets: [QueueRef(topic: "t", queueID: 0): 1]))
        d.node.diskUsedFraction = 0.5
        _ = try d.call(.send, sendRequest(["after"]))
        try d.close()
    }
}
