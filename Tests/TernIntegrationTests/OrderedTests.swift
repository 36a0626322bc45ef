// Ordered messages on three real processes: sends by sharding key across a leader kill, an
// orderly consumer that sees each key's messages in order, and a dead letter after the retries.
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernProtocol
import Testing

@Suite("Integration: ordered messages", .serialized)
struct OrderedTests {
    @Test("per-key order through a leader kill; a message that keeps failing goes to %DLQ% after the retries", .timeLimit(.minutes(3)))
    func ordered() async throws {
        try await withThreeNodes { cluster, client in
            try await client.createTopic("orders", queues: 4)
            let producer = Producer(cluster: client, group: "ordered-producer", sendTimeoutMillis: 30_000)
            let keys = (0..<8).map { "order-\($0)" }
            let perKey = 40
            // Eight keys sent concurrently, each key's messages one after another; the leader dies midway.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for key in keys {
                    group.addTask {
                        for n in 1...perKey {
                            var m = Message(topic: "orders", body: Array("\(key):\(n)".utf8))
                            m.shardingKey = key
                            _ = try await producer.send(m)
                        }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(300))
                    let l = try await leader(of: client)
                    cluster.kill(l)
                    try cluster.start(l)
                }
                try await group.waitForAll()
            }
            let seen = NIOLockedValueBox<[String: [Int]]>([:])
            let poison = "order-3:7"
            let attempts = NIOLockedValueBox(0)
            let consumer = OrderlyConsumer(cluster: client, group: "ledger", topic: "orders", maxReconsumeTimes: 2, retryIntervalMillis: 50) { m in
                let text = String(decoding: m.message.body, as: UTF8.self)
                if text == poison {
                    attempts.withLockedValue { $0 += 1 }
                    return .retryLater
                }
                let parts = text.split(separator: ":")
                seen.withLockedValue { $0[String(parts[0]), default: []].append(Int(parts[1])!) }
                return .success
            }
            try await consumer.start()
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(60)
            while clock.now < deadline && seen.withLockedValue({ $0.values.reduce(0) { $0 + $1.count } }) < keys.count * perKey - 1 {
                try await Task.sleep(for: .milliseconds(100))
            }
            await consumer.shutdown()
            let result = seen.withLockedValue { $0 }
            for key in keys {
                let expected = Array(1...perKey).filter { "\(key):\($0)" != poison }
                #expect(result[key] == expected, "\(key): \(result[key] ?? [])")
            }
            #expect(attempts.withLockedValue { $0 } == 3, "first try and two retries, then the DLQ")
            #expect(consumer.deadLettered == 1)
            let dlq = try await drain(client, topic: "%DLQ%ledger", group: "dlq-reader")
            #expect(dlq.map(text) == [poison])
            #expect(dlq.first?.message.properties["RECONSUME_TIMES"] == "2")
        }
    }
}
