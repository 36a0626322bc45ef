// Receive/ack consumption (RocketMQ 5's SimpleConsumer): no queues to own, no offsets to
// commit. Each receive takes messages that stay invisible to the group for a while; the
// application acknowledges each by its receipt handle when done. One it does not acknowledge
// in time is received again (by any member), with its attempt counted up.
import TernProtocol

/// A message received with a receipt handle.
public struct Delivery: Sendable, Equatable {
    public var message: ReceivedMessage
    public var handle: ReceiptHandle
    /// When it becomes visible again unless acknowledged (the leader's clock, ms since 1970).
    public var invisibleUntil: UInt64
    /// 1 for the first delivery, 2 for the next, ...
    public var attempt: UInt32
}

/// ```swift
/// let consumer = SimpleConsumer(cluster: cluster, group: "shipping", topic: "orders")
/// for d in try await consumer.receive(max: 16, invisibleMillis: 30_000) {
///     try await ship(d.message)
///     try await consumer.ack(d)
/// }
/// ```
///
/// The invisible times are replicated: a leader failover neither makes an invisible message
/// visible early nor forgets an acknowledgement. An acknowledgement whose message was
/// received again since (its invisible time ended) is refused (`receiptExpired`): the other
/// delivery owns it now.
public final class SimpleConsumer: Sendable {
    public let cluster: TernCluster
    public let group: String
    public let topic: String
    public let tagFilter: String

    public init(cluster: TernCluster, group: String, topic: String, tagFilter: String = "*") {
        self.cluster = cluster
        self.group = group
        self.topic = topic
        self.tagFilter = tagFilter
    }

    /// Up to `max` messages, invisible to the group for `invisibleMillis`. Waits up to
    /// `waitMillis` for one when none is there.
    public func receive(max: UInt32 = 16, invisibleMillis: UInt64 = 30_000, waitMillis: UInt32 = 0) async throws -> [Delivery] {
        let request = ReceiveRequest(
            group: group, topic: topic, tagFilter: tagFilter, maxMessages: max, invisibleMillis: invisibleMillis, maxWaitMillis: waitMillis)
        let body = try await cluster.leaderCall(.receive, request.encoded(), timeoutMillis: cluster.options.requestTimeoutMillis + Int64(waitMillis))
        return try ReceiveResponse.decode(body).deliveries.map {
            Delivery(message: $0.message, handle: $0.handle, invisibleUntil: $0.invisibleUntil, attempt: $0.attempt)
        }
    }

    /// The message is consumed: it is not delivered to the group again.
    public func ack(_ d: Delivery) async throws { try await ack(d.handle) }

    public func ack(_ handle: ReceiptHandle) async throws {
        _ = try await cluster.leaderCall(.ack, ReceiptRequest(group: group, handle: handle).encoded())
    }

    /// Keeps the message invisible for `invisibleMillis` from now (longer or shorter); returns
    /// the new time it becomes visible.
    @discardableResult
    public func changeInvisible(_ handle: ReceiptHandle, invisibleMillis: UInt64) async throws -> UInt64 {
        let body = try await cluster.leaderCall(.changeInvisible, ReceiptRequest(group: group, handle: handle, invisibleMillis: invisibleMillis).encoded())
        return try ChangeInvisibleResponse.decode(body).invisibleUntil
    }
}
