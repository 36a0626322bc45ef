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
    struct FanIn {
        var inflight: Set<String> = []
        var stash: [Delivery] = []
        var waiters: [CheckedContinuation<Void, Never>] = []
        var signaled = false
    }
    private let fanIn = NIOLockedValueBox(FanIn())

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
        // A group that failed in this call is not asked again in it (no tight loop on a group
        // that refuses at once); the call fails only when every group failed.
        let errors = NIOLockedValueBox<[String: Error]>([:])
        while true {
            let nowMillis = UInt64(Duration.nowSinceEpochMillis)
            let stashed = fanIn.withLockedValue { f -> [Delivery] in
                // Deliveries whose invisible time ran out while they waited are dropped: they
                // are another receive's now.
                f.stash.removeAll { $0.invisibleUntil <= nowMillis }
                let n = Swift.min(Int(max), f.stash.count)
                defer { f.stash.removeFirst(n) }
                return Array(f.stash.prefix(n))
            }
            if !stashed.isEmpty { return stashed }
            // After the deadline nothing new starts and a group still answering is not waited for.
            if clock.now >= deadline && !first {
                let failed = errors.withLockedValue { $0 }
                if failed.count == route.groups.count, let e = failed.values.first { throw e }
                return []
            }
            let d = deadline - clock.now
            let left = UInt32(Swift.max(0, d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000))
            let failedNow = errors.withLockedValue { Set($0.keys) }
            let launch = fanIn.withLockedValue { f -> [GroupRoute] in
                let idle = route.groups.filter { !f.inflight.contains($0.group) && !failedNow.contains($0.group) }
                f.inflight.formUnion(idle.map(\.group))
                return idle
            }
            first = false
            for g in launch {
                let target = router.cluster(g)
                Task {
                    let got: [Delivery]
                    do {
                        got = try await self.receive(from: target, max: max, invisibleMillis: invisibleMillis, waitMillis: left)
                    } catch {
                        got = []
                        errors.withLockedValue { $0[g.group] = error }
                        if let e = error as? ClientError, e.code == ErrorCode.topicNotFound { router.forget(self.topic) }
                    }
                    self.wakeFanIn { f in
                        f.inflight.remove(g.group)
                        f.stash += got
                    }
                }
            }
            let allFailed = errors.withLockedValue { $0.count } == route.groups.count && fanIn.withLockedValue { $0.inflight.isEmpty }
            if allFailed, let e = errors.withLockedValue({ $0.values.first }) { throw e }
            let timer = Task {
                try? await Task.sleep(until: deadline, clock: clock)
                self.wakeFanIn { _ in }
            }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = fanIn.withLockedValue { f -> Bool in
                    if f.signaled || f.inflight.isEmpty || clock.now >= deadline {
                        f.signaled = false
                        return true
                    }
                    f.waiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
            timer.cancel()
        }
    }

    private func wakeFanIn(_ change: (inout FanIn) -> Void) {
        let waiters = fanIn.withLockedValue { f -> [CheckedContinuation<Void, Never>] in
            change(&f)
            defer { f.waiters = [] }
            if f.waiters.isEmpty { f.signaled = true }
            return f.waiters
        }
        for w in waiters { w.resume() }
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
