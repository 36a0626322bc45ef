// `tern chaos` workloads and their history. Every workload runs in this process through the
// SDK (except the killed CLI clients), names each message by its body, and records what it
// attempted and what was acknowledged, with monotonic times, for the checker.
import Foundation
import NIOConcurrencyHelpers
import TernClient
import TernLauncher
import TernProtocol

import struct TernRaft.SplitMix64

/// What happened, in memory and as JSON lines in history.jsonl.
final class ChaosHistory: @unchecked Sendable {
    struct Send {
        var workload: String
        var body: String
        var started: Double
        var ended: Double
        var acked: Bool
        var id: MessageID?
        /// Attempts of this body (an ordered or transactional retry sends it again).
        var attempt: Int
        /// The broker group that acknowledged it (runs with `--groups`; nil otherwise).
        var group: String? = nil
        /// The id as printed: with its group when it has one.
        var idText: String? { id.map { i in group.map { "\($0)/\(i)" } ?? "\(i)" } }
    }
    struct Fault {
        var kind: String
        var target: String
        var started: Double
        var healed: Double
        /// The broker group it hit (runs with `--groups`; nil: the only group, a name server or a client).
        var group: String? = nil
    }
    private let lock = NIOLock()
    private var sends: [Send] = []
    private var faults: [Fault] = []
    private var notes: [String] = []
    /// Things the run did that failed (a membership change refused): each fails the run.
    private var problemList: [String] = []
    private let file: FileHandle?
    let origin = ContinuousClock.now

    init(path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        file = FileHandle(forWritingAtPath: path)
    }

    /// Seconds since the run began.
    var now: Double { (ContinuousClock.now - origin).seconds }

    /// One line of history.jsonl; absent fields are left out.
    private struct Line: Encodable {
        var t: Double
        var op: String
        var end: Double?
        var healed: Double?
        var workload: String?
        var body: String?
        var ok: Bool?
        var id: String?
        var kind: String?
        var target: String?
        var group: String?
        var text: String?
    }

    private let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    private func write(_ line: Line) {
        guard var data = try? encoder.encode(line) else { return }
        data.append(0x0A)
        file?.write(data)
    }

    /// Milliseconds are enough for a history read by people and scripts.
    private static func ms(_ x: Double) -> Double { (x * 1000).rounded() / 1000 }

    func send(_ s: Send) {
        lock.withLock {
            sends.append(s)
            write(Line(t: Self.ms(s.started), op: "send", end: Self.ms(s.ended), workload: s.workload, body: s.body, ok: s.acked, id: s.idText))
        }
    }

    func fault(_ f: Fault) {
        lock.withLock {
            faults.append(f)
            write(Line(t: Self.ms(f.started), op: "fault", healed: Self.ms(f.healed), kind: f.kind, target: f.target, group: f.group))
        }
    }

    /// A step of the nemesis that should have worked failed: noted, and the run fails.
    func problem(_ text: String) {
        lock.withLock { problemList.append(text) }
        note(text)
    }
    var problems: [String] { lock.withLock { problemList } }

    func note(_ text: String) {
        lock.withLock {
            notes.append(text)
            write(Line(t: Self.ms(now), op: "note", text: text))
        }
    }

    var allSends: [Send] { lock.withLock { sends } }
    var allFaults: [Fault] { lock.withLock { faults } }

    func close() { try? file?.close() }
}

func fmt(_ x: Double) -> String { String(format: "%.3f", x) }

/// The transactional workload's "database": each local transaction's outcome, recorded before
/// the broker is told (so a producer that dies after deciding is answered from here).
final class ChaosDatabase: @unchecked Sendable {
    private let lock = NIOLock()
    private var decisions: [String: LocalTransactionState] = [:]
    func record(_ body: String, _ state: LocalTransactionState) { lock.withLock { decisions[body] = state } }
    func decision(_ body: String) -> LocalTransactionState? { lock.withLock { decisions[body] } }
    var all: [String: LocalTransactionState] { lock.withLock { decisions } }
}

