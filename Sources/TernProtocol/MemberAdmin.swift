// Membership administration on the wire: `tern admin member ...` (docs/operations.md).
public struct MemberChangeRequest: WireCodable, Equatable {
    public enum Kind: UInt8, Sendable { case addLearner = 1, promote = 2, remove = 3 }
    public var kind: Kind
    public var id: String
    /// "host:port" for an addition, empty otherwise.
    public var endpoint: String
    public init(kind: Kind, id: String, endpoint: String = "") {
        self.kind = kind
        self.id = id
        self.endpoint = endpoint
    }
    public func encode(into w: inout WireWriter) {
        w.u8(kind.rawValue)
        w.string(id)
        w.string(endpoint)
    }
    public init(from r: inout WireReader) throws(WireError) {
        let k = try r.u8("change kind")
        guard let kind = Kind(rawValue: k) else { throw WireError("membership change kind \(k) is unknown") }
        self.kind = kind
        id = try r.string("member id")
        endpoint = try r.string("endpoint")
    }
}

/// The configuration entry that made a change, applied.
public struct MemberChangeDone: WireCodable, Equatable {
    public var index: UInt64
    public init(index: UInt64) { self.index = index }
    public func encode(into w: inout WireWriter) { w.u64(index) }
    public init(from r: inout WireReader) throws(WireError) { index = try r.u64("index") }
}

public struct MemberInfo: WireCodable, Equatable, Sendable {
    public var id: String
    public var endpoint: String
    public var learner: Bool
    /// 0 until the leader stamped it (docs/raft.md).
    public var incarnation: UInt64
    /// As the leader sees it (0 when the answering node does not lead): the last index the
    /// member acknowledged, whether it caught up (a learner may be promoted), and the
    /// milliseconds since it was last heard from (UInt64.max: never).
    public var match: UInt64 = 0
    public var caughtUp = false
    public var heardMillisAgo = UInt64.max
    public init(id: String, endpoint: String, learner: Bool, incarnation: UInt64) {
        self.id = id
        self.endpoint = endpoint
        self.learner = learner
        self.incarnation = incarnation
    }
    public func encode(into w: inout WireWriter) {
        w.string(id)
        w.string(endpoint)
        w.bool(learner)
        w.u64(incarnation)
        w.u64(match)
        w.bool(caughtUp)
        w.u64(heardMillisAgo)
    }
    public init(from r: inout WireReader) throws(WireError) {
        id = try r.string("member id")
        endpoint = try r.string("endpoint")
        learner = try r.bool("learner")
        incarnation = try r.u64("incarnation")
        match = try r.u64("match")
        caughtUp = try r.bool("caught up")
        heardMillisAgo = try r.u64("heard")
    }
}

public struct MemberList: WireCodable, Equatable, Sendable {
    /// The node that answered, the leader it knows and the term.
    public var node: String
    public var leader: String
    public var term: UInt64
    /// The configuration in effect at the answering node: its entry (0: the founding one from
    /// `--peers`), and whether that entry is committed.
    public var configurationIndex: UInt64
    public var committed: Bool
    /// Leader: its last index, and what a learner must hold to be caught up.
    public var lastIndex: UInt64
    public var catchUpTarget: UInt64
    public var members: [MemberInfo]
    public init(
        node: String, leader: String, term: UInt64, configurationIndex: UInt64, committed: Bool, lastIndex: UInt64, catchUpTarget: UInt64,
        members: [MemberInfo]
    ) {
        self.node = node
        self.leader = leader
        self.term = term
        self.configurationIndex = configurationIndex
        self.committed = committed
        self.lastIndex = lastIndex
        self.catchUpTarget = catchUpTarget
        self.members = members
    }
    public func encode(into w: inout WireWriter) {
        w.string(node)
        w.string(leader)
        w.u64(term)
        w.u64(configurationIndex)
        w.bool(committed)
        w.u64(lastIndex)
        w.u64(catchUpTarget)
        w.u32(UInt32(members.count))
        for m in members { m.encode(into: &w) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        node = try r.string("node")
        leader = try r.string("leader")
        term = try r.u64("term")
        configurationIndex = try r.u64("configuration index")
        committed = try r.bool("committed")
        lastIndex = try r.u64("last index")
        catchUpTarget = try r.u64("catch-up target")
        members = []
        for _ in 0..<(try r.u32("members")) { members.append(try MemberInfo(from: &r)) }
    }
}
