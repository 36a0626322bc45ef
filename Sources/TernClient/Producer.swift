// Producers: pick a queue, send to the leader, retry through failovers without storing twice.
import NIOConcurrencyHelpers
import NIOCore
import TernProtocol

/// A message to send.
///
/// ```swift
/// var m = Message(topic: "orders", body: Array("hello".utf8))
/// m.tag = "created"
/// m.keys = ["order-42"]
/// m.properties["region"] = "eu"
/// ```
public struct Message: Sendable, Equatable {
    public var topic: String
    public var tag: String
    public var keys: [String]
    public var properties: [String: String]
    public var body: [UInt8]

    public init(topic: String, tag: String = "", keys: [String] = [], properties: [String: String] = [:], body: [UInt8]) {
        self.topic = topic
        self.tag = tag
        self.keys = keys
        self.properties = properties
        self.body = body
    }

    /// Messages with the same sharding key (RocketMQ 5's message group) go to the same queue, in
    /// the order they are sent: the producer sends them one at a time. An orderly consumer then
    /// processes them in that order.
    public var shardingKey: String? {
        get { properties["SHARDING_KEY"] }
        set { properties["SHARDING_KEY"] = newValue }
    }

    /// Deliver after one of RocketMQ's delay levels (1: 1 s, 2: 5 s, 3: 10 s, 4: 30 s, 5: 1 min,
    /// ... 18: 2 h), counted from when the leader stores the message.
    public mutating func setDelayLevel(_ level: Int) { properties["DELAY"] = String(level) }

    /// Deliver this many milliseconds after the leader stores the message.
    public mutating func setDelay(milliseconds: UInt64) { properties["TIMER_DELAY_MS"] = String(milliseconds) }

    /// Deliver at this time (milliseconds since 1970, by the leader's clock). At most three days ahead.
    public mutating func setDeliverAt(millisecondsSince1970: UInt64) { properties["TIMER_DELIVER_MS"] = String(millisecondsSince1970) }
}

/// Where an acknowledged message is stored. Acknowledged means: on disk on a quorum of nodes.
///
/// ```swift
/// let r = try await producer.send(Message(topic: "orders", body: bytes))
/// print(r.messageID, r.queue, r.queueOffset)   // e.g. 00000000000001A30000 orders#3 @17
/// ```
public struct SendReceipt: Sendable, Equatable, CustomStringConvertible {
    public var messageID: MessageID
    public var queue: QueueRef
    public var queueOffset: UInt64
    /// The broker had stored this send already (an idempotent retry).
    public var duplicate: Bool
    /// A delayed message: it gets its queue offset (`queueOffset` is 0 here) when released.
    public var scheduled: Bool
    /// The broker group that stored it, when the client routes through name servers ("" otherwise).
    public var brokerGroup = ""
    /// The id with its group (`g2/...`) when the group is known, else the bare id.
    public var groupMessageID: GroupMessageID { GroupMessageID(group: brokerGroup.isEmpty ? nil : brokerGroup, id: messageID) }
    public var description: String {
        let where_ = brokerGroup.isEmpty ? "\(queue)" : "\(brokerGroup):\(queue)"
        return scheduled ? "\(groupMessageID) \(where_) scheduled" : "\(groupMessageID) \(where_) @\(queueOffset)"
    }
}

/// Sends messages to a topic's queues, round robin, through the leader.
///
/// ```swift
/// let cluster = try TernCluster(endpoints: ["127.0.0.1:9001"])
/// let producer = Producer(cluster: cluster, group: "checkout")
/// let receipt = try await producer.send(Message(topic: "orders", body: Array("hi".utf8)))
/// print(receipt.messageID)
/// ```
///
/// Idempotent by default: each send carries this producer's random id and a sequence number
/// per queue, and the broker stores a (producer, queue, sequence) once, so the retries that a
/// failover causes do not duplicate. A send that still fails after `sendTimeoutMillis` throws;
/// sending it again is a new send.
public final class Producer: Sendable {
    public let cluster: TernCluster
    public let group: String
    public let producerID: UInt64
    public let sendTimeoutMillis: Int64
    private let state = NIOLockedValueBox<(rotation: UInt32, sequences: [QueueRef: UInt64])>((0, [:]))
    private let gate = QueueGate()
    /// Through name servers: sequences per group and queue, and groups whose last send failed
    /// without an answer, skipped by new sends until then.
    private let routed = NIOLockedValueBox<(sequences: [String: [QueueRef: UInt64]], avoid: [String: ContinuousClock.Instant])>(([:], [:]))

    public init(cluster: TernCluster, group: String = "DEFAULT_PRODUCER", idempotent: Bool = true, sendTimeoutMillis: Int64 = 5000) {
        self.cluster = cluster
        self.group = group
        var id: UInt64 = 0
        while idempotent && id == 0 { id = UInt64.random(in: 1...UInt64.max) }
        producerID = id
        self.sendTimeoutMillis = sendTimeoutMillis
    }

