// apache.rocketmq.v2.MessagingService answered by calling the group over Tern's native protocol:
// every node's front answers every RPC, the cluster client forwards writes to the leader and
// follows it across elections. docs/rocketmq.md says RPC by RPC what is done and what is not.
import Foundation
import GRPCCore
import Logging
import NIOConcurrencyHelpers
import SwiftProtobuf
import TernClient
import TernProtocol
import TernRocketMQProto

/// Settings of the front that RocketMQ clients see.
public struct FrontSettings: Sendable {
    /// Largest body a send may carry (the node's --max-message-bytes); told to producers.
    public var maxBodyBytes = 4 << 20
    /// Longest a receive is held when nothing is there; told to consumers.
    public var longPollingMillis: Int64 = 20_000
    /// Shortest and longest invisible duration a receive or change may ask for.
    public var invisibleMillisRange: ClosedRange<Int64> = 10_000...(12 * 3600 * 1000)
    /// Most messages one receive hands out.
    public var maxReceiveBatch: Int32 = 32
    /// Invisible duration of an auto-renewed receive (a push consumer's), renewed by the front
    /// while it runs until the message is acknowledged or given back.
    public var autoRenewMillis: Int64 = 60_000
    /// Deliveries of one message to a group, at most; one due again after that goes to the
    /// group's dead-letter queue (`%DLQ%<group>`). RocketMQ's default: 16 retries after the first.
    public var maxDeliveryAttempts: Int32 = 17
    /// The broker name in route answers (one Tern group: one broker).
    public var brokerName = "tern"
    /// Route answers name only this node's front (set when it serves TLS).
    public var routeOwnAddressOnly = false
    /// The producer group Tern records for sends through the front (RocketMQ 5 has none).
    public var producerGroup = "rocketmq-grpc"
    public init() {}
}

final class MessagingFront: RMQMessagingService.ServiceProtocol {
    /// The front's own cluster client: every call's without access control; with it, the
    /// background work's (signed in with `--acl-admin`'s account, or none).
    let base: Clients
    /// With access control: the clients of each account that signed a call.
    let accounts: AccountClients?
    let settings: FrontSettings
    let logger: Logger
    /// This node's gRPC address first, then the other nodes' (refreshed from their status).
    let routeEndpoints: NIOLockedValueBox<[String]>
    let host: String
    let renewals = Renewals()
    /// The node's broker group: through name servers, the one for handles and ids that name
    /// none; without, the only one this front serves.
    let nodeGroup: String
    /// Whether the front serves every broker group behind name servers.
    let routed: Bool

    init(base: Clients, accounts: AccountClients?, settings: FrontSettings, advertise: String, nodeGroup: String, routed: Bool, logger: Logger) {
        self.base = base
        self.nodeGroup = nodeGroup
        self.routed = routed
        self.accounts = accounts
        self.settings = settings
        self.logger = logger
        routeEndpoints = NIOLockedValueBox([advertise])
        host = String(advertise[..<(advertise.lastIndex(of: ":") ?? advertise.endIndex)])
    }

    /// Whom a call speaks for: the front itself, or (access control on) the account that signed it.
    func clients(_ metadata: Metadata) throws(FrontError) -> Clients {
        guard let accounts else { return base }
        return try accounts.clients(for: metadata)
    }

    /// Learns the other nodes' gRPC addresses from their status answers (through name servers,
    /// of every group that answers).
    func refreshRouteEndpoints() async {
        var nodes: [NodeStatus] = []
        if routed {
            // No name server answering: the node's own group, reached from its endpoints.
            for g in (try? await base.cluster.brokerGroupNames()) ?? [nodeGroup] {
                guard let group = try? await base.cluster.brokerGroup(g), let more = try? await group.status() else { continue }
                nodes += more
            }
        } else {
            guard let all = try? await base.cluster.status() else { return }
            nodes = all
        }
        guard !nodes.isEmpty else { return }
        let own = routeEndpoints.withLockedValue { $0[0] }
        let others = nodes.map(\.grpcEndpoint).filter { !$0.isEmpty && $0 != own }.sorted()
        routeEndpoints.withLockedValue { $0 = [own] + others }
    }

    private func endpoints() -> RMQEndpoints {
        var e = RMQEndpoints()
        // Over TLS only this node's address: clients name a channel by its whole address list,
        // and a certificate cannot match a list (the Python client's hostname check fails).
        let list = routeEndpoints.withLockedValue { settings.routeOwnAddressOnly ? [$0[0]] : $0 }
        e.scheme = list.allSatisfy { isIPv4(hostOf($0)) } ? .ipv4 : .domainName
        // A domain-name endpoint list holds one address in the clients: this node's.
        for item in e.scheme == .ipv4 ? list : [list[0]] {
            var a = RMQAddress()
            a.host = hostOf(item)
            a.port = Int32(portOf(item))
            e.addresses.append(a)
        }
        return e
    }

