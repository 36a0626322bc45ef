// Admin calls through name servers (docs/architecture.md, "Many groups"): a topic's queues are
// spread over broker groups, so creating, growing, listing and looking up go to each group that
// holds (or is to hold) the topic. Nothing is atomic across groups; every step is idempotent, so
// a create or update that failed part way is completed by running it again.
import TernProtocol

/// How a topic's queues lie over the broker groups.
public struct TopicPlacement: Sendable, Equatable, CustomStringConvertible {
    public var group: String
    public var queues: UInt32
    public init(group: String, queues: UInt32) {
        self.group = group
        self.queues = queues
    }
    public var description: String { "\(group):\(queues)" }
}

/// `queues` over `groups` (sorted by name): each gets queues / n, and the first queues % n one more.
public func spreadQueues(_ queues: UInt32, over groups: [String]) -> [TopicPlacement] {
    let sorted = groups.sorted()
    let n = UInt32(sorted.count)
    guard n > 0 else { return [] }
    return sorted.enumerated().map { k, g in TopicPlacement(group: g, queues: queues / n + (UInt32(k) < queues % n ? 1 : 0)) }
}

extension TernCluster {
    /// Through name servers: the client of one broker group (for what concerns one group: its
    /// members, leadership, snapshots). Shut down with this client.
    public func brokerGroup(_ name: String) async throws -> TernCluster {
        guard let router else { throw ClientError.invalidArgument("a broker group is picked among the groups behind name servers") }
        return try await router.cluster(named: name)
    }

    /// Through name servers: the broker groups holding `topic` and their queue counts (the route
    /// this client holds, refreshed in the background as for its sends).
    public func topicRoute(_ topic: String) async throws -> TopicRoute {
        guard let router else { throw ClientError.invalidArgument("a topic's route across broker groups comes from name servers") }
        return try await router.route(topic)
    }

    /// Through name servers: the names of the live broker groups, in name order.
    public func brokerGroupNames() async throws -> [String] {
        guard let router else { throw ClientError.invalidArgument("broker groups are listed by name servers") }
        return try await router.liveGroups().map(\.group)
    }

    /// Through name servers: makes the client of group `name` from `endpoints` now, unless one
    /// is held (a node's own group, reached without waiting for a name server's answer).
    public func knowBrokerGroup(_ name: String, endpoints: [String]) {
        guard let router else { return }
        _ = router.cluster(
            GroupRoute(group: name, queues: 0, type: .mixed, leader: "", term: 0, members: endpoints.map { GroupMember(id: "", endpoint: $0) }))
    }

    /// A request to the leader of `group` (through name servers), or of this group (without).
    func groupCall(_ group: String, _ op: Opcode, _ body: [UInt8]) async throws -> [UInt8] {
        guard let router, !group.isEmpty else { return try await leaderCall(op, body) }
        return try await router.cluster(named: group).leaderCall(op, body)
    }

    /// The groups named, checked against the live ones; nil or empty: every live group.
    func chosenGroups(_ router: Router, _ names: [String]?) async throws -> [String] {
        let live = try await router.liveGroups(complete: true).map(\.group)
        guard !live.isEmpty else {
            throw ClientError.invalidArgument("no broker group is registered with the name servers (is any group running with --nameservers?)")
        }
        guard let names, !names.isEmpty else { return live }
        for n in names where !live.contains(n) {
            throw ClientError.invalidArgument("no live broker group is named \(n) (live: \(live.joined(separator: ", ")))")
        }
        guard Set(names).count == names.count else { throw ClientError.invalidArgument("a broker group is named twice") }
        return names.sorted()
    }