/// First deliveries seen by a live consumer: body -> (wall ms when delivered, message).
final class ChaosDeliveries: @unchecked Sendable {
    private let lock = NIOLock()
    private var first: [String: (at: UInt64, message: ReceivedMessage)] = [:]
    private var count = 0
    func saw(_ m: ReceivedMessage) {
        let body = String(decoding: m.message.body, as: UTF8.self)
        let at = UInt64(Date().timeIntervalSince1970 * 1000)
        lock.withLock {
            count += 1
            if first[body] == nil { first[body] = (at, m) }
        }
    }
    var bodies: Set<String> { lock.withLock { Set(first.keys) } }
    var firsts: [String: (at: UInt64, message: ReceivedMessage)] { lock.withLock { first } }
    var total: Int { lock.withLock { count } }
}

enum ChaosTopic {
    static let plain = "chaos-plain"
    static let idempotent = "chaos-idem"
    static let ordered = "chaos-ord"
    static let transactional = "chaos-tx"
    static let delayed = "chaos-delay"
    static let cli = "chaos-cli"
    static let all: [(String, UInt32)] = [(plain, 4), (idempotent, 4), (ordered, 4), (transactional, 2), (delayed, 2), (cli, 2)]
    /// With many groups each topic has its queues on every group (so each group's share is a
    /// single run's).
    static func all(groups: Int) -> [(String, UInt32)] { all.map { ($0.0, $0.1 * UInt32(groups)) } }
}

/// The workloads of one run. `running` turns false when the faults stop and the run settles.
final class ChaosWorkloads: @unchecked Sendable {
    let client: TernCluster
    let history: ChaosHistory
    let database = ChaosDatabase()
    let delayedSeen = ChaosDeliveries()
    let clusteringSeen = ChaosDeliveries()
    let broadcastSeen = [ChaosDeliveries(), ChaosDeliveries()]
    private let stopFlag = NIOLockedValueBox(false)
    var seed: UInt64

    init(client: TernCluster, history: ChaosHistory, seed: UInt64) {
        self.client = client
        self.history = history
        self.seed = seed
    }

    var stopped: Bool { stopFlag.withLockedValue { $0 } }
    func stop() { stopFlag.withLockedValue { $0 = true } }

    /// One timed, recorded send.
    private func send(_ producer: Producer, workload: String, _ message: Message, attempt: Int = 1) async -> SendReceipt? {
        let started = history.now
        do {
            let r = try await producer.send(message)
            history.send(
                .init(
                    workload: workload, body: String(decoding: message.body, as: UTF8.self), started: started, ended: history.now, acked: true, id: r.messageID,
                    attempt: attempt, group: r.brokerGroup.isEmpty ? nil : r.brokerGroup))
            return r
        } catch {
            history.send(
                .init(
                    workload: workload, body: String(decoding: message.body, as: UTF8.self), started: started, ended: history.now, acked: false, id: nil,
                    attempt: attempt))
            return nil
        }
    }

    /// Producers: plain (not idempotent) and idempotent, two senders each; ordered by sharding
    /// key; delayed; transactional (some "crash" before or after deciding).
    func producers() -> [Task<Void, Never>] {
        var tasks: [Task<Void, Never>] = []
        for (w, topic, idempotent) in [("plain", ChaosTopic.plain, false), ("idempotent", ChaosTopic.idempotent, true)] {
            for p in 0..<2 {
                let producer = Producer(cluster: client, group: "chaos-\(w)", idempotent: idempotent, sendTimeoutMillis: 10_000)
                tasks.append(
                    Task {
                        var n = 0
                        while !self.stopped {
                            n += 1
                            _ = await self.send(producer, workload: w, Message(topic: topic, keys: ["\(w)-\(p)-\(n)"], body: Array("\(w)|\(p)|\(n)".utf8)))
                        }
                    })
            }
        }
        // Ordered: eight keys, each key's messages numbered; a failed send is sent again (same
        // number) until acknowledged, so a key's numbers never skip.
        let ordered = Producer(cluster: client, group: "chaos-ordered", sendTimeoutMillis: 10_000)
        for k in 0..<8 {
            tasks.append(
                Task {
                    var n = 1
                    var attempt = 1
                    while !self.stopped {
                        var m = Message(topic: ChaosTopic.ordered, keys: ["K\(k)-\(n)"], body: Array("ord|K\(k)|\(n)".utf8))
                        m.shardingKey = "K\(k)"
                        if await self.send(ordered, workload: "ordered", m, attempt: attempt) != nil {
                            n += 1
                            attempt = 1
                        } else {
                            attempt += 1
                            try? await Task.sleep(for: .milliseconds(100))
                        }
                    }
                })
        }
        let delayedProducer = Producer(cluster: client, group: "chaos-delayed", sendTimeoutMillis: 10_000)
        tasks.append(
            Task {
                var n = 0
                var rng = SplitMix(seed: self.seed ^ 0xD1)
                while !self.stopped {
                    n += 1
                    let delay = 1_000 + rng.next() % 4_000
                    var m = Message(topic: ChaosTopic.delayed, body: Array("dly|\(n)|\(delay)".utf8))
                    m.setDelay(milliseconds: delay)
                    _ = await self.send(delayedProducer, workload: "delayed", m)
                    try? await Task.sleep(for: .milliseconds(50))
                }
            })
        return tasks
    }

