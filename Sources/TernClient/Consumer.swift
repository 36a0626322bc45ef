// Consumers: membership by heartbeat, queue assignment from the leader, pulls with long
// polling, and offsets committed to the replicated log.
import NIOConcurrencyHelpers
import NIOCore
import TernProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// Where a group with no committed offset for a queue starts.
///
/// ```swift
/// let tail = PullConsumer(cluster: cluster, group: "audit", topic: "orders", consumeFrom: .lastOffset)
/// ```
public enum ConsumeFrom: Sendable {
    /// The queue's first kept message.
    case firstOffset
    /// Only messages stored after the consumer started.
    case lastOffset
}

/// Pulls messages of one topic for a consumer group; the caller decides when to commit.
///
/// ```swift
/// let consumer = PullConsumer(cluster: cluster, group: "billing", topic: "orders")
/// try await consumer.start()
/// let batch = try await consumer.poll(waitMillis: 1000)
/// for m in batch { print(m.id, String(decoding: m.message.body, as: UTF8.self)) }
/// try await consumer.commit()   // up to what poll returned
/// await consumer.shutdown()
/// ```
///
/// In clustering mode (the default) each queue belongs to one member of the group at a time;
/// the leader reassigns queues when members join, leave or fall silent. In broadcasting mode
/// every member gets every message and keeps offsets of its own (under `group@clientID`).
public final class PullConsumer: Sendable {
    public let cluster: TernCluster
    public let group: String
    public let topic: String
    public let tagFilter: String
    /// A SQL92 expression over message properties ("" for none), evaluated by the broker.
    public let sqlFilter: String
    public let mode: ConsumeMode
    public let clientID: String
    public let consumeFrom: ConsumeFrom

    struct State {
        var assigned: [QueueRef] = []
        var generation: UInt64 = 0
        /// Next offset to pull, per owned queue.
        var positions: [QueueRef: UInt64] = [:]
        /// Next offset to commit (what poll returned), per queue.
        var consumed: [QueueRef: UInt64] = [:]
        var committed: [QueueRef: UInt64] = [:]
        var lastHeartbeat: ContinuousClock.Instant?
        var rotation = 0
        var started = false
        var retentionSkips: [RetentionSkip] = []
    }
    private let state = NIOLockedValueBox(State())
    /// Through name servers: one consumer per broker group holding the topic (RoutedPull.swift).
    let routed: RoutedPull?
    /// Set on a routed consumer's parts: a pull moves the position only, and the offset to
    /// commit moves when the routed consumer hands the messages out (`settle`).
    let holdConsumed: Bool

    /// A queue position that fell below the queue's minimum: those messages were deleted by
    /// retention before this consumer read them, and it resumed at the minimum.
    public struct RetentionSkip: Sendable, Equatable {
        public var queue: QueueRef
        public var from: UInt64
        public var resumedAt: UInt64
    }

    /// The retention skips since the last call (the `tern consume` command prints them).
    public func takeRetentionSkips() -> [RetentionSkip] {
        state.withLockedValue { s in
            defer { s.retentionSkips = [] }
            return s.retentionSkips
        }
    }

    public convenience init(
        cluster: TernCluster, group: String, topic: String, tagFilter: String = "*", sqlFilter: String = "", mode: ConsumeMode = .clustering,
        clientID: String? = nil, consumeFrom: ConsumeFrom = .firstOffset
    ) {
        self.init(
            cluster: cluster, group: group, topic: topic, tagFilter: tagFilter, sqlFilter: sqlFilter, mode: mode, clientID: clientID, consumeFrom: consumeFrom,
            holdConsumed: false)
    }

    init(
        cluster: TernCluster, group: String, topic: String, tagFilter: String, sqlFilter: String, mode: ConsumeMode, clientID: String?,
        consumeFrom: ConsumeFrom, holdConsumed: Bool
    ) {
        self.cluster = cluster
        self.group = group
        self.topic = topic
        self.tagFilter = tagFilter
        self.sqlFilter = sqlFilter
        self.mode = mode
        let id = clientID ?? PullConsumer.defaultClientID()
        self.clientID = id
        self.consumeFrom = consumeFrom
        self.holdConsumed = holdConsumed
        routed =
            cluster.router.map {
                RoutedPull(
                    router: $0, group: group, topic: topic, tagFilter: tagFilter, sqlFilter: sqlFilter, mode: mode, clientID: id, consumeFrom: consumeFrom)
            }
    }

