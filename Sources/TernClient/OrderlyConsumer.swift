// Orderly consumption: one member of a group processes a queue at a time, one message at a
// time, holding a lock (a lease) from the leader.
import NIOConcurrencyHelpers
import NIOCore
import TernProtocol

/// Processes the messages of each queue strictly in order: the next message of a queue is
/// handed to the listener only after the previous one succeeded (or went to the dead-letter
/// queue). Messages sent with the same sharding key share a queue, so their order holds.
///
/// ```swift
/// let consumer = OrderlyConsumer(cluster: cluster, group: "ledger", topic: "payments") { m in
///     try await apply(m) ? .success : .retryLater    // retried in place, order kept
/// }
/// try await consumer.start()
/// ```
///
/// A queue is processed only while this member holds its lock from the leader. Locks are leases
/// (3 s by default), renewed every second; a new leader grants none until every lock its
/// predecessor could have granted has run out, and this member stops processing a queue half a
/// second before its lease (as measured from when it asked) ends, so two members never process
/// one queue at once, across rebalances and failovers. A message that keeps failing is retried
/// in place `maxReconsumeTimes` times, then sent to `%DLQ%<group>` and the queue moves on.
public final class OrderlyConsumer: Sendable {
    public typealias Listener = @Sendable (ReceivedMessage) async throws -> ConsumeResult
    public let cluster: TernCluster
    public let group: String
    public let topic: String
    public let tagFilter: String
    public let sqlFilter: String
    public let clientID: String
    public let maxReconsumeTimes: Int
    public let retryIntervalMillis: Int64
    let listener: Listener

    struct Held {
        var position: UInt64
        var leaseEnd: ContinuousClock.Instant
    }
    struct State {
        var held: [QueueRef: Held] = [:]
        var committed: [QueueRef: UInt64] = [:]
        var task: Task<Void, Never>?
        /// Messages sent to the dead-letter queue.
        var deadLettered = 0
    }
    private let state = NIOLockedValueBox(State())
    /// Through name servers: one orderly consumer per broker group holding the topic (a queue
    /// and its order live in one group), and the task that joins groups the topic spreads onto.
    private let parts = NIOLockedValueBox<(byGroup: [String: OrderlyConsumer], follow: Task<Void, Never>?)>(([:], nil))

    public init(
        cluster: TernCluster, group: String, topic: String, tagFilter: String = "*", sqlFilter: String = "", clientID: String? = nil,
        maxReconsumeTimes: Int = 16, retryIntervalMillis: Int64 = 1000, listener: @escaping Listener
    ) {
        self.cluster = cluster
        self.group = group
        self.topic = topic
        self.tagFilter = tagFilter
        self.sqlFilter = sqlFilter
        self.clientID = clientID ?? PullConsumer.defaultClientID()
        self.maxReconsumeTimes = maxReconsumeTimes
        self.retryIntervalMillis = retryIntervalMillis
        self.listener = listener
    }

    /// Messages this member sent to the dead-letter queue.
    public var deadLettered: Int {
        state.withLockedValue { $0.deadLettered } + parts.withLockedValue { $0.byGroup.values.reduce(0) { $0 + $1.deadLettered } }
    }