    /// The transactional workload; it goes on answering checks after `stop` until
    /// `finishTransactions`.
    func transactions() async {
        let db = database
        let producer = TransactionProducer(cluster: client, group: "chaos-tx") { half in
            // Answer from the database; no record means the local transaction never ran.
            db.decision(String(decoding: half.message.body, as: UTF8.self)) ?? .rollback
        }
        try? await producer.start()
        // A producer of the same group that "crashes": it never answers checks.
        let doomed = TransactionProducer(cluster: client, group: "chaos-tx") { _ in .unknown }
        var rng = SplitMix(seed: seed ^ 0x7A)
        var n = 0
        while !stopped {
            n += 1
            let body = "tx|\(n)"
            let roll = rng.next() % 10
            let started = history.now
            do {
                let r: TransactionReceipt
                if roll == 0 {
                    // Crash before deciding: no record, no decision.
                    r = try await doomed.send(Message(topic: ChaosTopic.transactional, body: Array(body.utf8))) { _ in .unknown }
                } else {
                    let state: LocalTransactionState = roll < 7 ? .commit : .rollback
                    let tellBroker = roll != 1  // 1: crash after deciding, before telling
                    r = try await (tellBroker ? producer : doomed).send(Message(topic: ChaosTopic.transactional, body: Array(body.utf8))) { _ in
                        db.record(body, state)
                        return tellBroker ? state : .unknown
                    }
                }
                history.send(
                    .init(
                        workload: "transactional", body: body, started: started, ended: history.now, acked: true, id: r.receipt.messageID, attempt: 1,
                        group: r.receipt.brokerGroup.isEmpty ? nil : r.receipt.brokerGroup))
            } catch {
                history.send(.init(workload: "transactional", body: body, started: started, ended: history.now, acked: false, id: nil, attempt: 1))
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        // Keep answering checks while the run settles.
        while !settledTransactions { try? await Task.sleep(for: .milliseconds(200)) }
        await producer.shutdown()
    }

    private let settled = NIOLockedValueBox(false)
    var settledTransactions: Bool { settled.withLockedValue { $0 } }
    func finishTransactions() { settled.withLockedValue { $0 = true } }

    /// Consumers: a clustering group of two push consumers, a broadcasting group of two, and
    /// a consumer of the delayed topic recording when each message first arrives.
    func consumers() async throws -> [@Sendable () async -> Void] {
        var stops: [@Sendable () async -> Void] = []
        for _ in 0..<2 { stops.append(try await consume(group: "chaos-clustering", topic: ChaosTopic.idempotent, into: clusteringSeen)) }
        for seen in broadcastSeen { stops.append(try await consume(group: "chaos-broadcast", topic: ChaosTopic.plain, mode: .broadcasting, into: seen)) }
        stops.append(try await consume(group: "chaos-delayed", topic: ChaosTopic.delayed, into: delayedSeen))
        return stops
    }

    /// Starts one push consumer recording what it receives; returns how to stop it.
    private func consume(group: String, topic: String, mode: ConsumeMode = .clustering, into seen: ChaosDeliveries) async throws -> @Sendable () async -> Void {
        let c = PushConsumer(cluster: client, group: group, topic: topic, mode: mode) { m in
            seen.saw(m)
            return .success
        }
        try await c.start()
        return { await c.shutdown() }
    }
}

/// The run's own draws (the nemesis schedule is reproducible from the seed).
typealias SplitMix = SplitMix64

extension SplitMix64 {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
    mutating func between(_ a: Double, _ b: Double) -> Double { a + (b - a) * Double(next() >> 11) / Double(1 << 53) }
}
