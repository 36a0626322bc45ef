// Transactional messages (RocketMQ's two-phase send): a half message, the producer's local
// transaction, then commit or rollback. A decision that never reaches the broker (the producer
// crashed, the leader failed over, the local transaction said "unknown") is asked for again:
// the broker checks back with a live producer of the same group, which answers from its
// `checker`.
import NIOConcurrencyHelpers
import TernProtocol

/// The local transaction's outcome.
public enum LocalTransactionState: Sendable, Equatable {
    case commit
    case rollback
    /// Not known yet: the broker will check back later.
    case unknown
}

public struct TransactionReceipt: Sendable, Equatable {
    /// The half message (its id is the message's id once committed).
    public var receipt: SendReceipt
    /// What the local transaction decided.
    public var state: LocalTransactionState
    /// The decision reached the broker (false when it was unknown or could not be delivered;
    /// the broker then checks back).
    public var ended: Bool
}

/// Sends transactional messages and answers the broker's checks for its group.
///
/// ```swift
/// let producer = TransactionProducer(cluster: cluster, group: "payments") { half in
///     // The broker asks about a half message left undecided: look the order up.
///     return db.orderExists(half.message.keys.first ?? "") ? .commit : .rollback
/// }
/// try await producer.start()
/// let r = try await producer.send(Message(topic: "orders", keys: ["o-42"], body: bytes)) { _ in
///     try db.insertOrder("o-42")      // the local transaction
///     return .commit
/// }
/// ```
///
/// Checks: the first some 6 s after the half message was stored, then every 30 s, at most 15
/// times (the broker's settings); then the broker rolls the message back.
public final class TransactionProducer: Sendable {
    public typealias Checker = @Sendable (ReceivedMessage) async -> LocalTransactionState
    public let producer: Producer
    public let clientID: String
    let checker: Checker
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)

    public init(cluster: TernCluster, group: String, clientID: String? = nil, checker: @escaping Checker) {
        producer = Producer(cluster: cluster, group: group)
        self.clientID = clientID ?? PullConsumer.defaultClientID()
        self.checker = checker
    }

    public var group: String { producer.group }

    /// Starts answering the broker's checks (a long poll held at the leader).
    public func start() async throws {
        let t = Task { await self.pollChecks() }
        task.withLockedValue { $0 = t }
    }

    /// Stops answering checks. The poll held at the leader ends with its connection (when the
    /// cluster shuts down) or its wait; this does not wait for it.
    public func shutdown() async {
        let t = task.withLockedValue { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        t?.cancel()
    }

    /// Sends `message` as a half message, runs `local` once it is stored, and commits or rolls
    /// back by its answer (a throw rolls back). An unknown answer, or a decision that cannot
    /// be delivered, is left to the broker's checks.
    public func send(_ message: Message, local: @Sendable (SendReceipt) async throws -> LocalTransactionState) async throws -> TransactionReceipt {
        guard message.properties["DELAY"] == nil, message.properties["TIMER_DELAY_MS"] == nil, message.properties["TIMER_DELIVER_MS"] == nil else {
            throw ClientError.invalidArgument("a transactional message cannot also be delayed")
        }
        var half = message
        half.properties[TransactionProperty.half] = "true"
        let receipt = try await producer.send(half)
        var state: LocalTransactionState
        do {
            state = try await local(receipt)
        } catch {
            state = .rollback
        }
        var ended = false
        if state != .unknown {
            ended = (try? await end(receipt.groupMessageID, state == .commit ? .commit : .rollback, fromCheck: false)) != nil
        }
        return TransactionReceipt(receipt: receipt, state: state, ended: ended)
    }

    /// Commits or rolls back a half message of this group (also usable after a restart, by id).
    public func end(_ id: MessageID, _ decision: TransactionDecision, fromCheck: Bool = false) async throws {
        try await end(GroupMessageID(group: nil, id: id), decision, fromCheck: fromCheck)
    }

    /// Through name servers the id names the group that holds the half message (`g2/...`).
    public func end(_ id: GroupMessageID, _ decision: TransactionDecision, fromCheck: Bool = false) async throws {
        let cluster = producer.cluster
        if cluster.isRouted && id.group == nil {
            throw ClientError.invalidArgument("transaction \(id) names no broker group (g2/...) and this client routes over many")
        }
        _ = try await cluster.groupCall(
            id.group ?? "", .endTransaction, EndTransactionRequest(group: group, id: id.id, decision: decision, fromCheck: fromCheck).encoded())
    }

    private func pollChecks() async {
        guard let router = producer.cluster.router else { return await pollChecks(in: producer.cluster, name: "") }
        // Every broker group's leader checks its own half messages: one poll per group, and
        // groups that register later are joined within 10 s.
        var loops: [String: Task<Void, Never>] = [:]
        while !Task.isCancelled {
            for g in (try? await router.liveGroups()) ?? [] where loops[g.group] == nil {
                let target = router.cluster(g)
                loops[g.group] = Task { await self.pollChecks(in: target, name: g.group) }
            }
            try? await Task.sleep(for: .seconds(10))
        }
        for t in loops.values { t.cancel() }
    }

    private func pollChecks(in target: TernCluster, name: String) async {
        let poll = TransactionCheckPoll(group: group, clientID: clientID, maxWaitMillis: 20_000).encoded()
        while !Task.isCancelled {
            do {
                let body = try await target.leaderCall(.pollTransactionChecks, poll, timeoutMillis: 25_000)
                for var half in try MessageList.decode(body).messages {
                    half.brokerGroup = name
                    let state = await checker(half)
                    guard state != .unknown else { continue }
                    try? await end(half.groupMessageID, state == .commit ? .commit : .rollback, fromCheck: true)
                }
            } catch {
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}