    /// The client of the broker group a handle, id or queue names: with name servers, that
    /// group's (none: this node's group); without, the node's group, which a handle or id
    /// naming another group cannot reach (`unknown`: the code to refuse it with).
    func target(_ c: Clients, _ group: String?, unknown: RMQCode = .badRequest) async throws -> TernCluster {
        guard routed else {
            if let group, !group.isEmpty, group != nodeGroup, group != settings.brokerName {
                throw FrontError(unknown, "broker group \(group) is not served here: this front serves \(nodeGroup) only (the node runs without --nameservers)")
            }
            return c.cluster
        }
        let name = groupName(group) ?? nodeGroup
        do {
            return try await c.cluster.brokerGroup(name)
        } catch let e as ClientError {
            guard case .invalidArgument(let why) = e else { throw e }
            throw FrontError(unknown, why)
        }
    }

    /// The group to name in handles and ids that `target(c, group)` reached (nil without name
    /// servers).
    func groupName(_ group: String?) -> String? {
        guard routed else { return nil }
        return group.flatMap { $0.isEmpty ? nil : $0 } ?? nodeGroup
    }

    /// An id as clients carry it: with name servers, `g2/<id>`.
    func groupID(_ id: MessageID, group: String?) -> String {
        GroupMessageID(group: groupName(group), id: id).description
    }

    func queue(_ topic: String, _ id: Int32, type: TopicType, broker: String) -> RMQMessageQueue {
        var q = RMQMessageQueue()
        q.topic.name = topic
        q.id = id
        q.permission = .readWrite
        q.broker.name = broker
        q.broker.id = 0
        q.broker.endpoints = endpoints()
        q.acceptMessageTypes =
            switch type {
            case .mixed: [.normal, .fifo, .delay, .transaction]
            case .normal: [.normal]
            case .fifo: [.fifo]
            case .delay: [.delay]
            case .transaction: [.transaction]
            }
        return q
    }

    /// Topics' queue counts and types as last asked, and when (ms): a send does not ask again
    /// within a second. The node checks both again for every send, so a stale entry costs
    /// at most a refused send.
    private let routes = NIOLockedValueBox<[String: (queues: UInt32, type: TopicType, at: UInt64)]>([:])

    /// One broker of a topic's route: a broker group (with name servers) or the node's group.
    struct Part {
        var broker: String
        var queues: UInt32
        var type: TopicType
    }

    /// The brokers holding the topic (it must exist): each broker group behind the name
    /// servers (the route the cluster client holds), or the node's group.
    func topicParts(_ topic: String, _ c: Clients) async throws -> [Part] {
        guard routed else {
            let (n, type) = try await topicRoute(topic, c)
            return [Part(broker: settings.brokerName, queues: n, type: type)]
        }
        let parts = try await c.cluster.topicRoute(topic).groups.filter { $0.queues > 0 }.map { Part(broker: $0.group, queues: $0.queues, type: $0.type) }
        guard !parts.isEmpty else { throw FrontError(.topicNotFound, "topic \(topic) does not exist (tern admin topic create \(topic))") }
        return parts
    }

    /// The topic's queue count and type in the node's group (the topic must exist).
    func topicRoute(_ topic: String, _ c: Clients) async throws -> (queues: UInt32, type: TopicType) {
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        if let r = routes.withLockedValue({ $0[topic] }), now < r.at + 1000 { return (r.queues, r.type) }
        let route = try await c.cluster.queryRoute(topic: topic)
        guard route.topicQueues > 0 else {
            routes.withLockedValue { _ = $0.removeValue(forKey: topic) }
            throw FrontError(.topicNotFound, "topic \(topic) does not exist (tern admin topic create \(topic))")
        }
        routes.withLockedValue { all in
            if all.count >= 10_000 { all = [:] }
            all[topic] = (route.topicQueues, route.topicType, now)
        }
        return (route.topicQueues, route.topicType)
    }

    // MARK: Routes, heartbeats, settings