    /// Creates `name` with `queues` spread over `brokerGroups` (nil: every live group), and
    /// returns the placement. Repeating it with the same arguments completes a partial create.
    @discardableResult
    public func createTopic(_ name: String, queues: UInt32, type: TopicType = .mixed, brokerGroups: [String]?) async throws -> [TopicPlacement] {
        guard let router else {
            guard brokerGroups == nil else { throw ClientError.invalidArgument("--broker-groups needs a client of the name servers (--nameservers)") }
            try await createTopic(name, queues: queues, type: type)
            return [TopicPlacement(group: brokerGroup ?? BrokerGroupName.defaultName, queues: queues)]
        }
        let groups = try await chosenGroups(router, brokerGroups)
        guard queues >= UInt32(groups.count) else {
            throw ClientError.invalidArgument("\(queues) queues cannot be spread over \(groups.count) broker groups: give at least one queue per group")
        }
        let plan = spreadQueues(queues, over: groups)
        try await apply(plan, topic: name, type: type, router: router)
        try await awaitRoute(name, showing: plan, router: router)
        return plan
    }

    /// Waits until a name server's route shows `plan` (the groups' leaders register a change
    /// within a second), so that a send right after a create finds the topic.
    private func awaitRoute(_ topic: String, showing plan: [TopicPlacement], router: Router) async throws {
        router.forget(topic)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(15)
        while clock.now < deadline {
            if let route = try? await router.route(topic, fresh: true),
                plan.allSatisfy({ p in route.groups.contains { $0.group == p.group && $0.queues >= p.queues } })
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClientError.timedOut(
            "topic \(topic) is in place on \(plan.map(\.group).joined(separator: ", ")), but the name servers do not route it yet (after 15 s)")
    }

    /// Creates or grows the topic in each group of `plan`, in order; the first failure is
    /// reported with the groups done before it.
    private func apply(_ plan: [TopicPlacement], topic: String, type: TopicType, router: Router) async throws {
        var done: [String] = []
        for p in plan {
            let c = try await router.cluster(named: p.group)
            do {
                let current = try? await c.describeTopic(topic)
                if let current, UInt32(current.queues.count) < p.queues {
                    try await c.updateTopic(topic, queues: p.queues)
                } else {
                    try await c.createTopic(topic, queues: p.queues, type: type)
                }
            } catch {
                let partial = done.isEmpty ? "" : " (done on \(done.joined(separator: ", ")); run it again to finish)"
                throw ClientError.invalidArgument("topic \(topic) on broker group \(p.group): \(error)\(partial)")
            }
            done.append(p.group)
        }
    }

    /// Through name servers: grows `name` to `queues` in all, the new queues spread over
    /// `brokerGroups` (nil: the live groups that hold none of it yet, else every live group).
    @discardableResult
    public func updateTopic(_ name: String, queues: UInt32, brokerGroups: [String]?) async throws -> [TopicPlacement] {
        guard let router else {
            guard brokerGroups == nil else { throw ClientError.invalidArgument("--broker-groups needs a client of the name servers (--nameservers)") }
            try await updateTopic(name, queues: queues)
            return [TopicPlacement(group: brokerGroup ?? BrokerGroupName.defaultName, queues: queues)]
        }
        let route = try await router.route(name, fresh: true)
        let total = route.totalQueues
        guard queues >= total else { throw ClientError.invalidArgument("topic \(name) has \(total) queues over its groups; it may grow, never shrink") }
        guard queues > total else { return route.groups.map { TopicPlacement(group: $0.group, queues: $0.queues) } }
        let holding = route.groups.map(\.group)
        var targets = try await chosenGroups(router, brokerGroups)
        if brokerGroups == nil {
            let empty = targets.filter { !holding.contains($0) }
            if !empty.isEmpty { targets = empty }
        }
        let type = route.groups.first?.type ?? .mixed
        let plan = spreadQueues(queues - total, over: targets).map { add in
            TopicPlacement(group: add.group, queues: add.queues + (route.groups.first { $0.group == add.group }?.queues ?? 0))
        }
        try await apply(plan.filter { $0.queues > 0 }, topic: name, type: type, router: router)
        try await awaitRoute(name, showing: plan.filter { $0.queues > 0 }, router: router)
        var result = Dictionary(uniqueKeysWithValues: route.groups.map { ($0.group, $0.queues) })
        for p in plan { result[p.group] = p.queues }
        return result.keys.sorted().map { TopicPlacement(group: $0, queues: result[$0]!) }
    }

    /// Each group's view of the topic, in group name order (through name servers), or this
    /// group's alone.
    public func describeTopicByGroup(_ name: String) async throws -> [(group: String, info: TopicInfo)] {
        guard let router else { return [(brokerGroup ?? BrokerGroupName.defaultName, try await describeTopic(name))] }
        var out: [(group: String, info: TopicInfo)] = []
        for g in try await router.route(name, fresh: true).groups {
            out.append((g.group, try await router.cluster(g).describeTopic(name)))
        }
        return out
    }

    /// Every group's topics (through name servers: each live group's, in group name order).
    public func listTopicsByGroup() async throws -> [(group: String, topics: [TopicInfo])] {
        guard let router else { return [(brokerGroup ?? BrokerGroupName.defaultName, try await listTopics())] }
        var out: [(group: String, topics: [TopicInfo])] = []
        for g in try await router.liveGroups() {
            out.append((g.group, try await router.cluster(g).listTopics()))
        }
        return out
    }

    /// Every live group's members and their status, in group name order.
    public func statusByGroup() async throws -> [(group: String, nodes: [NodeStatus])] {
        guard let router else {
            let nodes = try await status()
            return [(nodes.first?.brokerGroup ?? BrokerGroupName.defaultName, nodes)]
        }
        var out: [(group: String, nodes: [NodeStatus])] = []
        for g in try await router.liveGroups() {
            out.append((g.group, try await router.cluster(g).status()))
        }
        return out
    }

    /// Through name servers: the message with this id from its group, or, for a bare id, from
    /// the first group in name order that holds it.
    public func message(id: GroupMessageID) async throws -> ReceivedMessage {
        guard let router else { return try await message(id: id.id) }
        let groups: [String]
        if let g = id.group { groups = [g] } else { groups = try await router.liveGroups().map(\.group) }
        var lastError: Error = ClientError.broker(ErrorBody(code: ErrorCode.messageNotFound, message: "no broker group holds message \(id)"))
        for g in groups {
            do {
                var m = try await router.cluster(named: g).message(id: id.id)
                m.brokerGroup = g
                return m
            } catch ClientError.broker(let e) where e.code == ErrorCode.messageNotFound {
                lastError = ClientError.broker(e)
            }
        }
        throw lastError
    }

    /// Through name servers: the messages of `topic` carrying `key`, from every group holding it.
    func routedMessages(_ router: Router, topic: String, key: String, max: UInt32) async throws -> [ReceivedMessage] {
        var out: [ReceivedMessage] = []
        for g in try await router.route(topic, fresh: true).groups {
            for var m in try await router.cluster(g).messages(topic: topic, key: key, max: max) {
                m.brokerGroup = g.group
                out.append(m)
            }
        }
        return out.sorted { ($0.storeTimestamp, $0.brokerGroup, $0.id) < ($1.storeTimestamp, $1.brokerGroup, $1.id) }
    }

    /// Through name servers: `body` on every group holding `topic` (delete, tracing).
    func onEveryGroup(of topic: String, _ router: Router, _ body: (TernCluster) async throws -> Void) async throws {
        var route = try await router.nameServers.route(topic: topic)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(20)
        while !route.complete {
            guard clock.now < deadline else { throw Router.starting }
            try await Task.sleep(for: .milliseconds(500))
            route = try await router.nameServers.route(topic: topic)
        }
        for g in route.groups { try await body(router.cluster(g)) }
        router.forget(topic)
    }

    /// Through name servers: `body` on every live group (consumer group settings).
    func onEveryGroup(_ router: Router, _ body: (TernCluster) async throws -> Void) async throws {
        for g in try await router.liveGroups(complete: true) { try await body(router.cluster(g)) }
    }
}

extension TernCluster {
    /// A consumer group's progress in each broker group (one entry without name servers).
    public func groupProgressByGroup(_ name: String) async throws -> [(group: String, progress: GroupProgress)] {
        guard let router else { return [(brokerGroup ?? "", try await groupProgress(name))] }
        var out: [(group: String, progress: GroupProgress)] = []
        for g in try await router.liveGroups() { out.append((g.group, try await router.cluster(g).groupProgress(name))) }
        return out
    }

