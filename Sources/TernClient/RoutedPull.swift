// A consumer across broker groups (docs/architecture.md, "Many groups"): one `PullConsumer` per
// group that holds the topic, each a member of the consumer group in that group, where that
// group's leader assigns its own queues among the members heartbeating to it. Polls run on every
// part at once; what a part returns waits here until a poll hands it out, and only then does that
// part's offset to commit move past it, so a message is committed only once it was handed out.
import NIOConcurrencyHelpers
import TernProtocol

final class RoutedPull: Sendable {
    let router: Router
    let group: String
    let topic: String
    let tagFilter: String
    let sqlFilter: String
    let mode: ConsumeMode
    let clientID: String
    let consumeFrom: ConsumeFrom

    struct Pending {
        var group: String
        var messages: [ReceivedMessage]
        var moved: [(QueueRef, UInt64, UInt64)]
    }
    struct State {
        var parts: [String: PullConsumer] = [:]
        var inflight: Set<String> = []
        var pending: [Pending] = []
        var failures: [String: Error] = [:]
        /// Every caller waiting for a part's answer (a poll, a shutdown): all are woken.
        var waiters: [CheckedContinuation<Void, Never>] = []
        var signaled = false
        var lastRouteCheck: ContinuousClock.Instant?
        var closed = false
    }
    private let state = NIOLockedValueBox(State())
    static let routeCheck: Duration = .seconds(10)

    init(
        router: Router, group: String, topic: String, tagFilter: String, sqlFilter: String, mode: ConsumeMode, clientID: String, consumeFrom: ConsumeFrom
    ) {
        self.router = router
        self.group = group
        self.topic = topic
        self.tagFilter = tagFilter
        self.sqlFilter = sqlFilter
        self.mode = mode
        self.clientID = clientID
        self.consumeFrom = consumeFrom
    }

    var assignment: [(group: String, queues: [QueueRef])] {
        let parts = state.withLockedValue { $0.parts }
        return parts.keys.sorted().map { ($0, parts[$0]!.assignment) }
    }

    func start() async throws {
        let route = try await router.route(topic, fresh: true)
        try await join(route)
        state.withLockedValue { $0.lastRouteCheck = ContinuousClock().now }
    }

    /// Starts a part in every group of `route` that has none yet.
    private func join(_ route: TopicRoute) async throws {
        for g in route.groups where state.withLockedValue({ $0.parts[g.group] == nil }) {
            let part = PullConsumer(
                cluster: router.cluster(g), group: group, topic: topic, tagFilter: tagFilter, sqlFilter: sqlFilter, mode: mode, clientID: clientID,
                consumeFrom: consumeFrom, holdConsumed: true)
            try await part.start()
            state.withLockedValue { $0.parts[g.group] = part }
        }
    }

    /// Every `routeCheck`: joins groups the topic has spread onto since.
    private func followRoute() async {
        let clock = ContinuousClock()
        let due = state.withLockedValue { s -> Bool in
            guard s.lastRouteCheck.map({ clock.now - $0 >= Self.routeCheck }) ?? true else { return false }
            s.lastRouteCheck = clock.now
            return true
        }
        if due, let route = try? await router.route(topic) { try? await join(route) }
    }

    func heartbeat() async throws {
        await followRoute()
        for part in state.withLockedValue({ Array($0.parts.values) }) { try await part.heartbeat() }
    }

    func poll(maxMessages: Int, waitMillis: UInt32) async throws -> [ReceivedMessage] {
        if state.withLockedValue({ $0.closed }) { return [] }
        await followRoute()
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int64(waitMillis))
        var failedNow: Set<String> = []
        var first = true
        while true {
            if let batch = takePending(max: maxMessages) { return batch }
            let parts = state.withLockedValue { $0.parts }
            // After the deadline nothing new starts, and the polls still in flight (a group that
            // does not answer) are not waited for: what they return waits for the next poll.
            if clock.now >= deadline && !first { return [] }
            let launch = state.withLockedValue { s -> [String] in
                // Not a part whose last answer is still unhanded: its next poll may heartbeat and
                // commit on a rebalance, and must find that answer settled.
                let unhanded = Set(s.pending.map(\.group))
                let idle = parts.keys.filter { !s.inflight.contains($0) && !failedNow.contains($0) && !unhanded.contains($0) }.sorted()
                s.inflight.formUnion(idle)
                return idle
            }
            first = false
            let d = deadline - clock.now
            let left = max(0, d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
            for name in launch {
                let part = parts[name]!
                Task { await self.run(part, name: name, max: maxMessages, wait: UInt32(left)) }
            }
            let (errors, busy) = state.withLockedValue { s in (s.failures, !s.inflight.isEmpty) }
            failedNow.formUnion(errors.keys)
            if !busy && failedNow.count == parts.count, let firstError = errors.keys.sorted().first.flatMap({ errors[$0] }) {
                state.withLockedValue { $0.failures = [:] }
                throw firstError
            }
            await waitForPart(until: deadline)
        }
    }