    func queryRoute(request: ServerRequest<RMQQueryRouteRequest>, context: ServerContext) async throws -> ServerResponse<RMQQueryRouteResponse> {
        var out = RMQQueryRouteResponse()
        do {
            let c = try clients(request.metadata)
            let topic = try name(of: request.message.topic, what: "topic", code: .illegalTopic)
            out.messageQueues = try await topicParts(topic, c).flatMap { p in
                (0..<Int32(p.queues)).map { queue(topic, $0, type: p.type, broker: p.broker) }
            }
            out.status = status(.ok)
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    func heartbeat(request: ServerRequest<RMQHeartbeatRequest>, context: ServerContext) async throws -> ServerResponse<RMQHeartbeatResponse> {
        var out = RMQHeartbeatResponse()
        out.status = status(.ok)
        do {
            _ = try clients(request.metadata)
            if request.message.hasGroup { _ = try name(of: request.message.group, what: "group", code: .illegalConsumerGroup) }
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    func notifyClientTermination(
        request: ServerRequest<RMQNotifyClientTerminationRequest>, context: ServerContext
    ) async throws -> ServerResponse<RMQNotifyClientTerminationResponse> {
        var out = RMQNotifyClientTerminationResponse()
        out.status = status(.ok)
        do {
            let c = try clients(request.metadata)
            // A consumer going away: what it held and had not acknowledged is visible again now.
            if let client = request.metadata[stringValues: "x-mq-client-id"].first(where: { _ in true }) {
                await renewals.releaseAll(client: client, accessKey: c.accessKey)
            }
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    func telemetry(request: StreamingServerRequest<RMQTelemetryCommand>, context: ServerContext) async throws -> StreamingServerResponse<RMQTelemetryCommand> {
        let clientID = request.metadata[stringValues: "x-mq-client-id"].first(where: { _ in true }) ?? ""
        let signedIn: Result<Clients, FrontError>
        do { signedIn = .success(try clients(request.metadata)) } catch { signedIn = .failure(error) }
        return StreamingServerResponse { writer in
            guard case .success(let c) = signedIn else {
                if case .failure(let e) = signedIn {
                    var refusal = RMQTelemetryCommand()
                    refusal.status = status(e.code, e.message)
                    try await writer.write(refusal)
                }
                return [:]
            }
            // Replies to the client's settings and transaction checks share the one stream: both
            // go through this mailbox, written in order by one task.
            let (outbox, post) = AsyncStream<RMQTelemetryCommand>.makeStream(bufferingPolicy: .bufferingOldest(1024))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask {
                    for await command in outbox { try await writer.write(command) }
                }
                var checks: [String: Task<Void, Never>] = [:]
                defer { checks.values.forEach { $0.cancel() } }
                do {
                    for try await command in request.messages {
                        guard case .settings(let theirs) = command.command else { continue }
                        var reply = RMQTelemetryCommand()
                        reply.status = status(.ok)
                        reply.settings = await self.answer(theirs, c)
                        post.yield(reply)
                        // A producer answers transaction checks for the topics it publishes.
                        guard case .publishing(let p) = theirs.pubSub, !clientID.isEmpty else { continue }
                        for t in p.topics {
                            guard let topic = try? name(of: t, what: "topic", code: .illegalTopic), checks[topic] == nil else { continue }
                            checks[topic] = Task { await self.forwardChecks(topic: topic, clientID: clientID, c, post: post) }
                        }
                    }
                } catch {
                    self.logger.debug("telemetry stream of \(clientID) failed: \(error)")
                }
                checks.values.forEach { $0.cancel() }
                post.finish()
                try await tasks.waitForAll()
            }
            self.logger.debug("telemetry stream of \(clientID) ended")
            return [:]
        }
    }

    /// Holds the native check poll of a topic's half messages for one producer, and hands each
    /// half message the leader asks about to the producer as RecoverOrphanedTransactionCommand;
    /// the producer's answer comes back as EndTransaction (source SERVER_CHECK). With name
    /// servers, one poll per broker group holding the topic (the route is read again every 30 s
    /// for groups the topic has spread to).
    func forwardChecks(topic: String, clientID: String, _ c: Clients, post: AsyncStream<RMQTelemetryCommand>.Continuation) async {
        guard routed else { return await pollChecks(topic: topic, clientID: clientID, c.cluster, group: nil, post: post) }
        await withTaskGroup(of: Void.self) { polls in
            var polled: Set<String> = []
            // No group holds the topic yet: asked again after 1 s, doubling up to 30 s.
            var pause = 1
            while !Task.isCancelled {
                for g in (try? await c.cluster.topicRoute(topic).groups) ?? [] where !polled.contains(g.group) {
                    guard let child = try? await c.cluster.brokerGroup(g.group) else { continue }
                    polled.insert(g.group)
                    polls.addTask { await self.pollChecks(topic: topic, clientID: clientID, child, group: g.group, post: post) }
                }
                pause = polled.isEmpty ? min(pause * 2, 30) : 30
                try? await Task.sleep(for: .seconds(pause))
            }
            polls.cancelAll()
        }
    }

    private func pollChecks(topic: String, clientID: String, _ cluster: TernCluster, group: String?, post: AsyncStream<RMQTelemetryCommand>.Continuation) async
    {
        let poll = TransactionCheckPoll(group: topic, clientID: clientID, maxWaitMillis: 20_000).encoded()
        while !Task.isCancelled {
            do {
                let body = try await cluster.leaderRequest(.pollTransactionChecks, poll, timeoutMillis: 25_000)
                for half in try MessageList.decode(body).messages {
                    var command = RMQTelemetryCommand()
                    var recover = RMQRecoverOrphanedTransactionCommand()
                    recover.message = rocketMessage(half, handle: nil, attempt: nil, invisibleMillis: nil, host: host)
                    recover.transactionID = GroupMessageID(group: group, id: half.id).description
                    command.recoverOrphanedTransactionCommand = recover
                    post.yield(command)
                }
            } catch {
                if Task.isCancelled { return }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// The settings a client is told: RocketMQ's proxy answers with the client's own plus the
    /// server's limits.
    func answer(_ theirs: RMQSettings, _ c: Clients) async -> RMQSettings {
        var s = theirs
        // A producer's retries: 3 attempts, 10 ms doubling to 1 s (what RocketMQ's proxy tells).
        var backoff = RMQRetryPolicy()
        backoff.maxAttempts = 3
        var exponential = RMQExponentialBackoff()
        exponential.initial = duration(millis: 10)
        exponential.max = duration(millis: 1000)
        exponential.multiplier = 2
        backoff.exponentialBackoff = exponential
        s.backoffPolicy = backoff
        s.requestTimeout = duration(millis: 3000)
        switch theirs.pubSub {
        case .publishing(var p):
            p.maxBodySize = Int32(settings.maxBodyBytes)
            p.validateMessageType = true
            s.publishing = p
        case .subscription(var sub):
            // FIFO when the group was created so (tern admin group create NAME --fifo).
            let group = sub.hasGroup ? (try? name(of: sub.group, what: "group", code: .illegalConsumerGroup)) : nil
            sub.fifo = await group.asyncMap { g in try? await self.target(c, nil).describeGroup(g).fifo } ?? false
            sub.receiveBatchSize = settings.maxReceiveBatch
            sub.longPollingTimeout = duration(millis: settings.longPollingMillis)
            // A consumer's attempts: 17 (the first and 16 retries), each failure backing off by
            // RocketMQ's schedule: 1 s, 5 s, 10 s, 30 s, 1 min ... 10 min, 20 min, 30 min, 1 h, 2 h.
            var retry = RMQRetryPolicy()
            retry.maxAttempts = settings.maxDeliveryAttempts
            var custom = RMQCustomizedBackoff()
            custom.next = [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200].map { duration(millis: $0 * 1000) }
            retry.customizedBackoff = custom
            s.backoffPolicy = retry
            s.subscription = sub
        case nil:
            break
        }
        var metric = RMQMetric()
        metric.on = false
        s.metric = metric
        return s
    }

    // MARK: Sending

    func sendMessage(request: ServerRequest<RMQSendMessageRequest>, context: ServerContext) async throws -> ServerResponse<RMQSendMessageResponse> {
        var out = RMQSendMessageResponse()
        let messages = request.message.messages
        guard !messages.isEmpty else {
            out.status = status(.badRequest, "no messages to send")
            return ServerResponse(message: out)
        }
        let c: Clients
        do {
            c = try clients(request.metadata)
        } catch {
            out.status = status(for: error)
            return ServerResponse(message: out)
        }
        var failed: RMQStatus?
        for m in messages {
            var entry = RMQSendResultEntry()
            do {
                entry = try await send(m, c)
            } catch {
                entry.status = status(for: error)
                entry.messageID = m.systemProperties.messageID
                failed = failed ?? entry.status
            }
            out.entries.append(entry)
        }
        out.status = failed ?? status(.ok)
        return ServerResponse(message: out)
    }

    private func send(_ m: RMQMessage, _ c: Clients) async throws -> RMQSendResultEntry {
        let topic = try name(of: m.topic, what: "topic", code: .illegalTopic)
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let (message, id) = try ternMessage(m, topic: topic, maxBodyBytes: settings.maxBodyBytes, now: now)
        _ = try await topicParts(topic, c)
        let sp = m.systemProperties
        // The front picks the queue, as RocketMQ's proxy does (clients pick only an endpoint): a
        // message group always maps to the same queue, sent one at a time; others rotate.
        let sender = sp.messageType == .transaction ? c.transactionProducer(topic) : c.producer
        let receipt = try await sender.send(batch: [message])[0]
        var entry = RMQSendResultEntry()
        entry.status = status(.ok)
        entry.messageID = id.isEmpty ? receipt.messageID.description : id
        entry.offset = Int64(receipt.queueOffset)
        // Through name servers the routed producer picked a group: ids name it (`g2/<id>`).
        let handle = groupID(receipt.messageID, group: receipt.brokerGroup)
        if sp.messageType == .transaction { entry.transactionID = handle }
        if receipt.scheduled { entry.recallHandle = handle }
        return entry
    }

    func endTransaction(request: ServerRequest<RMQEndTransactionRequest>, context: ServerContext) async throws -> ServerResponse<RMQEndTransactionResponse> {
        var out = RMQEndTransactionResponse()
        let r = request.message
        do {
            let c = try clients(request.metadata)
            guard let id = GroupMessageID(r.transactionID) else {
                throw FrontError(.invalidTransactionID, "transaction id \"\(r.transactionID.prefix(40))\" is not one Tern issued")
            }
            let decision: TransactionDecision
            switch r.resolution {
            case .commit: decision = .commit
            case .rollback: decision = .rollback
            default: throw FrontError(.badRequest, "the resolution is neither COMMIT nor ROLLBACK")
            }
            let topic = try name(of: r.topic, what: "topic", code: .illegalTopic)
            let body = EndTransactionRequest(group: topic, id: id.id, decision: decision, fromCheck: r.source == .sourceServerCheck)
            _ = try await target(c, id.group, unknown: .invalidTransactionID).leaderRequest(.endTransaction, body.encoded())
            out.status = status(.ok)
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    func recallMessage(request: ServerRequest<RMQRecallMessageRequest>, context: ServerContext) async throws -> ServerResponse<RMQRecallMessageResponse> {
        var out = RMQRecallMessageResponse()
        do {
            let c = try clients(request.metadata)
            _ = try name(of: request.message.topic, what: "topic", code: .illegalTopic)
            guard let id = GroupMessageID(request.message.recallHandle) else {
                throw FrontError(.badRequest, "recall handle \"\(request.message.recallHandle.prefix(40))\" is not one Tern issued")
            }
            try await target(c, id.group).recall([id.id])
            out.messageID = id.description
            out.status = status(.ok)
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    // MARK: Not built

    func pullMessage(request: ServerRequest<RMQPullMessageRequest>, context: ServerContext) async throws -> StreamingServerResponse<RMQPullMessageResponse> {
        throw unimplemented("PullMessage", "use receive/ack (SimpleConsumer, PushConsumer)")
    }

    func updateOffset(request: ServerRequest<RMQUpdateOffsetRequest>, context: ServerContext) async throws -> ServerResponse<RMQUpdateOffsetResponse> {
        throw unimplemented("UpdateOffset", "offsets belong to pull consumption, not served over gRPC")
    }

    func getOffset(request: ServerRequest<RMQGetOffsetRequest>, context: ServerContext) async throws -> ServerResponse<RMQGetOffsetResponse> {
        throw unimplemented("GetOffset", "offsets belong to pull consumption, not served over gRPC")
    }

    func queryOffset(request: ServerRequest<RMQQueryOffsetRequest>, context: ServerContext) async throws -> ServerResponse<RMQQueryOffsetResponse> {
        throw unimplemented("QueryOffset", "offsets belong to pull consumption, not served over gRPC")
    }

    func syncLiteSubscription(
        request: ServerRequest<RMQSyncLiteSubscriptionRequest>, context: ServerContext
    ) async throws -> ServerResponse<RMQSyncLiteSubscriptionResponse> {
        throw unimplemented("SyncLiteSubscription", "Tern has no lite topics")
    }

    private func unimplemented(_ method: String, _ why: String) -> RPCError {
        RPCError(code: .unimplemented, message: "\(method) is not implemented by Tern: \(why) (docs/rocketmq.md)")
    }
}

func hostOf(_ endpoint: String) -> String {
    guard let i = endpoint.lastIndex(of: ":") else { return endpoint }
    return String(endpoint[..<i])
}

func portOf(_ endpoint: String) -> Int {
    guard let i = endpoint.lastIndex(of: ":") else { return 0 }
    return Int(endpoint[endpoint.index(after: i)...]) ?? 0
}

func isIPv4(_ host: String) -> Bool {
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts.allSatisfy { p in UInt8(p) != nil && !p.isEmpty }
}