    public func start() async throws {
        if let router = cluster.router {
            try await join(router.route(topic, fresh: true), router)
            let t = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(10))
                    if let route = try? await router.route(self.topic) { try? await self.join(route, router) }
                }
            }
            parts.withLockedValue { $0.follow = t }
            return
        }
        _ = try await cluster.queues(of: topic)
        try await refresh()
        let t = Task { await self.run() }
        state.withLockedValue { $0.task = t }
    }

    private func join(_ route: TopicRoute, _ router: Router) async throws {
        for g in route.groups where parts.withLockedValue({ $0.byGroup[g.group] == nil }) {
            let part = OrderlyConsumer(
                cluster: router.cluster(g), group: group, topic: topic, tagFilter: tagFilter, sqlFilter: sqlFilter, clientID: clientID,
                maxReconsumeTimes: maxReconsumeTimes, retryIntervalMillis: retryIntervalMillis, listener: listener)
            try await part.start()
            parts.withLockedValue { $0.byGroup[g.group] = part }
        }
    }

    /// Stops after the message in hand, commits, unlocks and leaves the group.
    public func shutdown() async {
        if cluster.isRouted {
            let (all, follow) = parts.withLockedValue { ($0.byGroup.values, $0.follow) }
            follow?.cancel()
            for p in all { await p.shutdown() }
            return
        }
        let t = state.withLockedValue { $0.task }
        t?.cancel()
        await t?.value
        try? await commit()
        let queues = state.withLockedValue { s -> [QueueRef] in
            let q = Array(s.held.keys)
            s.held = [:]
            return q
        }
        _ = try? await cluster.leaderCall(.unlockQueues, LockRequest(group: group, clientID: clientID, queues: queues).encoded(), timeoutMillis: 1000)
        _ = try? await cluster.leaderCall(.unregister, UnregisterRequest(group: group, clientID: clientID).encoded(), timeoutMillis: 1000)
    }

    /// Heartbeat (assignment), then lock what is assigned; queues no longer held are committed
    /// and dropped, queues newly held start at the group's committed offset.
    func refresh() async throws {
        let hb = HeartbeatRequest(group: group, clientID: clientID, mode: .clustering, topics: [topic], sqlFilter: sqlFilter)
        let assigned = try HeartbeatResponse.decode(try await cluster.leaderCall(.heartbeat, hb.encoded())).assigned
        let asked = ContinuousClock().now
        let response = try LockResponse.decode(
            try await cluster.leaderCall(.lockQueues, LockRequest(group: group, clientID: clientID, queues: assigned).encoded()))
        // The lease counts from before the request left: never later than the leader's.
        let leaseEnd = asked + .milliseconds(Int64(response.leaseMillis) - 500)
        let lost = state.withLockedValue { s in Set(s.held.keys).subtracting(response.locked) }
        if !lost.isEmpty {
            try? await commit()
            state.withLockedValue { s in for q in lost { s.held[q] = nil } }
            _ = try? await cluster.leaderCall(
                .unlockQueues, LockRequest(group: group, clientID: clientID, queues: lost.sorted()).encoded(), timeoutMillis: 1000)
        }
        for q in response.locked {
            if state.withLockedValue({ $0.held[q] != nil }) {
                state.withLockedValue { $0.held[q]!.leaseEnd = leaseEnd }
                continue
            }
            let r = try QueryOffsetResponse.decode(try await cluster.leaderCall(.queryOffset, QueryOffsetRequest(group: group, queue: q).encoded()))
            let start = r.offset ?? 0
            state.withLockedValue { s in
                s.held[q] = Held(position: start, leaseEnd: leaseEnd)
                s.committed[q] = start
            }
        }
    }

    func commit() async throws {
        let changed = state.withLockedValue { s in
            s.held.filter { s.committed[$0.key] != $0.value.position }.mapValues(\.position)
        }
        guard !changed.isEmpty else { return }
        _ = try await cluster.leaderCall(.commitOffset, CommitOffsetRequest(group: group, offsets: changed).encoded())
        state.withLockedValue { s in for (q, o) in changed { s.committed[q] = o } }
    }

    private func holds(_ q: QueueRef) -> Held? {
        state.withLockedValue { s in s.held[q].flatMap { ContinuousClock().now < $0.leaseEnd ? $0 : nil } }
    }

    private func run() async {
        let clock = ContinuousClock()
        var lastRefresh = clock.now
        var lastCommit = clock.now
        while !Task.isCancelled {
            if clock.now - lastRefresh >= .seconds(1) {
                lastRefresh = clock.now
                try? await refresh()
            }
            if clock.now - lastCommit >= .seconds(1) {
                lastCommit = clock.now
                try? await commit()
            }
            var worked = false
            for q in state.withLockedValue({ $0.held.keys.sorted() }) {
                guard let held = holds(q) else { continue }
                let request = PullRequest(
                    topic: q.topic, queueID: q.queueID, offset: held.position, maxMessages: 16, tagFilter: tagFilter, sqlFilter: sqlFilter)
                guard let r = try? PullResponse.decode(try await cluster.anyCall(.pull, request.encoded())) else { continue }
                if r.messages.isEmpty {
                    if r.nextOffset != held.position { advance(q, from: held.position, to: r.nextOffset) }
                    continue
                }
                worked = true
                for m in r.messages {
                    guard !Task.isCancelled, holds(q) != nil else { break }
                    if await process(m, queue: q) { advance(q, from: m.queueOffset, to: m.queueOffset + 1) } else { break }
                }
            }
            if !worked { try? await Task.sleep(for: .milliseconds(50)) }
        }
    }

    private func advance(_ q: QueueRef, from: UInt64, to: UInt64) {
        state.withLockedValue { s in
            if s.held[q]?.position == from { s.held[q]!.position = to }
        }
    }

    /// Runs the listener until it succeeds or the retries are spent (then the message goes to
    /// the dead-letter queue). False when the lock was lost meanwhile: the queue stops here.
    private func process(_ m: ReceivedMessage, queue q: QueueRef) async -> Bool {
        var attempt = 0
        while true {
            guard holds(q) != nil, !Task.isCancelled else { return false }
            var m = m
            m.brokerGroup = cluster.brokerGroup ?? ""
            let result = (try? await listener(m)) ?? .retryLater
            if case .success = result { return true }
            attempt += 1
            if attempt > maxReconsumeTimes {
                do {
                    try await deadLetter(m, reconsumeTimes: attempt - 1)
                    state.withLockedValue { $0.deadLettered += 1 }
                    return true
                } catch {
                    return false  // not stored in the DLQ: keep the message, try again later
                }
            }
            try? await Task.sleep(for: .milliseconds(retryIntervalMillis))
        }
    }

    private func deadLetter(_ m: ReceivedMessage, reconsumeTimes: Int) async throws {
        let dlq = "%DLQ%\(group)"
        do {
            try await cluster.createTopic(dlq, queues: 1)
        } catch ClientError.broker(let e) where e.code == ErrorCode.topicExists {}
        var props = m.message.properties
        props["ORIGIN_MESSAGE_ID"] = m.id.description
        props["ORIGIN_TOPIC"] = m.topic
        props["RECONSUME_TIMES"] = String(reconsumeTimes)
        props["SHARDING_KEY"] = nil
        let producer = Producer(cluster: cluster, group: "%DLQ%")
        _ = try await producer.send(Message(topic: dlq, tag: m.message.tag, keys: m.message.keys, properties: props, body: m.message.body))
    }
}
