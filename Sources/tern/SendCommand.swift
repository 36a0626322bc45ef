// `tern send`: one message or many, plain, delayed, ordered by sharding key, or transactional.
import ArgumentParser
import CTernIO
import Foundation
import TernClient
import TernLauncher
import TernProtocol

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send messages; prints each acknowledged message id.")
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Topic.") var topic: String
    @Option(help: "Tag.") var tag = ""
    @Option(help: "Key (message keys, for lookup).") var key: String?
    @Option(help: "A property, name=value (repeatable).") var property: [String] = []
    @Option(help: "Sharding key: messages with the same key go to one queue, in order.") var shardingKey: String?
    @Option(help: "Deliver after this delay (e.g. 500ms, 10s, 2m, 1h), counted from when the leader stores it.") var delay: String?
    @Option(help: "Deliver at this time: milliseconds since 1970 or ISO 8601 (e.g. 2026-11-24T08:00:00Z).") var deliverAt: String?
    @Option(help: "RocketMQ delay level 1-18 (1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h).") var delayLevel: Int?
    @Option(help: "Send as a transaction: commit, rollback, or unknown (leave it undecided: the broker checks back).") var transaction: String?
    @Option(
        help:
            "With --transaction: stay and answer the broker's checks of this group's half messages with commit or rollback (the first check comes some 6 s after the send)."
    ) var checkAnswer: String?
    @Option(help: "Producer group.") var group = "tern-cli"
    @Option(help: "Messages to send.") var count = 1
    @Option(help: "Body size in bytes (a generated body); without it the body is --body.") var size: Int?
    @Option(help: "Body text.") var body = "hello from tern"
    @Flag(help: "Print only the number acknowledged.") var quiet = false

    func run() async throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        tern_stdout_line_buffered()  // each id as it is acknowledged, also into a pipe or file
        var properties: [String: String] = [:]
        for p in property {
            let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw ValidationError("--property \(p) is not name=value") }
            properties[kv[0]] = kv[1]
        }
        guard [delay != nil, deliverAt != nil, delayLevel != nil].filter({ $0 }).count <= 1 else {
            throw ValidationError("give one of --delay, --deliver-at, --delay-level")
        }
        if let delay {
            guard let ms = parseDuration(delay) else { throw ValidationError("--delay \(delay) is not a duration like 500ms, 10s, 2m or 1h") }
            properties["TIMER_DELAY_MS"] = String(ms)
        }
        if let deliverAt { properties["TIMER_DELIVER_MS"] = String(try parseTime(deliverAt, flag: "--deliver-at")) }
        if let delayLevel {
            guard (1...18).contains(delayLevel) else { throw ValidationError("--delay-level must be 1 to 18") }
            properties["DELAY"] = String(delayLevel)
        }
        if let size, size < 0 || size > 64 << 20 { throw ValidationError("--size must be 0 to 67108864") }
        if transaction != nil || checkAnswer != nil { return try await sendTransactions(properties) }
        let cluster = try endpoints.cluster()
        let producer = Producer(cluster: cluster, group: group)
        var acknowledged = 0
        var failed = 0
        for k in 0..<count {
            do {
                let r = try await producer.send(message(k, properties))
                acknowledged += 1
                if !quiet { print(r.scheduled ? "\(r.groupMessageID)\tscheduled" : "\(r.groupMessageID)") }
            } catch {
                failed += 1
                FileHandle.standardError.write(Data("tern: send \(k) failed: \(error)\n".utf8))
                if case ClientError.broker(let e) = error, e.code == ErrorCode.topicNotFound { break }
            }
        }
        await cluster.shutdown()
        if quiet { print(acknowledged) }
        if failed > 0 || acknowledged < count { throw ExitCode(1) }
    }
}

extension Send {
    /// Message `k` of this run: the generated or given body, tag, key, properties, sharding key.
    func message(_ k: Int, _ properties: [String: String]) -> Message {
        let bytes = size.map { n in (0..<n).map { UInt8(truncatingIfNeeded: $0 &+ k) } } ?? Array((count > 1 ? "\(body) \(k)" : body).utf8)
        var m = Message(topic: topic, tag: tag, keys: key.map { [$0] } ?? [], properties: properties, body: bytes)
        if let shardingKey { m.shardingKey = shardingKey }
        return m
    }

    func sendTransactions(_ properties: [String: String]) async throws {
        guard let transaction else { throw ValidationError("--check-answer goes with --transaction") }
        let states: [String: LocalTransactionState] = ["commit": .commit, "rollback": .rollback, "unknown": .unknown]
        guard let state = states[transaction] else { throw ValidationError("--transaction is commit, rollback or unknown, not \(transaction)") }
        if let checkAnswer, states[checkAnswer] == nil || states[checkAnswer] == .unknown {
            throw ValidationError("--check-answer is commit or rollback, not \(checkAnswer)")
        }
        let answer = checkAnswer.flatMap { states[$0] }
        guard properties["DELAY"] == nil, properties["TIMER_DELAY_MS"] == nil, properties["TIMER_DELIVER_MS"] == nil else {
            throw ValidationError("a transactional message cannot also be delayed")
        }
        let cluster = try endpoints.cluster()
        let checked = Counter()
        let producer = TransactionProducer(cluster: cluster, group: group) { half in
            let times = half.message.properties[TransactionProperty.checkTimes] ?? "?"
            guard let answer else { return .unknown }
            print("\(half.id)\tchecked (\(times)), answered \(answer == .commit ? "commit" : "rollback")")
            checked.increment()
            return answer
        }
        if answer != nil { try await producer.start() }
        var acknowledged = 0
        var undecided = 0
        for k in 0..<count {
            do {
                let r = try await producer.send(message(k, properties)) { _ in state }
                acknowledged += 1
                if !r.ended { undecided += 1 }
                if !quiet {
                    print(
                        "\(r.receipt.groupMessageID)\thalf, \(transaction)\(r.ended || state == .unknown ? "" : " (not delivered: the broker will check back)")"
                    )
                }
            } catch {
                FileHandle.standardError.write(Data("tern: send \(k) failed: \(error)\n".utf8))
                if case ClientError.broker(let e) = error, e.code == ErrorCode.topicNotFound { break }
            }
        }
        if answer != nil && undecided > 0 {
            FileHandle.standardError.write(Data("tern: waiting for the broker to check back on \(undecided) half message(s)...\n".utf8))
            let clock = ContinuousClock()
            let start = clock.now
            while checked.value < undecided && clock.now - start < .seconds(120) { try await Task.sleep(for: .milliseconds(100)) }
            await producer.shutdown()
            if checked.value < undecided {
                FileHandle.standardError.write(Data("tern: only \(checked.value) of \(undecided) checked within 120 s\n".utf8))
                await cluster.shutdown()
                throw ExitCode(1)
            }
        }
        await cluster.shutdown()
        if quiet { print(acknowledged) }
        if acknowledged < count { throw ExitCode(1) }
    }
}