    /// `resetOffsets` in each broker group (one entry without name servers).
    public func resetOffsetsByGroup(
        group: String, topic: String? = nil, toTimestamp timestamp: UInt64
    ) async throws -> [(
        group: String, offsets: [QueueRef: UInt64]
    )] {
        guard let router else { return [(brokerGroup ?? "", try await resetOffsets(group: group, topic: topic, toTimestamp: timestamp))] }
        var out: [(group: String, offsets: [QueueRef: UInt64])] = []
        for g in try await router.liveGroups(complete: true) {
            out.append((g.group, try await router.cluster(g).resetOffsets(group: group, topic: topic, toTimestamp: timestamp)))
        }
        return out
    }

    /// Cancels delayed messages, each in the group its id names (through name servers).
    public func recall(_ ids: [GroupMessageID]) async throws {
        guard let router else { return try await recall(ids.map(\.id)) }
        for (group, list) in Dictionary(grouping: ids, by: { $0.group ?? "" }).sorted(by: { $0.key < $1.key }) {
            guard !group.isEmpty else {
                throw ClientError.invalidArgument("message ids \(list.map(\.description).joined(separator: ", ")) name no broker group (g2/...)")
            }
            try await router.cluster(named: group).recall(list.map(\.id))
        }
    }

    /// A traced message's steps, from the group its id names (a bare id: the first group in
    /// name order that traced it).
    public func trace(id: GroupMessageID) async throws -> MessageTrace {
        guard let router else { return try await trace(id: id.id) }
        var groups = id.group.map { [$0] } ?? []
        if groups.isEmpty { groups = try await router.liveGroups().map(\.group) }
        var lastError: Error = ClientError.broker(ErrorBody(code: ErrorCode.messageNotFound, message: "no broker group traced \(id)"))
        for g in groups {
            do {
                return try await router.cluster(named: g).trace(id: id.id)
            } catch ClientError.broker(let e) where e.code == ErrorCode.messageNotFound {
                lastError = ClientError.broker(e)
            }
        }
        throw lastError
    }

