// RocketMQ semantics on three real processes: SQL92 filters, lookups by id and key, offset
// reset, delayed messages through a leader kill, and recall.
import Foundation
import TernClient
import TernProtocol
import Testing

/// Drains what a fresh consumer of `group` sees within `seconds` (stops after `idle` empty polls).
func drain(_ client: TernCluster, topic: String, group: String, sql: String = "", seconds: Double = 10, idle: Int = 3) async throws -> [ReceivedMessage] {
    let consumer = PullConsumer(cluster: client, group: group, topic: topic, sqlFilter: sql, clientID: group)
    try await consumer.start()
    var out: [ReceivedMessage] = []
    var empty = 0
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(seconds)
    while clock.now < deadline && empty < idle {
        let batch = try await consumer.poll(maxMessages: 256, waitMillis: 300)
        out += batch
        empty = batch.isEmpty ? empty + 1 : 0
    }
    try await consumer.commit()
    await consumer.shutdown()
    return out
}

func text(_ m: ReceivedMessage) -> String { String(decoding: m.message.body, as: UTF8.self) }

@Suite("Integration: messaging semantics on three processes", .serialized)
struct MessagingTests {
    @Test("SQL92 filters, lookups, offset reset, delayed messages across a leader kill, recall", .timeLimit(.minutes(3)))
    func semantics() async throws {
        try await withThreeNodes { cluster, client in
            try await client.createTopic("sem", queues: 2)
            let producer = Producer(cluster: client, group: "sem-producer")

            // SQL92: the broker filters by property.
            var receipts: [SendReceipt] = []
            for n in 0..<10 {
                receipts.append(try await producer.send(Message(topic: "sem", keys: ["key-\(n % 3)"], properties: ["n": "\(n)"], body: Array("m\(n)".utf8))))
            }
            let filtered = try await drain(client, topic: "sem", group: "sql", sql: "n >= 5 AND n <> 7")
            #expect(Set(filtered.map(text)) == ["m5", "m6", "m8", "m9"])
            do {
                _ = try await drain(client, topic: "sem", group: "bad", sql: "n >>")
                Issue.record("a bad filter was accepted")
            } catch ClientError.broker(let e) {
                #expect(e.code == ErrorCode.filterSyntax && e.message.contains("column 4"), "\(e)")
            }

            // Lookups.
            #expect(text(try await client.message(id: receipts[3].messageID)) == "m3")
            #expect(try await client.messages(topic: "sem", key: "key-1").map(text) == ["m1", "m4", "m7"])

            // Offset reset: a group that consumed everything replays from the start.
            let all = try await drain(client, topic: "sem", group: "replay")
            #expect(all.count == 10)
            let reset = try await client.resetOffsets(group: "replay", toTimestamp: 0)
            #expect(reset.values.allSatisfy { $0 == 0 } && reset.count == 2)
            #expect(try await drain(client, topic: "sem", group: "replay").count == 10)

            // Delayed: scheduled, invisible until due, released once although the leader dies meanwhile.
            var delayed = Message(topic: "sem", body: Array("later".utf8))
            delayed.setDelay(milliseconds: 5_000)
            let sentAt = Date()
            let r = try await producer.send(delayed)
            #expect(r.scheduled)
            var recalled = Message(topic: "sem", body: Array("recalled".utf8))
            recalled.setDelay(milliseconds: 4_000)
            try await client.recall([try await producer.send(recalled).messageID])
            let early = try await drain(client, topic: "sem", group: "delay", seconds: 1, idle: 2).map(text).filter { $0 == "later" }
            // Only meaningful if the drain ended before the due time (a loaded machine can be slow).
            if Date().timeIntervalSince(sentAt) < 4.5 { #expect(early.isEmpty, "not before its time") }
            let l = try await leader(of: client)
            cluster.kill(l)
            try cluster.start(l)
            let wait = max(0, 6.5 - Date().timeIntervalSince(sentAt))
            try await Task.sleep(for: .milliseconds(Int64(wait * 1000)))
            let after = try await drain(client, topic: "sem", group: "delay2").map(text)
            #expect(after.filter { $0 == "later" }.count == 1, "released exactly once: \(after)")
            #expect(!after.contains("recalled"))
            let released = try await client.message(id: r.messageID)
            #expect(Double(released.storeTimestamp) / 1000 <= sentAt.timeIntervalSince1970 + 1)
        }
    }
}
