// Retries with back-off and the dead-letter queue on three real processes.
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernProtocol
import Testing

@Suite("Integration: retries and dead letters", .serialized)
struct RetryTests {
    @Test("a failing message is retried with its count, reaches %DLQ% after exactly the maximum, and can be resent", .timeLimit(.minutes(3)))
    func retries() async throws {
        try await withThreeNodes { cluster, client in
            try await client.createTopic("jobs", queues: 2)
            let producer = Producer(cluster: client, group: "jobs-producer")
            for name in ["ok", "flaky", "poison"] { _ = try await producer.send(Message(topic: "jobs", body: Array(name.utf8))) }

            let deliveries = NIOLockedValueBox<[String: [Int]]>([:])
            let acceptPoison = NIOLockedValueBox(false)
            let consumer = PushConsumer(cluster: client, group: "workers", topic: "jobs", maxReconsumeTimes: 2, retryDelaysMillis: [300, 600]) { m in
                let name = String(decoding: m.message.body, as: UTF8.self)
                let times = Int(m.message.properties[RetryProperty.reconsumeTimes] ?? "0")!
                deliveries.withLockedValue { $0[name, default: []].append(times) }
                switch name {
                case "flaky": return times == 0 ? .retryLater : .success
                case "poison": return acceptPoison.withLockedValue { $0 } ? .success : .retryLater
                default: return .success
                }
            }
            try await consumer.start()
            let clock = ContinuousClock()
            var deadline = clock.now + .seconds(30)
            var dead: [ReceivedMessage] = []
            while clock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                if let r = try? await client.pull(topic: "%DLQ%workers", queue: 0, offset: 0), !r.messages.isEmpty {
                    dead = r.messages
                    break
                }
            }
            let seen = deliveries.withLockedValue { $0 }
            #expect(seen["ok"] == [0])
            #expect(seen["flaky"] == [0, 1], "retried once, then done")
            #expect(seen["poison"] == [0, 1, 2], "the first delivery and exactly two retries")
            #expect(dead.map { String(decoding: $0.message.body, as: UTF8.self) } == ["poison"])
            #expect(dead.first?.message.properties[RetryProperty.reconsumeTimes] == "3")
            #expect(dead.first?.message.properties[RetryProperty.originTopic] == "jobs")
            // Resend: the group gets it again, with its count reset.
            acceptPoison.withLockedValue { $0 = true }
            _ = try await client.resendDeadLetter(try #require(dead.first), group: "workers")
            deadline = clock.now + .seconds(15)
            while clock.now < deadline && deliveries.withLockedValue({ $0["poison"]?.count ?? 0 }) < 4 {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(deliveries.withLockedValue { $0["poison"] } == [0, 1, 2, 0])
            await consumer.shutdown()
        }
    }
}
