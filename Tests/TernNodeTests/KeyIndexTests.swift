import TernBroker
import TernProtocol
import TernStorage
import Testing

@testable import TernNode

private func keyDriver(_ name: String, directory: String? = nil) throws -> Driver {
    try Driver(name, directory: directory) { config in
        config.snapshotEveryEntries = 50
        config.queueFileRows = 16
    }
}

private func lookup(_ d: Driver, _ key: String, max: UInt32 = 1024) throws -> [String] {
    let list = try MessageList.decode(try d.call(.queryMessage, QueryMessageRequest(topic: "t", key: key, max: max)))
    return list.messages.map { String(decoding: $0.message.body, as: UTF8.self) }
}

@Suite("Node: the key index on disk", .serialized)
struct KeyIndexTests {
    @Test(
        "lookups by key read the on-disk buckets: newest first up to max, exact keys only, the same after a restart from a snapshot, gone with a deleted topic")
    func keysOnDisk() throws {
        let d = try keyDriver("keys")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 2))
        // 400 messages: each with a shared key (7 of them) and a key of its own; every fifth with none.
        var shared: [String: [String]] = [:]
        for k in 0..<400 {
            var m = WireMessage(tag: "x", body: Array("m\(k)".utf8))
            if k % 5 != 0 {
                m.keys = ["s\(k % 7)", "u\(k)"]
                shared["s\(k % 7)", default: []].append("m\(k)")
            }
            _ = try d.call(.send, SendRequest(topic: "t", queueID: UInt32(k % 2), producerGroup: "pg", messages: [m]))
        }
        func check(_ d: Driver) throws {
            for s in shared.keys.sorted() {
                #expect(try lookup(d, s) == shared[s]!, "all of \(s), oldest first")
                #expect(try lookup(d, s, max: 3) == Array(shared[s]!.suffix(3)), "the newest 3 of \(s)")
            }
            #expect(try lookup(d, "u151") == ["m151"])
            #expect(try lookup(d, "u150").isEmpty, "m150 has no keys")
            #expect(try lookup(d, "s").isEmpty && lookup(d, "u1511").isEmpty, "a prefix or a longer key is another key")
        }
        try check(d)
        // Memory holds no row per key: the index is at most 64 bucket queues beside the topic's 2.
        let files = d.node.broker.queueFiles.allBounds
        #expect(files.count > 2 && files.count <= 2 + Int(Broker.keyBuckets))
        #expect(files.reduce(0) { $0 + $1.maxOffset } == 400 + 2 * 320)
        // What retention counts for them: every row written, once all are.
        try d.node.broker.queueFiles.sync(durably: false)
        #expect(d.node.broker.queueFiles.storedBytes == UInt64((400 + 2 * 320) * QueueRow.bytes))
        // The buckets are not a topic anyone can read.
        #expect(throws: ErrorBody.self) { try d.call(.pull, PullRequest(topic: Broker.keyIndexTopic, queueID: 0, offset: 0)) }
        _ = try d.call(.send, SendRequest(topic: "t", queueID: 0, producerGroup: "pg", messages: [WireMessage(keys: ["tail"], body: Array("after".utf8))]))
        let snapshot = d.node.lastSnapshotIndex
        #expect(snapshot > 0 && d.node.replica.log.lastIndex > snapshot, "rows past the snapshot are applied again at restart")
        try d.close()

        let again = try keyDriver("keys", directory: d.directory)
        #expect(again.node.startReport.contains { $0.hasPrefix("loaded snapshot \(snapshot)") })
        try again.elect()
        try check(again)
        #expect(try lookup(again, "tail") == ["after"])

        // A deleted topic's keys find nothing, also once a topic of the same name exists again.
        _ = try again.call(.deleteTopic, TopicRequest(name: "t", queues: 0))
        _ = try again.call(.createTopic, TopicRequest(name: "t", queues: 1))
        #expect(try lookup(again, "s3").isEmpty)
        _ = try again.call(.send, SendRequest(topic: "t", queueID: 0, producerGroup: "pg", messages: [WireMessage(keys: ["s3"], body: Array("new".utf8))]))
        #expect(try lookup(again, "s3") == ["new"])
        try again.close()
    }
}