    /// Sends one message and waits for its acknowledgement.
    public func send(_ message: Message) async throws -> SendReceipt {
        try await send(batch: [message])[0]
    }

    /// Sends messages of one topic as one batch, to one queue: stored together, in order.
    public func send(batch messages: [Message]) async throws -> [SendReceipt] {
        guard let topic = messages.first?.topic else { throw ClientError.invalidArgument("an empty batch") }
        guard messages.allSatisfy({ $0.topic == topic }) else { throw ClientError.invalidArgument("a batch goes to one topic") }
        if let router = cluster.router { return try await sendRouted(messages, topic: topic, globalQueue: nil, router: router) }
        let queues = try await cluster.queues(of: topic)
        if let key = messages[0].shardingKey {
            guard messages.allSatisfy({ $0.shardingKey == key }) else {
                throw ClientError.invalidArgument("a batch with a sharding key carries that key on every message")
            }
            let queue = queueForShardingKey(key, queues: queues)
            let ref = QueueRef(topic: topic, queueID: queue)
            // One send per queue at a time: a retry can then never overtake the next message.
            return try await gate.serially(ref) {
                let sequence = self.state.withLockedValue { s -> UInt64 in
                    s.sequences[ref, default: 0] += 1
                    return self.producerID == 0 ? 0 : s.sequences[ref]!
                }
                return try await self.send(messages, topic: topic, queue: queue, sequence: sequence)
            }
        }
        let (queue, sequence) = state.withLockedValue { s -> (UInt32, UInt64) in
            s.rotation &+= 1
            let q = s.rotation % queues
            let ref = QueueRef(topic: topic, queueID: q)
            s.sequences[ref, default: 0] += 1
            return (q, producerID == 0 ? 0 : s.sequences[ref]!)
        }
        return try await send(messages, topic: topic, queue: queue, sequence: sequence)
    }

    /// Sends to a chosen queue. Through name servers, queues are numbered across the groups
    /// holding the topic, in group name order (g1's 0..<8, then g2's as 8..<16).
    public func send(batch messages: [Message], queue: UInt32) async throws -> [SendReceipt] {
        guard let topic = messages.first?.topic else { throw ClientError.invalidArgument("an empty batch") }
        if let router = cluster.router { return try await sendRouted(messages, topic: topic, globalQueue: queue, router: router) }
        let sequence = state.withLockedValue { s -> UInt64 in
            let ref = QueueRef(topic: topic, queueID: queue)
            s.sequences[ref, default: 0] += 1
            return producerID == 0 ? 0 : s.sequences[ref]!
        }
        return try await send(messages, topic: topic, queue: queue, sequence: sequence)
    }

