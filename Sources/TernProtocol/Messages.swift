// Request and response bodies of the client protocol (docs/protocol.md lists them byte by
// byte). Each type encodes itself into a `WireWriter` and decodes from a `WireReader`; decoding
// rejects trailing bytes. The send body is also what the leader stores in the log, behind an
// eight-byte store timestamp, so a message is never re-encoded between socket and disk.
//
// This file holds the opcodes and what every body shares (`WireCodable`, the empty body, the
// NOT_LEADER detail, message ids and queue references). The bodies, by opcode family, are in
// Send.swift, Pull.swift, Offsets.swift, Admin.swift, Receive.swift and Transactions.swift.

public enum Opcode: UInt16, Sendable, CaseIterable {
    case queryRoute = 1
    case send = 2
    case pull = 3
    case heartbeat = 4
    case commitOffset = 5
    case queryOffset = 6
    case createTopic = 7
    case deleteTopic = 8
    case listTopics = 9
    case describeTopic = 10
    case clusterStatus = 11
    case transferLeader = 12
    case unregister = 13
    case updateTopic = 14
    /// Look a message up by id or by key.
    case queryMessage = 15
    /// Move a group's offsets to the first message stored at or after a time.
    case resetOffset = 16
    /// Cancel delayed messages that are still pending.
    case recall = 17
    /// Orderly consumption: lock queues for a group member (a lease), or release them.
    case lockQueues = 18
    case unlockQueues = 19
    /// A consumer gives a message back for a later retry (or the dead-letter queue).
    case sendBack = 20
    /// Commit or roll back a transactional (half) message.
    case endTransaction = 21
    /// A transactional producer waits for the broker's questions about undecided half messages.
    case pollTransactionChecks = 22
    /// Receive/ack consumption (RocketMQ 5's SimpleConsumer): take messages invisible for a while,
    /// acknowledge them by receipt handle, or change how long they stay invisible.
    case receive = 23
    case ack = 24
    case changeInvisible = 25
    /// Take a broker snapshot of the applied state now (any node; answered with `SnapshotTaken`).
    case takeSnapshot = 26
    /// Client authentication (docs/security.md): `AuthHello`, answered with `AuthChallenge`;
    /// then `AuthProof`, answered with an empty body. The connection then speaks for the account.
    case authHello = 27
    case authProof = 28
    /// Accounts (admin right): `AclCommand` (put or delete), answered empty once applied; the
    /// list (`AccountList`, secrets left out).
    case aclChange = 29
    case aclList = 30
    /// Membership (docs/raft.md, "Membership"): the configuration with each member's progress
    /// as the leader sees it (`MemberList`, any node; only the leader knows progress); a change
    /// (`MemberChangeRequest`, admin right, the leader), answered with `MemberChangeDone` once
    /// the configuration entry is applied.
    case memberList = 31
    case memberChange = 32
    /// Consumer groups with settings (`GroupRequest` -> `Empty`; `NameRequest` -> `GroupInfo`).
    case createGroup = 33
    case describeGroup = 34
    /// Consumer progress (`Empty` -> `GroupList`; `NameRequest` -> `GroupProgress`).
    case listGroups = 35
    case groupProgress = 36
    /// Message trace (docs/operations.md): a message's steps (`MessageIDRequest` with one id ->
    /// `MessageTrace`, any node), and tracing on or off for a topic (`TraceTopicRequest` ->
    /// `Empty`, admin right, the leader).
    case traceMessage = 37
    case traceTopic = 38
    /// Name servers only (docs/architecture.md, "Many groups"): a group leader's
    /// `GroupRegistration` (answered `Empty`); a topic's route (`NameRequest` -> `TopicRoute`);
    /// every live group's registration (`Empty` -> `BrokerGroupList`).
    case registerGroup = 39
    case topicRoute = 40
    case listBrokerGroups = 41
    /// A Raft message between members (one way, no response). With peer authentication on, only
    /// on a connection that completed the handshake below, its body sealed by the session's tag.
    case raft = 100
    /// Peer handshake (docs/security.md): the connecting member's hello (answered with the
    /// responder's proof), then its own proof (answered with an empty body).
    case peerHello = 101
    case peerProof = 102
}

/// Error codes of the broker's operations (codes below 100 are the frame layer's, `ErrorBody`).
/// Something that crosses the wire as a body.
public protocol WireCodable: Sendable {
    func encode(into w: inout WireWriter)
    init(from r: inout WireReader) throws(WireError)
}

extension WireCodable {
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        encode(into: &w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> Self {
        var r = WireReader(bytes)
        let v = try Self(from: &r)
        try r.finish(String(describing: Self.self))
        return v
    }
}

/// An empty body.
public struct Empty: WireCodable, Equatable {
    public init() {}
    public func encode(into w: inout WireWriter) {}
    public init(from r: inout WireReader) throws(WireError) {}
}

/// The detail of a NOT_LEADER error: who leads, where to reach it, in which term.
public struct NotLeaderDetail: WireCodable, Equatable {
    /// Empty when the node knows no leader (an election is on).
    public var leader: String
    public var endpoint: String
    public var term: UInt64
    public init(leader: String, endpoint: String, term: UInt64) {
        self.leader = leader
        self.endpoint = endpoint
        self.term = term
    }
    public func encode(into w: inout WireWriter) {
        w.string(leader)
        w.string(endpoint)
        w.u64(term)
    }
    public init(from r: inout WireReader) throws(WireError) {
        leader = try r.string("leader")
        endpoint = try r.string("endpoint")
        term = try r.u64("term")
    }
}

/// A message's id: the log entry that stores it and its slot in that entry. Printed as 20
/// upper-case hex digits (16 for the index, 4 for the slot); unique within a Raft group.
public struct MessageID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var entryIndex: UInt64
    public var slot: UInt16
    public init(entryIndex: UInt64, slot: UInt16) {
        self.entryIndex = entryIndex
        self.slot = slot
    }
    public init?(_ text: String) {
        guard text.utf8.count == 20, let index = UInt64(text.prefix(16), radix: 16), let slot = UInt16(text.suffix(4), radix: 16) else { return nil }
        self.init(entryIndex: index, slot: slot)
    }
    public var description: String {
        let i = String(entryIndex, radix: 16, uppercase: true)
        let s = String(slot, radix: 16, uppercase: true)
        return String(repeating: "0", count: 16 - i.count) + i + String(repeating: "0", count: 4 - s.count) + s
    }
    public static func < (a: MessageID, b: MessageID) -> Bool { (a.entryIndex, a.slot) < (b.entryIndex, b.slot) }
}

/// A (topic, queue) pair.
public struct QueueRef: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var topic: String
    public var queueID: UInt32
    public init(topic: String, queueID: UInt32) {
        self.topic = topic
        self.queueID = queueID
    }
    public static func < (a: QueueRef, b: QueueRef) -> Bool { (a.topic, a.queueID) < (b.topic, b.queueID) }
    public var description: String { "\(topic)#\(queueID)" }
}