    static func defaultClientID() -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, 255)
        let host = String(decoding: name.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(host)@\(getpid())@\(UInt32.random(in: 0...UInt32.max))"
    }

    /// The group under which offsets are kept.
    var offsetGroup: String { mode == .broadcasting ? "\(group)@\(clientID)" : group }

    /// Joins the group.
    public func start() async throws {
        if let routed { return try await routed.start() }
        _ = try await cluster.queues(of: topic)
        state.withLockedValue { $0.started = true }
        try await heartbeat()
    }

    /// Queues this member owns now (through name servers: in every group, see `groupAssignment`).
    public var assignment: [QueueRef] { routed?.assignment.flatMap(\.queues).sorted() ?? state.withLockedValue { $0.assigned } }

    /// Queues this member owns now, per broker group (one entry, group "", without name servers).
    public var groupAssignment: [(group: String, queues: [QueueRef])] { routed?.assignment ?? [("", assignment)] }

    /// Heartbeats the leader and applies a changed assignment: queues lost are committed and
    /// dropped, queues gained start at the group's committed offset.
    public func heartbeat() async throws {
        if let routed { return try await routed.heartbeat() }
        let request = HeartbeatRequest(group: group, clientID: clientID, mode: mode, topics: [topic], sqlFilter: sqlFilter)
        let response = try HeartbeatResponse.decode(try await cluster.leaderCall(.heartbeat, request.encoded()))
        let (lost, gained) = state.withLockedValue { s -> ([QueueRef], [QueueRef]) in
            s.lastHeartbeat = ContinuousClock().now
            let old = Set(s.assigned)
            let new = Set(response.assigned)
            s.assigned = response.assigned.sorted()
            s.generation = response.generation
            return (old.subtracting(new).sorted(), new.subtracting(old).sorted())
        }
        if !lost.isEmpty {
            try? await commit()
            state.withLockedValue { s in for q in lost { s.positions[q] = nil; s.consumed[q] = nil } }
        }
        for q in gained {
            let start = try await startOffset(q)
            state.withLockedValue { s in
                s.positions[q] = start
                s.consumed[q] = start
                s.committed[q] = start
            }
        }
    }

    private func startOffset(_ q: QueueRef) async throws -> UInt64 {
        let r = try QueryOffsetResponse.decode(try await cluster.leaderCall(.queryOffset, QueryOffsetRequest(group: offsetGroup, queue: q).encoded()))
        if let o = r.offset { return o }
        switch consumeFrom {
        case .firstOffset: return 0
        case .lastOffset:
            let info = try await cluster.describeTopic(q.topic)
            return info.queues.first(where: { $0.queueID == q.queueID })?.maxOffset ?? 0
        }
    }

    /// Messages from the owned queues: first a quick pass over every queue, then, when all are
    /// empty, one long poll of up to `waitMillis` on the next queue in turn.
    public func poll(maxMessages: Int = 32, waitMillis: UInt32 = 1000) async throws -> [ReceivedMessage] {
        if let routed { return try await routed.poll(maxMessages: maxMessages, waitMillis: waitMillis) }
        return try await pollBatch(maxMessages: maxMessages, waitMillis: waitMillis).messages
    }

    /// A poll, and the offsets it moved past (queue, from, to) for `settle`.
    func pollBatch(maxMessages: Int, waitMillis: UInt32) async throws -> (messages: [ReceivedMessage], moved: [(QueueRef, UInt64, UInt64)]) {
        let due = state.withLockedValue { s in s.lastHeartbeat.map { ContinuousClock().now - $0 > .seconds(1) } ?? true }
        if due { try await heartbeat() }
        let queues = state.withLockedValue { $0.assigned }
        if queues.isEmpty {
            try await Task.sleep(for: .milliseconds(Int64(min(waitMillis, 200))))
            return ([], [])
        }
        var moved: [(QueueRef, UInt64, UInt64)] = []
        do {
            for q in queues {
                let got = try await pull(q, max: maxMessages, wait: 0)
                if let m = got.moved { moved.append(m) }
                if !got.messages.isEmpty { return (got.messages, moved) }
            }
            let q = state.withLockedValue { s -> QueueRef in
                s.rotation += 1
                return queues[s.rotation % queues.count]
            }
            let got = try await pull(q, max: maxMessages, wait: waitMillis)
            if let m = got.moved { moved.append(m) }
            return (got.messages, moved)
        } catch {
            // The pulls before the failing one returned no message (filtered, or past a
            // retention gap): nothing to hand out, so their offsets may be committed now.
            for (q, from, to) in moved { settle(q, from: from, to: to) }
            throw error
        }
    }

    /// A routed consumer handed out what a pull of `q` from `from` to `to` returned: commit up to there.
    func settle(_ q: QueueRef, from: UInt64, to: UInt64) {
        state.withLockedValue { s in
            if s.positions[q] != nil, s.consumed[q] == from { s.consumed[q] = to }
        }
    }

    private func pull(_ q: QueueRef, max: Int, wait: UInt32) async throws -> (messages: [ReceivedMessage], moved: (QueueRef, UInt64, UInt64)?) {
        guard let offset = state.withLockedValue({ $0.positions[q] }) else { return ([], nil) }
        let request = PullRequest(
            topic: q.topic, queueID: q.queueID, offset: offset, maxMessages: UInt32(max), maxWaitMillis: wait, tagFilter: tagFilter, sqlFilter: sqlFilter)
        let r = try PullResponse.decode(try await cluster.anyCall(.pull, request.encoded(), timeoutMillis: Int64(wait) + cluster.options.requestTimeoutMillis))
        let moved = state.withLockedValue { s -> (QueueRef, UInt64, UInt64)? in
            // Only if the queue is still ours and nobody moved the position meanwhile.
            guard s.positions[q] == offset else { return nil }
            s.positions[q] = r.nextOffset
            if offset < r.minOffset { s.retentionSkips.append(RetentionSkip(queue: q, from: offset, resumedAt: r.minOffset)) }
            if holdConsumed { return (q, offset, r.nextOffset) }
            s.consumed[q] = r.nextOffset
            return nil
        }
        return (r.messages, moved)
    }

    /// Moves a queue's position back (to redeliver from `offset`); through name servers, in
    /// the group named (a message's `brokerGroup`).
    public func seek(_ q: QueueRef, to offset: UInt64, brokerGroup: String = "") {
        if let routed { return routed.seek(q, to: offset, brokerGroup: brokerGroup) }
        state.withLockedValue { s in
            if s.positions[q] != nil {
                s.positions[q] = offset
                s.consumed[q] = offset
            }
        }
    }

    /// Commits, for every owned queue, the offset after the last message poll returned.
    public func commit() async throws {
        if let routed { return try await routed.commit() }
        let offsets = state.withLockedValue { s in s.consumed.filter { s.committed[$0.key] != $0.value } }
        guard !offsets.isEmpty else { return }
        _ = try await cluster.leaderCall(.commitOffset, CommitOffsetRequest(group: offsetGroup, offsets: offsets).encoded())
        state.withLockedValue { s in for (q, o) in offsets { s.committed[q] = o } }
    }

    /// Commits and leaves the group, so its queues move to the other members at once.
    public func shutdown() async {
        if let routed { return await routed.shutdown() }
        try? await commit()
        _ = try? await cluster.leaderCall(.unregister, UnregisterRequest(group: group, clientID: clientID).encoded(), timeoutMillis: 1000)
    }
}