    private func run(_ part: PullConsumer, name: String, max: Int, wait: UInt32) async {
        let result: Result<(messages: [ReceivedMessage], moved: [(QueueRef, UInt64, UInt64)]), Error>
        do {
            result = .success(try await part.pollBatch(maxMessages: max, waitMillis: wait))
        } catch {
            result = .failure(error)
        }
        wake { s in
            s.inflight.remove(name)
            switch result {
            case .success(let got):
                s.failures[name] = nil
                var messages = got.messages
                for k in messages.indices { messages[k].brokerGroup = name }
                s.pending.append(Pending(group: name, messages: messages, moved: got.moved))
            case .failure(let e):
                s.failures[name] = e
            }
        }
    }

    /// Changes the state and wakes every waiter (or leaves a signal for the next one).
    private func wake(_ change: (inout State) -> Void) {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            change(&s)
            defer { s.waiters = [] }
            if s.waiters.isEmpty { s.signaled = true }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Until a part answers, or `until` passes (then the caller looks again).
    private func waitForPart(until: ContinuousClock.Instant) async {
        let timer = Task {
            try? await Task.sleep(until: until, clock: ContinuousClock())
            self.wake { _ in }
        }
        defer { timer.cancel() }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { s -> Bool in
                if s.signaled || s.inflight.isEmpty || ContinuousClock().now >= until {
                    s.signaled = false
                    return true
                }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Hands out what the parts returned, whole answers up to `max` messages (empty pulls
    /// settle their offsets only); nil when there is no message among it.
    private func takePending(max: Int) -> [ReceivedMessage]? {
        let (taken, parts) = state.withLockedValue { s -> ([Pending], [String: PullConsumer]) in
            var count = 0
            var k = 0
            while k < s.pending.count && (count == 0 || count + s.pending[k].messages.count <= max) {
                count += s.pending[k].messages.count
                k += 1
            }
            defer { s.pending.removeFirst(k) }
            return (Array(s.pending[..<k]), s.parts)
        }
        for p in taken {
            for (q, from, to) in p.moved { parts[p.group]?.settle(q, from: from, to: to) }
        }
        let messages = taken.flatMap(\.messages)
        return messages.isEmpty ? nil : messages
    }

    /// Moves a queue of one group back; answers waiting to be handed out from that queue go
    /// (they come again from the new position).
    func seek(_ q: QueueRef, to offset: UInt64, brokerGroup: String) {
        let part = state.withLockedValue { s -> PullConsumer? in
            for k in s.pending.indices where s.pending[k].group == brokerGroup {
                s.pending[k].messages.removeAll { $0.topic == q.topic && $0.queueID == q.queueID }
                s.pending[k].moved.removeAll { $0.0 == q }
            }
            return s.parts[brokerGroup]
        }
        part?.seek(q, to: offset)
    }

    func commit() async throws {
        var firstError: Error?
        for part in state.withLockedValue({ Array($0.parts.values) }) {
            do { try await part.commit() } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }

    /// Waits for the polls in flight (what they got is not handed out, so not committed), then
    /// commits and leaves the group in every broker group.
    func shutdown() async {
        state.withLockedValue { $0.closed = true }
        while state.withLockedValue({ !$0.inflight.isEmpty }) { await waitForPart(until: ContinuousClock().now + .milliseconds(200)) }
        let parts = state.withLockedValue { s -> [PullConsumer] in
            s.pending = []
            return Array(s.parts.values)
        }
        for part in parts { await part.shutdown() }
    }
}
