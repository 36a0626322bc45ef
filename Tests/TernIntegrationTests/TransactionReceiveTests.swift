// Transactions and receive/ack on three real processes, through leader kills: a half message
// left undecided by a vanished producer is committed (or rolled back) by the check-back to
// another producer of its group; an invisible message neither comes back before its time,
// although the leader that gave the time died, nor fails to come back after it.
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernProtocol
import Testing

@Suite("Integration: transactions and receive/ack on three processes", .serialized)
struct TransactionReceiveIntegrationTests {
    @Test("commit and rollback; undecided half messages resolved by check-back after the producer vanished and the leader died", .timeLimit(.minutes(3)))
    func transactions() async throws {
        try await withThreeNodes { cluster, client in
            try await client.createTopic("tx", queues: 2)
            // The first producer decides two, leaves two undecided, and goes away.
            let first = TransactionProducer(cluster: client, group: "payments") { _ in .unknown }
            var ids: [String: MessageID] = [:]
            for (body, state) in [
                ("commit", LocalTransactionState.commit), ("rollback", .rollback), ("undecided-commit", .unknown), ("undecided-rollback", .unknown),
            ] {
                let r = try await first.send(Message(topic: "tx", keys: [body], body: Array(body.utf8))) { _ in state }
                #expect(r.receipt.scheduled && r.ended == (state != .unknown))
                ids[body] = r.receipt.messageID
            }
            await first.shutdown()
            #expect(try await drain(client, topic: "tx", group: "early", seconds: 2).map(text) == ["commit"])

            // The leader dies; the half messages stay undecided through the failover.
            let l = try await leader(of: client)
            cluster.kill(l)
            try cluster.start(l)

            // A second producer of the group answers the checks from its "database".
            let asked = NIOLockedValueBox<[String: String]>([:])
            let second = TransactionProducer(cluster: client, group: "payments") { half in
                let body = String(decoding: half.message.body, as: UTF8.self)
                asked.withLockedValue { $0[body] = half.message.properties[TransactionProperty.checkTimes] }
                return body == "undecided-commit" ? .commit : .rollback
            }
            try await second.start()
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(40)
            var seen: [String] = []
            while clock.now < deadline {
                seen += try await drain(client, topic: "tx", group: "late", seconds: 2).map(text)  // the group resumes where it stopped
                if seen.contains("undecided-commit") && asked.withLockedValue({ $0.count }) == 2 { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            await second.shutdown()
            #expect(Set(seen) == ["commit", "undecided-commit"], "visible: \(seen)")
            #expect(seen.count == 2, "each committed message once: \(seen)")
            #expect(Set(asked.withLockedValue { $0 }.keys) == ["undecided-commit", "undecided-rollback"], "checked: \(asked.withLockedValue { $0 })")
            // Decided is decided: the opposite decision is refused, the same one accepted.
            do {
                try await second.end(ids["undecided-rollback"]!, .commit)
                Issue.record("a commit after the rollback was accepted")
            } catch ClientError.broker(let e) {
                #expect(e.code == ErrorCode.transactionDecided, "\(e)")
            }
            try await second.end(ids["commit"]!, .commit)
        }
    }

    @Test("receive/ack: an unacknowledged message comes back after its invisible time and not before, across a leader kill", .timeLimit(.minutes(3)))
    func receiveAck() async throws {
        try await withThreeNodes { cluster, client in
            try await client.createTopic("rq", queues: 2)
            let producer = Producer(cluster: client, group: "rq-producer")
            for n in 0..<6 { _ = try await producer.send(Message(topic: "rq", body: Array("r\(n)".utf8))) }
            let consumer = SimpleConsumer(cluster: client, group: "workers", topic: "rq")
            var got: [Delivery] = []
            while got.count < 6 { got += try await consumer.receive(max: 6, invisibleMillis: 4_000, waitMillis: 1_000) }
            #expect(got.count == 6 && got.allSatisfy { $0.attempt == 1 })
            // Acknowledge four; keep two invisible; kill the leader that gave their times.
            let kept = got.suffix(2)
            for d in got.prefix(4) { try await consumer.ack(d) }
            let until = kept.map(\.invisibleUntil).min()!
            let l = try await leader(of: client)
            cluster.kill(l)
            try cluster.start(l)
            var back: [Delivery] = []
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(30)
            while back.count < 2 && clock.now < deadline {
                let batch = try await consumer.receive(max: 6, invisibleMillis: 30_000, waitMillis: 1_000)
                let now = UInt64(Date().timeIntervalSince1970 * 1000)
                for d in batch { #expect(now >= until, "\(text(d.message)) came back at \(now), invisible until \(until)") }
                back += batch
            }
            #expect(Set(back.map { text($0.message) }) == Set(kept.map { text($0.message) }), "came back: \(back.map { text($0.message) })")
            #expect(back.allSatisfy { $0.attempt == 2 })
            // The first deliveries' handles are stale now; the new ones acknowledge.
            do {
                try await consumer.ack(kept.first!)
                Issue.record("a stale receipt handle was accepted")
            } catch ClientError.broker(let e) {
                #expect(e.code == ErrorCode.receiptExpired, "\(e)")
            }
            for d in back { try await consumer.ack(d) }
            #expect(try await consumer.receive(max: 6, invisibleMillis: 1_000, waitMillis: 500).isEmpty)
        }
    }
}