/// What a push listener says about a message.
///
/// ```swift
/// let consumer = PushConsumer(cluster: cluster, group: "billing", topic: "orders") { m in
///     try await charge(m) ? .success : .retryLater
/// }
/// ```
public enum ConsumeResult: Sendable {
    case success
    /// Deliver it again later (after a pause; the queue waits, keeping order).
    case retryLater
}

/// Calls a listener for every message of a topic, committing offsets as messages succeed.
///
/// ```swift
/// let consumer = PushConsumer(cluster: cluster, group: "billing", topic: "orders") { message in
///     print(String(decoding: message.message.body, as: UTF8.self))
///     return .success
/// }
/// try await consumer.start()
/// // ...
/// await consumer.shutdown()
/// ```
///
/// A message whose listener returns `.retryLater` or throws is given back to the broker, which
/// stores a copy in `%RETRY%<group>` delivered again after a back-off (RocketMQ's: 10 s, 30 s,
/// 1 min, 2 min, ... 2 h; configurable), with `RECONSUME_TIMES` counting the attempts. After
/// `maxReconsumeTimes` retries (16 by default) the copy goes to `%DLQ%<group>` instead. The
/// consumer reads its retry topic besides its topic. In broadcasting mode a failing message is
/// retried in place instead (1 s apart, the same number of times), then skipped.
public final class PushConsumer: Sendable {
    public typealias Listener = @Sendable (ReceivedMessage) async throws -> ConsumeResult
    /// RocketMQ's retry back-off: delay levels 3 to 18.
    public static let defaultRetryDelaysMillis: [UInt64] = [10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200].map { $0 * 1000 }
    public let pull: PullConsumer
    public let maxReconsumeTimes: Int
    public let retryDelaysMillis: [UInt64]
    let listener: Listener
    private let state = NIOLockedValueBox<(task: Task<Void, Never>?, retry: PullConsumer?)>((nil, nil))