    /// Through name servers: the dead letter goes back to its own group's retry topic.
    func routedResend(_ dead: ReceivedMessage, group: String, _ router: Router) async throws -> SendReceipt {
        guard !dead.brokerGroup.isEmpty else { throw ClientError.invalidArgument("dead letter \(dead.id) names no broker group") }
        var r = try await router.cluster(named: dead.brokerGroup).resendDeadLetter(dead, group: group)
        r.brokerGroup = dead.brokerGroup
        return r
    }

    /// Through name servers: the messages of one queue of `topic` in each group holding it.
    public func pullEveryGroup(topic: String, queue: UInt32, max: Int) async throws -> [ReceivedMessage] {
        let targets: [(String, TernCluster)]
        if let router {
            targets = try await router.route(topic, fresh: true).groups.map { ($0.group, router.cluster($0)) }
        } else {
            targets = [("", self)]
        }
        var out: [ReceivedMessage] = []
        for (name, c) in targets {
            var offset: UInt64 = 0
            while out.count < max {
                let r = try await c.pull(topic: topic, queue: queue, offset: offset, maxMessages: UInt32(Swift.min(256, max - out.count)))
                out += r.messages.map {
                    var m = $0
                    m.brokerGroup = name
                    return m
                }
                if r.messages.isEmpty || r.nextOffset >= r.maxOffset { break }
                offset = r.nextOffset
            }
        }
        return out
    }
}