    /// Through name servers: the queue (one numbered across the groups, or the next in turn, or
    /// the sharding key's), sent to its group, whose client fails over within the group.
    private func sendRouted(_ messages: [Message], topic: String, globalQueue: UInt32?, router: Router) async throws -> [SendReceipt] {
        let route = try await router.route(topic)
        let total = route.totalQueues
        guard total > 0 else { throw ClientError.broker(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(topic) has no queues in any group")) }
        if let q = globalQueue, q >= total {
            throw ClientError.broker(
                ErrorBody(code: ErrorCode.queueNotFound, message: "topic \(topic) has \(total) queues over its groups; queue \(q) does not exist"))
        }
        let key = messages[0].shardingKey
        if let key, !messages.allSatisfy({ $0.shardingKey == key }) {
            throw ClientError.invalidArgument("a batch with a sharding key carries that key on every message")
        }
        let clock = ContinuousClock()
        let avoid = routed.withLockedValue { r in r.avoid.filter { $0.value > clock.now }.map(\.key) }
        // A send its client may retry with the same id (a RocketMQ client's UNIQ_KEY, through the
        // gRPC front) goes to the id's queue, so that a retry reaches the group whose window
        // stores it once; it goes elsewhere only while that group is avoided (it did not answer).
        let id = messages.count == 1 ? messages[0].properties[DedupeProperty.clientMessageID] ?? "" : ""
        let pinned = id.isEmpty ? nil : queueForShardingKey(id, queues: total)
        let global: UInt32
        if let q = globalQueue {
            global = q
        } else if let key {
            global = queueForShardingKey(key, queues: total)
        } else if let q = pinned, !avoid.contains(Self.locate(q, in: route).0.group) {
            global = q
        } else {
            global = state.withLockedValue { s -> UInt32 in
                for _ in 0..<total {
                    s.rotation &+= 1
                    let q = s.rotation % total
                    if !avoid.contains(Self.locate(q, in: route).0.group) { return q }
                }
                return s.rotation % total  // every group is avoided: try anyway
            }
        }
        let (target, local) = Self.locate(global, in: route)
        let child = router.cluster(target)
        let ref = QueueRef(topic: topic, queueID: local)
        let attempt = { @Sendable () async throws -> [SendReceipt] in
            let sequence = self.routed.withLockedValue { r -> UInt64 in
                r.sequences[target.group, default: [:]][ref, default: 0] += 1
                return self.producerID == 0 ? 0 : r.sequences[target.group]![ref]!
            }
            do {
                // (Planted: a send waits 1 s in its group before going elsewhere.)
                let wait = self.cluster.options.plantRetryOtherGroup ? 1000 : self.sendTimeoutMillis
                var receipts = try await self.send(messages, topic: topic, queue: local, sequence: sequence, via: child, timeoutMillis: wait)
                for k in receipts.indices { receipts[k].brokerGroup = target.group }
                return receipts
            } catch ClientError.broker(let e) where e.code == ErrorCode.topicNotFound || e.code == ErrorCode.queueNotFound {
                router.forget(topic)
                throw ClientError.broker(e)
            } catch let e as ClientError {
                if case .broker = e {} else { self.routed.withLockedValue { $0.avoid[target.group] = clock.now + .seconds(10) } }
                if case .broker = e {
                } else if self.cluster.options.plantRetryOtherGroup, let other = route.groups.first(where: { $0.group != target.group }) {
                    // Planted: the same message again, in another group (stored twice when the first landed).
                    var receipts = try await self.send(messages, topic: topic, queue: 0, sequence: 0, via: router.cluster(other))
                    for k in receipts.indices { receipts[k].brokerGroup = other.group }
                    return receipts
                }
                throw e
            }
        }
        return key == nil ? try await attempt() : try await gate.serially(QueueRef(topic: "\(target.group)/\(topic)", queueID: local), attempt)
    }

    /// The group and its local queue id of queue `global` numbered across `route`'s groups.
    static func locate(_ global: UInt32, in route: TopicRoute) -> (GroupRoute, UInt32) {
        var q = global
        for g in route.groups {
            if q < g.queues { return (g, q) }
            q -= g.queues
        }
        preconditionFailure("queue \(global) beyond the route's \(route.totalQueues) queues")
    }

    private func send(
        _ messages: [Message], topic: String, queue: UInt32, sequence: UInt64, via: TernCluster? = nil, timeoutMillis: Int64? = nil
    ) async throws
        -> [SendReceipt]
    {
        let now = UInt64(Int64(Duration.nowSinceEpochMillis))
        let request = SendRequest(
            topic: topic, queueID: queue, producerGroup: group, producerID: producerID, sequence: sequence,
            messages: messages.map { WireMessage(tag: $0.tag, keys: $0.keys, properties: $0.properties, bornTimestamp: now, body: $0.body) })
        let body: [UInt8]
        let target = via ?? cluster
        do {
            body = try await target.leaderCall(.send, request.encoded(), timeoutMillis: timeoutMillis ?? sendTimeoutMillis)
        } catch ClientError.broker(let e) where e.code == ErrorCode.topicNotFound || e.code == ErrorCode.queueNotFound {
            target.forgetRoute(topic)
            throw ClientError.broker(e)
        }
        let r = try SendResponse.decode(body)
        return (0..<Int(r.count)).map { i in
            let scheduled = r.firstQueueOffset == SendResponse.scheduled
            return SendReceipt(
                messageID: MessageID(entryIndex: r.entryIndex, slot: UInt16(i)), queue: QueueRef(topic: topic, queueID: r.queueID),
                queueOffset: scheduled ? 0 : r.firstQueueOffset + UInt64(i), duplicate: r.duplicate, scheduled: scheduled)
        }
    }

    /// Sends without waiting; `completion` gets the outcome.
    public func send(_ message: Message, completion: @escaping @Sendable (Result<SendReceipt, Error>) -> Void) {
        Task {
            do { completion(.success(try await send(message))) } catch { completion(.failure(error)) }
        }
    }

    /// Sends and forgets: no acknowledgement is awaited or reported (RocketMQ's one-way).
    public func sendOneWay(_ message: Message) {
        Task { _ = try? await send(message) }
    }
}

extension Duration {
    /// Wall clock, milliseconds since 1970 (for born timestamps).
    static var nowSinceEpochMillis: Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs one operation per queue at a time, in arrival order.
actor QueueGate {
    private var busy: Set<QueueRef> = []
    private var waiting: [QueueRef: [CheckedContinuation<Void, Never>]] = [:]

    func serially<T: Sendable>(_ q: QueueRef, _ body: @Sendable () async throws -> T) async throws -> T {
        if busy.contains(q) {
            await withCheckedContinuation { waiting[q, default: []].append($0) }
        } else {
            busy.insert(q)
        }
        defer { hand(q) }
        return try await body()
    }

    private func hand(_ q: QueueRef) {
        if var list = waiting[q], !list.isEmpty {
            let next = list.removeFirst()
            waiting[q] = list.isEmpty ? nil : list
            next.resume()  // the queue stays busy: handed over
        } else {
            busy.remove(q)
        }
    }
}