    public init(
        cluster: TernCluster, group: String, topic: String, tagFilter: String = "*", sqlFilter: String = "", mode: ConsumeMode = .clustering,
        consumeFrom: ConsumeFrom = .firstOffset,
        maxReconsumeTimes: Int = 16, retryDelaysMillis: [UInt64] = PushConsumer.defaultRetryDelaysMillis, listener: @escaping Listener
    ) {
        precondition(!retryDelaysMillis.isEmpty, "at least one retry delay")
        pull = PullConsumer(cluster: cluster, group: group, topic: topic, tagFilter: tagFilter, sqlFilter: sqlFilter, mode: mode, consumeFrom: consumeFrom)
        self.maxReconsumeTimes = maxReconsumeTimes
        self.retryDelaysMillis = retryDelaysMillis
        self.listener = listener
    }

    public func start() async throws {
        try await pull.start()
        let t = Task { await self.run() }
        state.withLockedValue { $0.task = t }
    }

    private func run() async {
        let clock = ContinuousClock()
        var lastCommit = clock.now
        var lastRetryCheck = clock.now - .seconds(10)
        let started = clock.now
        while !Task.isCancelled {
            do {
                var retry = state.withLockedValue { $0.retry }
                // The retry topic appears with the first give-back: looked for every second at
                // first, then (through name servers, each look a route request) every ten.
                let retryEvery: Duration = pull.cluster.isRouted && clock.now - started > .seconds(10) ? .seconds(10) : .seconds(1)
                if retry == nil, pull.mode == .clustering, clock.now - lastRetryCheck > retryEvery {
                    lastRetryCheck = clock.now
                    let candidate = PullConsumer(cluster: pull.cluster, group: pull.group, topic: "%RETRY%\(pull.group)", clientID: pull.clientID)
                    if (try? await candidate.start()) != nil {
                        state.withLockedValue { $0.retry = candidate }
                        retry = candidate
                    }
                }
                var batch = try await pull.poll(waitMillis: retry == nil ? 500 : 200)
                if let retry { batch += try await retry.poll(waitMillis: 0) }
                for (k, m) in batch.enumerated() where !(await handle(m)) {
                    // Stopped before settling these: move back so that they are not committed.
                    for rest in batch[k...] {
                        let consumer = rest.topic == pull.topic ? pull : retry
                        let q = QueueRef(topic: rest.topic, queueID: rest.queueID)
                        let same = batch[k...].filter { $0.topic == rest.topic && $0.queueID == rest.queueID && $0.brokerGroup == rest.brokerGroup }
                        if let c = consumer, let at = same.map(\.queueOffset).min() {
                            c.seek(q, to: at, brokerGroup: rest.brokerGroup)
                        }
                    }
                    return
                }
                if clock.now - lastCommit > .seconds(1) {
                    try await pull.commit()
                    try await retry?.commit()
                    lastCommit = clock.now
                }
            } catch is CancellationError {
                break
            } catch {
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Runs the listener; a failure is given back (or retried in place when broadcasting).
    /// False when cancelled before the message was settled.
    private func handle(_ m: ReceivedMessage) async -> Bool {
        var attempt = 0
        while !Task.isCancelled {
            let result = (try? await listener(m)) ?? .retryLater
            if case .success = result { return true }
            if pull.mode == .broadcasting {
                attempt += 1
                if attempt > maxReconsumeTimes { return true }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            let times = Int(m.message.properties[RetryProperty.reconsumeTimes] ?? "0") ?? 0
            let delay = retryDelaysMillis[min(times, retryDelaysMillis.count - 1)]
            let request = SendBackRequest(group: pull.group, id: m.id, delayMillis: delay, maxReconsumeTimes: UInt32(maxReconsumeTimes))
            if (try? await pull.cluster.groupCall(m.brokerGroup, .sendBack, request.encoded())) != nil { return true }
            try? await Task.sleep(for: .seconds(1))  // not given back: keep it, try again
        }
        return false
    }

    /// Stops after the message in hand, commits and leaves the group.
    public func shutdown() async {
        let (t, retry) = state.withLockedValue { ($0.task, $0.retry) }
        t?.cancel()
        await t?.value
        await pull.shutdown()
        await retry?.shutdown()
    }
}
