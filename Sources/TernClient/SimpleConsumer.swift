// Receive/ack consumption (RocketMQ 5's SimpleConsumer): no queues to own, no offsets to
// commit. Each receive takes messages that stay invisible to the group for a while; the
// application acknowledges each by its receipt handle when done. One it does not acknowledge
// in time is received again (by any member), with its attempt counted up.
import NIOConcurrencyHelpers
import TernProtocol

/// A message received with a receipt handle.
public struct Delivery: Sendable, Equatable {
    public var message: ReceivedMessage
    public var handle: ReceiptHandle
    /// When it becomes visible again unless acknowledged (the leader's clock, ms since 1970).
    public var invisibleUntil: UInt64
    /// 1 for the first delivery, 2 for the next, ...
    public var attempt: UInt32
    /// The handle with its broker group, as `tern receive` prints it (`g2/orders:3:17:42`).
    public var groupHandle: GroupReceiptHandle { GroupReceiptHandle(group: message.brokerGroup.isEmpty ? nil : message.brokerGroup, handle: handle) }
}

/// A receipt handle that names its broker group: `g2/orders:3:17:42` (a bare handle: the
/// group of a single-group client).
public struct GroupReceiptHandle: Hashable, Sendable, CustomStringConvertible {
    public var group: String?
    public var handle: ReceiptHandle
    public init(group: String?, handle: ReceiptHandle) {
        self.group = group
        self.handle = handle
    }
    public init?(_ text: String) {
        // Topic names hold no '/', so the first one ends the group's name.
        if let slash = text.firstIndex(of: "/") {
            let g = String(text[..<slash])
            guard BrokerGroupName.problem(g) == nil, let h = ReceiptHandle(String(text[text.index(after: slash)...])) else { return nil }
            self.init(group: g, handle: h)
        } else {
            guard let h = ReceiptHandle(text) else { return nil }
            self.init(group: nil, handle: h)
        }
    }
    public var description: String { group.map { "\($0)/\(handle)" } ?? handle.description }
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
    /// Through name servers: receives on every group holding the topic at once; what a group
    /// answers after another group's answer was returned waits here for the next receive.
    private let fanIn = NIOLockedValueBox<(inflight: Set<String>, stash: [Delivery], waiter: CheckedContinuation<Void, Never>?, signaled: Bool)>(
        ([], [], nil, false))

    public init(cluster: TernCluster, group: String, topic: String, tagFilter: String = "*") {
        self.cluster = cluster
        self.group = group
        self.topic = topic
        self.tagFilter = tagFilter
    }

    /// Up to `max` messages, invisible to the group for `invisibleMillis`. Waits up to
    /// `waitMillis` for one when none is there.
    public func receive(max: UInt32 = 16, invisibleMillis: UInt64 = 30_000, waitMillis: UInt32 = 0) async throws -> [Delivery] {
        if let router = cluster.router { return try await receiveRouted(router, max: max, invisibleMillis: invisibleMillis, waitMillis: waitMillis) }
        return try await receive(from: cluster, max: max, invisibleMillis: invisibleMillis, waitMillis: waitMillis)
    }

    private func receive(from target: TernCluster, max: UInt32, invisibleMillis: UInt64, waitMillis: UInt32) async throws -> [Delivery] {
        let request = ReceiveRequest(
            group: group, topic: topic, tagFilter: tagFilter, maxMessages: max, invisibleMillis: invisibleMillis, maxWaitMillis: waitMillis)
        let body = try await target.leaderCall(.receive, request.encoded(), timeoutMillis: target.options.requestTimeoutMillis + Int64(waitMillis))
        return try ReceiveResponse.decode(body).deliveries.map {
            var m = $0.message
            m.brokerGroup = target.brokerGroup ?? ""
            return Delivery(message: m, handle: $0.handle, invisibleUntil: $0.invisibleUntil, attempt: $0.attempt)
        }
    }

    private func receiveRouted(_ router: Router, max: UInt32, invisibleMillis: UInt64, waitMillis: UInt32) async throws -> [Delivery] {
        let route = try await router.route(topic)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(waitMillis))
        var first = true
        let errors = NIOLockedValueBox<[String: Error]>([:])
        while true {
            let stashed = fanIn.withLockedValue { f -> [Delivery] in
                defer { f.stash = [] }
                return f.stash
            }
            if !stashed.isEmpty { return stashed }
            let past = clock.now >= deadline
            if first || !past {
                let d = deadline - clock.now
                let left = UInt32(Swift.max(0, d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000))
                let launch = fanIn.withLockedValue { f -> [GroupRoute] in
                    let idle = route.groups.filter { !f.inflight.contains($0.group) }
                    f.inflight.formUnion(idle.map(\.group))
                    return idle
                }
                for g in launch {
                    let target = router.cluster(g)
                    Task {
                        let got: [Delivery]
                        do {
                            got = try await self.receive(from: target, max: max, invisibleMillis: invisibleMillis, waitMillis: left)
                        } catch {
                            got = []
                            errors.withLockedValue { $0[g.group] = error }
                        }
                        let waiter = self.fanIn.withLockedValue { f -> CheckedContinuation<Void, Never>? in
                            f.inflight.remove(g.group)
                            f.stash += got
                            defer { f.waiter = nil }
                            if f.waiter == nil { f.signaled = true }
                            return f.waiter
                        }
                        waiter?.resume()
                    }
                }
            }
            first = false
            if past && fanIn.withLockedValue({ $0.inflight.isEmpty && $0.stash.isEmpty }) {
                // A group that fails is the caller's business only when every group failed.
                let failed = errors.withLockedValue { $0 }
                if failed.count == route.groups.count, let e = failed.values.first { throw e }
                return []
            }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = fanIn.withLockedValue { f -> Bool in
                    if f.signaled || f.inflight.isEmpty {
                        f.signaled = false
                        return true
                    }
                    f.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        }
    }

    /// The message is consumed: it is not delivered to the group again.
    public func ack(_ d: Delivery) async throws { try await ack(d.groupHandle) }

    public func ack(_ handle: ReceiptHandle) async throws { try await ack(GroupReceiptHandle(group: nil, handle: handle)) }

    /// Through name servers the handle names its group (a bare one is refused there).
    public func ack(_ handle: GroupReceiptHandle) async throws {
        _ = try await cluster.groupCall(try groupOf(handle), .ack, ReceiptRequest(group: group, handle: handle.handle).encoded())
    }

    /// Keeps the message invisible for `invisibleMillis` from now (longer or shorter); returns
    /// the new time it becomes visible.
    @discardableResult
    public func changeInvisible(_ handle: ReceiptHandle, invisibleMillis: UInt64) async throws -> UInt64 {
        try await changeInvisible(GroupReceiptHandle(group: nil, handle: handle), invisibleMillis: invisibleMillis)
    }

    @discardableResult
    public func changeInvisible(_ handle: GroupReceiptHandle, invisibleMillis: UInt64) async throws -> UInt64 {
        let request = ReceiptRequest(group: group, handle: handle.handle, invisibleMillis: invisibleMillis)
        return try ChangeInvisibleResponse.decode(try await cluster.groupCall(try groupOf(handle), .changeInvisible, request.encoded())).invisibleUntil
    }

    private func groupOf(_ handle: GroupReceiptHandle) throws -> String {
        guard cluster.router != nil else { return "" }
        guard let g = handle.group else {
            throw ClientError.invalidArgument("receipt handle \(handle) names no broker group (g2/topic:queue:offset:index) and this client routes over many")
        }
        return g
    }
}
