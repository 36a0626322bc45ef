// The client's view of one Tern group: its endpoints, connections to them, the leader it last
// learned and the queue counts of topics. Writes go to the leader, found by asking any node and
// by following NOT_LEADER answers; reads of committed data may go to any node.
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernProtocol

/// A connection to a Tern cluster, shared by producers, consumers and admin calls.
///
/// ```swift
/// let cluster = try TernCluster(endpoints: ["127.0.0.1:9001", "127.0.0.1:9003"])
/// try await cluster.createTopic("orders", queues: 8)
/// for node in try await cluster.status() { print(node.id, node.role, node.term) }
/// ```
///
/// Any subset of the nodes, in any order, is enough to bootstrap: the others are learned from
/// route answers.
public final class TernCluster: Sendable {
    /// Timeouts and back-off of every call.
    ///
    /// ```swift
    /// var options = TernCluster.Options()
    /// options.requestTimeoutMillis = 10_000
    /// let cluster = try TernCluster(endpoints: ["10.0.0.1:9001"], options: options)
    /// ```
    public struct Options: Sendable {
        /// Time allowed for one call, retries included.
        public var requestTimeoutMillis: Int64 = 5000
        /// First pause between retries; doubles up to `maxBackoffMillis`.
        public var backoffMillis: Int64 = 20
        public var maxBackoffMillis: Int64 = 100
        /// TLS to the nodes (nodes started with `--tls-cert`); nil: plain TCP.
        public var tls: ClientTLS?
        /// The account every connection speaks for (nodes started with `--acl`); nil: none.
        public var credentials: Credentials?
        /// Through name servers: a topic's route is refreshed in the background once this old.
        public var routeRefreshMillis: Int64 = 30_000
        /// A planted bug for the chaos harness (never set otherwise): a routed send that failed
        /// without an answer is sent again to another group, where its first group's dedupe
        /// cannot see it.
        @_spi(Testing) public var plantRetryOtherGroup = false
        public init() {}
    }

    struct State {
        var endpoints: [String]
        var leader: String?
        var connections: [String: Connection] = [:]
        var topicQueues: [String: UInt32] = [:]
        var rotation = 0
        var closed = false
    }

    public let options: Options
    let group: EventLoopGroup
    private let ownsGroup: Bool
    private let state: NIOLockedValueBox<State>
    private let tls: TLSContext?
    /// The broker group this client reaches, when it is one group of many (made by a router):
    /// a node of another group is not used (a stale route), so nothing is stored in the wrong one.
    public let brokerGroup: String?
    /// Set when built from name servers: topics are routed across the broker groups.
    let router: Router?

    public convenience init(endpoints: [String], options: Options = Options()) throws {
        try self.init(endpoints: endpoints, options: options, group: nil)
    }

    /// A client on the caller's event loops (not shut down with it): a front that serves another
    /// protocol on the same thread saves a hop per request.
    public convenience init(endpoints: [String], options: Options = Options(), eventLoopGroup: any EventLoopGroup) throws {
        try self.init(endpoints: endpoints, options: options, group: eventLoopGroup)
    }

    /// `group` nil: a one-thread group of its own, shut down with the client.
    private init(endpoints: [String], options: Options, group given: (any EventLoopGroup)?) throws {
        let list = endpoints.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters() } }.filter { !$0.isEmpty }
        guard !list.isEmpty else { throw ClientError.invalidArgument("no endpoints given") }
        for e in list where e.lastIndex(of: ":") == nil { throw ClientError.invalidArgument("endpoint \(e) is not host:port") }
        self.options = options
        tls = try options.tls.map { TLSContext(context: try $0.makeContext(), customCA: $0.caFile != nil) }
        group = given ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        ownsGroup = given == nil
        state = NIOLockedValueBox(State(endpoints: list))
        brokerGroup = nil
        router = nil
    }

    /// A client of every broker group behind `nameservers` (docs/architecture.md, "Many groups"):
    /// producers spread over the queues of every group holding a topic, consumers take queues
    /// in each of them, and a group's failover stays within it.
    ///
    /// ```swift
    /// let cluster = try TernCluster(nameservers: ["127.0.0.1:9876", "127.0.0.1:9877"])
    /// try await cluster.createTopic("orders", queues: 16)   // 8 on each of two groups
    /// ```
    public convenience init(nameservers: [String], options: Options = Options()) throws {
        try self.init(nameservers: nameservers, options: options, group: nil)
    }

    /// Through name servers, on the caller's event loops (not shut down with it).
    public convenience init(nameservers: [String], options: Options = Options(), eventLoopGroup: any EventLoopGroup) throws {
        try self.init(nameservers: nameservers, options: options, group: eventLoopGroup)
    }

    private init(nameservers: [String], options: Options, group given: (any EventLoopGroup)?) throws {
        self.options = options
        let g = given ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        group = g
        ownsGroup = given == nil
        state = NIOLockedValueBox(State(endpoints: []))
        brokerGroup = nil
        do {
            let tls = try options.tls.map { TLSContext(context: try $0.makeContext(), customCA: $0.caFile != nil) }
            self.tls = tls
            router = Router(
                nameServers: try NameServers(endpoints: nameservers, timeoutMillis: min(options.requestTimeoutMillis, 2000), group: g), options: options,
                group: g, tls: tls)
        } catch {
            if given == nil { try? g.syncShutdownGracefully() }
            throw error
        }
    }

    /// One group of many, made by a router (on its event loops).
    init(group name: String, endpoints: [String], leader: String?, options: Options, eventLoopGroup: any EventLoopGroup, tls: TLSContext?) {
        self.options = options
        self.tls = tls
        group = eventLoopGroup
        ownsGroup = false
        var s = State(endpoints: endpoints)
        s.leader = leader
        state = NIOLockedValueBox(s)
        brokerGroup = name
        router = nil
    }

    /// Whether this client routes across broker groups (built from name servers).
    public var isRouted: Bool { router != nil }

    /// Adds endpoints (and a leader hint) learned from a name server's route.
    func learn(endpoints: [String], leader: String?) {
        state.withLockedValue { s in
            for e in endpoints where !s.endpoints.contains(e) { s.endpoints.append(e) }
            if s.leader == nil, let leader { s.leader = leader }
        }
    }

    /// Closes every connection.
    public func shutdown() async {
        await router?.shutdown()
        let conns = state.withLockedValue { s -> [Connection] in
            let all = Array(s.connections.values)
            s.connections = [:]
            s.closed = true
            return all
        }
        for c in conns { c.close() }
        if ownsGroup { try? await group.shutdownGracefully() }
    }

    public var knownEndpoints: [String] { state.withLockedValue { $0.endpoints } }
    public var knownLeader: String? { state.withLockedValue { $0.leader } }

    func connection(_ endpoint: String) async throws -> Connection {
        if state.withLockedValue({ $0.closed }) { throw ClientError.invalidArgument("the cluster client was shut down") }
        if let c = state.withLockedValue({ $0.connections[endpoint] }), c.isActive { return c }
        let c = try await Connection.connect(to: endpoint, group: group, tls: tls)
        if let credentials = options.credentials {
            do {
                try await c.authenticate(credentials, timeoutMillis: options.requestTimeoutMillis)
            } catch {
                c.close()
                throw error
            }
        }
        if let expected = brokerGroup {
            // A route can be stale: the address may now be a node of another group.
            let found: String
            do {
                found = try RouteResponse.decode(try await c.call(.queryRoute, NameRequest(name: "").encoded(), timeoutMillis: options.requestTimeoutMillis))
                    .brokerGroup
            } catch {
                c.close()
                throw error
            }
            guard found == expected else {
                c.close()
                forget(endpoint: endpoint)
                throw ClientError.connectionFailed(endpoint: endpoint, reason: "it is a node of broker group \(found), not of \(expected) (a stale route)")
            }
        }
        let old = state.withLockedValue { s -> Connection? in
            let old = s.connections[endpoint]
            s.connections[endpoint] = c
            return old
        }
        if let old, old !== c { old.close() }
        return c
    }

    /// Drops an endpoint found to belong to another group.
    private func forget(endpoint: String) {
        state.withLockedValue { s in
            if s.endpoints.count > 1 { s.endpoints.removeAll { $0 == endpoint } }
            if s.leader == endpoint { s.leader = nil }
        }
    }

    private func nextEndpoint(after failed: String?) -> String {
        state.withLockedValue { s in
            if let f = failed, s.leader == f { s.leader = nil }
            if let l = s.leader { return l }
            s.rotation += 1
            return s.endpoints[s.rotation % s.endpoints.count]
        }
    }

    private func learn(leader endpoint: String) {
        state.withLockedValue { s in
            s.leader = endpoint
            if !s.endpoints.contains(endpoint) { s.endpoints.append(endpoint) }
        }
    }

    /// Calls the leader: follows NOT_LEADER to the leader it names, and retries with back-off on
    /// busy answers, lost connections and elections, until the request timeout.
    func leaderCall(_ op: Opcode, _ body: [UInt8], timeoutMillis: Int64? = nil) async throws -> [UInt8] {
        try await retrying(op, body, timeoutMillis: timeoutMillis ?? options.requestTimeoutMillis, anyNode: false)
    }

    /// Reads: the leader when it is known or can be learned (it has applied every commit it
    /// acknowledged; a follower learns of commits a heartbeat later), another node when it fails.
    func anyCall(_ op: Opcode, _ body: [UInt8], timeoutMillis: Int64? = nil) async throws -> [UInt8] {
        try await retrying(op, body, timeoutMillis: timeoutMillis ?? options.requestTimeoutMillis, anyNode: true)
    }

    private func retrying(_ op: Opcode, _ body: [UInt8], timeoutMillis: Int64, anyNode: Bool, findLeader: Bool = true) async throws -> [UInt8] {
        if router != nil {
            throw ClientError.invalidArgument("\(op) goes to one broker group: this client routes through name servers (docs/architecture.md, \"Many groups\")")
        }
        if findLeader && knownLeader == nil { _ = try? await queryRoute() }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(timeoutMillis))
        var backoff = options.backoffMillis
        var target = nextEndpoint(after: nil)
        var lastError: Error = ClientError.timedOut("\(op)")
        while clock.now < deadline {
            let left = Int64((deadline - clock.now).components.seconds * 1000 + (deadline - clock.now).components.attoseconds / 1_000_000_000_000_000)
            do {
                let c = try await connection(target)
                let response = try await c.call(op, body, timeoutMillis: max(1, left))
                if !anyNode { learn(leader: target) }
                return response
            } catch ClientError.broker(let e) where e.code == ErrorCode.notLeader {
                lastError = ClientError.broker(e)
                if let d = try? NotLeaderDetail.decode(e.detail), !d.endpoint.isEmpty, d.endpoint != target {
                    learn(leader: d.endpoint)
                    target = d.endpoint
                    continue
                }
                target = nextEndpoint(after: target)
            } catch ClientError.broker(let e) where e.code == ErrorCode.busy || e.code == ErrorCode.storageFailed {
                lastError = ClientError.broker(e)
                if e.code == ErrorCode.storageFailed { target = nextEndpoint(after: target) }
            } catch let e as ClientError {
                switch e {
                case .broker, .invalidArgument, .tls: throw e
                default:
                    lastError = e
                    target = nextEndpoint(after: target)
                }
            }
            try await Task.sleep(for: .milliseconds(backoff))
            backoff = min(backoff * 2, options.maxBackoffMillis)
        }
        throw lastError
    }

    /// One request to the leader, with this client's retries (NOT_LEADER followed, BUSY and lost
    /// connections retried until the timeout): for fronts that speak another protocol and build
    /// native request bodies themselves (the RocketMQ 5 gRPC front).
    public func leaderRequest(_ op: Opcode, _ body: [UInt8], timeoutMillis: Int64? = nil) async throws -> [UInt8] {
        try await leaderCall(op, body, timeoutMillis: timeoutMillis)
    }

    /// A read that any node may answer (the leader when known), with retries.
    public func anyRequest(_ op: Opcode, _ body: [UInt8], timeoutMillis: Int64? = nil) async throws -> [UInt8] {
        try await anyCall(op, body, timeoutMillis: timeoutMillis)
    }

    /// Calls one node, no retries.
    func call(endpoint: String, _ op: Opcode, _ body: [UInt8]) async throws -> [UInt8] {
        try await connection(endpoint).call(op, body, timeoutMillis: options.requestTimeoutMillis)
    }

    // MARK: Routes and admin

    /// The group as a node sees it, and the topic's queue count (0: no such topic). Learns the
    /// members' endpoints and the leader.
    public func queryRoute(topic: String = "") async throws -> RouteResponse {
        var route = try RouteResponse.decode(
            try await retrying(.queryRoute, NameRequest(name: topic).encoded(), timeoutMillis: options.requestTimeoutMillis, anyNode: true, findLeader: false))
        let leaderEndpoint = route.nodes.first(where: { $0.id == route.leader })?.endpoint ?? ""
        state.withLockedValue { s in
            for n in route.nodes where !n.endpoint.isEmpty && !s.endpoints.contains(n.endpoint) { s.endpoints.append(n.endpoint) }
            if !leaderEndpoint.isEmpty { s.leader = leaderEndpoint }
        }
        if !topic.isEmpty, route.topicQueues == 0, !leaderEndpoint.isEmpty {
            // A follower may not have applied the topic's creation yet: the leader decides.
            if let fromLeader = try? RouteResponse.decode(try await call(endpoint: leaderEndpoint, .queryRoute, NameRequest(name: topic).encoded())) {
                route = fromLeader
            }
        }
        if !topic.isEmpty, route.topicQueues > 0 { state.withLockedValue { $0.topicQueues[topic] = route.topicQueues } }
        return route
    }

    /// Queue count of `topic`, from the cache or a route query; throws topicNotFound.
    func queues(of topic: String) async throws -> UInt32 {
        if let n = state.withLockedValue({ $0.topicQueues[topic] }) { return n }
        // "No such topic" from a node that has not applied the creation yet (a follower, or a
        // leader elected a moment ago) is not the last word: ask again, three times in 0.6 s.
        var answered = false
        var lastError: Error?
        for attempt in 0..<4 {
            if attempt > 0 {
                state.withLockedValue { $0.leader = nil }
                try await Task.sleep(for: .milliseconds(200))
            }
            do {
                let route = try await queryRoute(topic: topic)
                if route.topicQueues > 0 { return route.topicQueues }
                answered = true
            } catch {
                lastError = error
            }
        }
        if !answered, let lastError { throw lastError }
        throw ClientError.broker(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(topic) does not exist"))
    }

    func forgetRoute(_ topic: String) {
        state.withLockedValue { _ = $0.topicQueues.removeValue(forKey: topic) }
    }

    public func createTopic(_ name: String, queues: UInt32, type: TopicType = .mixed) async throws {
        if router != nil {
            try await createTopic(name, queues: queues, type: type, brokerGroups: nil)
            return
        }
        _ = try await leaderCall(.createTopic, TopicRequest(name: name, queues: queues, type: type).encoded())
    }

    /// Creates a consumer group with its settings (a FIFO group, docs/rocketmq.md); other groups
    /// need no creation. Repeating it with the same settings succeeds.
    public func createGroup(_ name: String, fifo: Bool) async throws {
        if let router { return try await onEveryGroup(router) { try await $0.createGroup(name, fifo: fifo) } }
        _ = try await leaderCall(.createGroup, GroupRequest(name: name, fifo: fifo).encoded())
    }

    /// Every consumer group the leader knows of.
    public func listGroups() async throws -> [String] {
        if let router {
            var all = Set<String>()
            for g in try await router.liveGroups() { all.formUnion(try await router.cluster(g).listGroups()) }
            return all.sorted()
        }
        return try GroupList.decode(try await leaderCall(.listGroups, Empty().encoded())).names
    }

    /// A group's members, their queues, and per queue its committed offset, the queue's bounds
    /// and the lag (`tern admin group describe`).
    public func groupProgress(_ name: String) async throws -> GroupProgress {
        try GroupProgress.decode(try await leaderCall(.groupProgress, NameRequest(name: name).encoded()))
    }

    /// A consumer group's settings (`created` false: never created, the defaults apply).
    public func describeGroup(_ name: String) async throws -> GroupInfo {
        try GroupInfo.decode(try await anyCall(.describeGroup, NameRequest(name: name).encoded()))
    }

    /// Adds queues to a topic (a topic's queues are never removed).
    public func updateTopic(_ name: String, queues: UInt32) async throws {
        if router != nil {
            try await updateTopic(name, queues: queues, brokerGroups: nil)
            return
        }
        _ = try await leaderCall(.updateTopic, TopicRequest(name: name, queues: queues).encoded())
        forgetRoute(name)
    }

    public func deleteTopic(_ name: String) async throws {
        if let router { return try await onEveryGroup(of: name, router) { try await $0.deleteTopic(name) } }
        _ = try await leaderCall(.deleteTopic, TopicRequest(name: name).encoded())
        forgetRoute(name)
    }

    /// Through name servers: each topic once, its queues numbered across its groups in group
    /// name order (as `Producer.send(batch:queue:)` numbers them).
    public func listTopics() async throws -> [TopicInfo] {
        if router != nil {
            var merged: [String: TopicInfo] = [:]
            for (_, topics) in try await listTopicsByGroup() {
                for t in topics { merged[t.name] = merged[t.name].map { Self.join($0, t) } ?? t }
            }
            return merged.keys.sorted().map { merged[$0]! }
        }
        return try TopicList.decode(try await anyCall(.listTopics, [])).topics
    }

    public func describeTopic(_ name: String) async throws -> TopicInfo {
        if router != nil {
            let parts = try await describeTopicByGroup(name).map(\.info)
            guard let first = parts.first else { throw ClientError.broker(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(name) does not exist")) }
            return parts.dropFirst().reduce(first, Self.join)
        }
        guard let t = try TopicList.decode(try await anyCall(.describeTopic, NameRequest(name: name).encoded())).topics.first else {
            throw ClientError.badResponse("empty topic description")
        }
        return t
    }

    /// Asks every member to take a broker snapshot now: each member's answer, or why it failed.
    public func takeSnapshots() async throws -> [(node: String, result: Result<SnapshotTaken, any Error>)] {
        let route = try await queryRoute()
        var out: [(node: String, result: Result<SnapshotTaken, any Error>)] = []
        for n in route.nodes {
            do {
                out.append((n.id, .success(try SnapshotTaken.decode(try await connection(n.endpoint).call(.takeSnapshot, [], timeoutMillis: 10_000)))))
            } catch {
                out.append((n.id, .failure(error)))
            }
        }
        return out
    }

    /// Status of every member: asks each known endpoint (learned from a route query first).
    /// A node that does not answer appears with role "unreachable". Through name servers:
    /// every live group's members, in group name order.
    public func status() async throws -> [NodeStatus] {
        if router != nil { return try await statusByGroup().flatMap(\.nodes) }
        let route = try await queryRoute()
        var out: [NodeStatus] = []
        for n in route.nodes {
            do {
                out.append(try NodeStatus.decode(try await connection(n.endpoint).call(.clusterStatus, [], timeoutMillis: 1000)))
            } catch {
                var s = NodeStatus(id: n.id, role: "unreachable", term: 0, leader: "", commitIndex: 0, lastIndex: 0, appliedIndex: 0, durableIndex: 0)
                s.brokerGroup = route.brokerGroup
                out.append(s)
            }
        }
        return out
    }

    /// The message with this id (any node that has applied it answers).
    public func message(id: MessageID) async throws -> ReceivedMessage {
        if router != nil { return try await message(id: GroupMessageID(group: nil, id: id)) }
        guard let m = try MessageList.decode(try await anyCall(.queryMessage, QueryMessageRequest(id: id).encoded())).messages.first else {
            throw ClientError.badResponse("an empty answer to a lookup by id")
        }
        return m
    }

    /// What happened to a message of a traced topic (admin right; docs/operations.md).
    public func trace(id: MessageID) async throws -> MessageTrace {
        try MessageTrace.decode(try await leaderCall(.traceMessage, MessageIDRequest(ids: [id]).encoded()))
    }

    /// Tracing of `topic`'s messages on or off (admin right); messages stored from then on are traced.
    public func setTracing(topic: String, on: Bool) async throws {
        if let router { return try await onEveryGroup(of: topic, router) { try await $0.setTracing(topic: topic, on: on) } }
        _ = try await leaderCall(.traceTopic, TraceTopicRequest(topic: topic, on: on).encoded())
    }

    /// The most recent messages of `topic` carrying `key` (at most 64 are indexed per key).
    public func messages(topic: String, key: String, max: UInt32 = 32) async throws -> [ReceivedMessage] {
        if let router { return try await routedMessages(router, topic: topic, key: key, max: max) }
        return try MessageList.decode(try await anyCall(.queryMessage, QueryMessageRequest(topic: topic, key: key, max: max).encoded())).messages
    }

    /// Moves `group`'s offsets (in `topic`, or in every topic it has offsets in when nil) to the
    /// first message stored at or after `timestamp` (ms since 1970); returns the new offsets.
    /// Consumers of the group pick them up when they next read their offsets (on start or rebalance).
    public func resetOffsets(group: String, topic: String? = nil, toTimestamp timestamp: UInt64) async throws -> [QueueRef: UInt64] {
        try OffsetList.decode(try await leaderCall(.resetOffset, ResetOffsetRequest(group: group, topic: topic ?? "", timestamp: timestamp).encoded())).offsets
    }

    /// Cancels delayed messages that are still pending (fails, cancelling none, when one of them
    /// was released already or was never delayed).
    public func recall(_ ids: [MessageID]) async throws {
        _ = try await leaderCall(.recall, MessageIDRequest(ids: ids).encoded())
    }

    /// One pull from one queue (any node; no group involved).
    public func pull(topic: String, queue: UInt32, offset: UInt64, maxMessages: UInt32 = 32) async throws -> PullResponse {
        try PullResponse.decode(try await anyCall(.pull, PullRequest(topic: topic, queueID: queue, offset: offset, maxMessages: maxMessages).encoded()))
    }

    /// Sends a dead letter of `group` back to it: a copy into `%RETRY%<group>` with its retry
    /// count reset, delivered at once.
    public func resendDeadLetter(_ dead: ReceivedMessage, group: String) async throws -> SendReceipt {
        if let router { return try await routedResend(dead, group: group, router) }
        let retry = "%RETRY%\(group)"
        do {
            try await createTopic(retry, queues: 1)
        } catch ClientError.broker(let e) where e.code == ErrorCode.topicExists {}
        var props = dead.message.properties
        props[RetryProperty.reconsumeTimes] = nil
        props[RetryProperty.retryKey] = nil
        props[RetryProperty.resends] = String((Int(props[RetryProperty.resends] ?? "0") ?? 0) + 1)
        let producer = Producer(cluster: self, group: "%DLQ-RESEND%")
        return try await producer.send(Message(topic: retry, tag: dead.message.tag, keys: dead.message.keys, properties: props, body: dead.message.body))
    }

    public func transferLeader(to node: String) async throws {
        _ = try await leaderCall(.transferLeader, NameRequest(name: node).encoded())
        state.withLockedValue { $0.leader = nil }
    }
}

extension TernCluster {
    /// One topic's descriptions from two groups as one: the second's queues numbered after the first's.
    static func join(_ a: TopicInfo, _ b: TopicInfo) -> TopicInfo {
        var out = a
        let base = UInt32(a.queues.count)
        out.queues += b.queues.map { TopicInfo.Queue(queueID: base + $0.queueID, minOffset: $0.minOffset, maxOffset: $0.maxOffset) }
        out.traced = a.traced || b.traced
        return out
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
