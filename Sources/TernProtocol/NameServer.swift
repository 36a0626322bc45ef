// Name servers (docs/architecture.md, "Many groups"): what a broker group's leader registers, what
// a client asks, and the registry that answers. The registry is plain deterministic state (time
// comes in as an argument), so the `tern nameserver` process and the simulator share it.

/// Broker group names: `g1`, `orders-eu`. Lower-case letters, digits and dashes, starting with a
/// letter or digit, at most 32 bytes (they appear in ids, receipt handles and DNS names).
public enum BrokerGroupName {
    public static let defaultName = "g1"

    /// Why `name` is not a broker group name, or nil when it is one.
    public static func problem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 32 else { return "a broker group name has 1 to 32 characters (got \(bytes.count))" }
        let ok = bytes.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
        guard ok, bytes[0] != 0x2D else { return "broker group name \(name) may hold only a-z, 0-9 and '-', and starts with a letter or digit" }
        return nil
    }
}

/// A topic as one group holds it.
public struct RegisteredTopic: Equatable, Sendable {
    public var name: String
    public var queues: UInt32
    public var type: TopicType
    public init(name: String, queues: UInt32, type: TopicType = .mixed) {
        self.name = name
        self.queues = queues
        self.type = type
    }
}

/// One member of a broker group: its id and client endpoint.
public struct GroupMember: Equatable, Sendable {
    public var id: String
    public var endpoint: String
    public init(id: String, endpoint: String) {
        self.id = id
        self.endpoint = endpoint
    }
}

/// What a group's leader tells every name server, every few seconds and at once when its
/// topics change (`Opcode.registerGroup`, answered with `Empty`).
public struct GroupRegistration: WireCodable, Equatable {
    public var group: String
    /// The leader's id and its term: a registration from a lower term than the one held is stale.
    public var leader: String
    public var term: UInt64
    /// The leader's applied index when it built this registration: within a term, a lower one is stale.
    public var version: UInt64
    /// The leader's clock (ms since 1970) when it built this registration. Signed with the rest:
    /// a name server takes only a registration newer than the one it holds (so a recorded one
    /// replayed is refused) and sent within its expiry of its own clock.
    public var sentAt: UInt64 = 0
    public var members: [GroupMember]
    /// Sorted by name.
    public var topics: [RegisteredTopic]
    /// HMAC-SHA256 of the fields above under the registration key derived from the cluster
    /// secret (empty: unsigned; a name server started with a key refuses it). `signedBytes` is what is signed.
    public var mac: [UInt8] = []

    public init(group: String, leader: String, term: UInt64, version: UInt64, members: [GroupMember], topics: [RegisteredTopic]) {
        self.group = group
        self.leader = leader
        self.term = term
        self.version = version
        self.members = members
        self.topics = topics.sorted { $0.name < $1.name }
    }

    /// The bytes the mac covers: a fixed label, then every field but the mac.
    public var signedBytes: [UInt8] {
        var w = WireWriter(capacity: 64 + topics.count * 16)
        w.string("tern-register-v1")
        encodeFields(into: &w)
        return w.bytes
    }

    func encodeFields(into w: inout WireWriter) {
        w.string(group)
        w.string(leader)
        w.u64(term)
        w.u64(version)
        w.u64(sentAt)
        w.u16(UInt16(members.count))
        for m in members {
            w.string(m.id)
            w.string(m.endpoint)
        }
        w.u32(UInt32(topics.count))
        for t in topics {
            w.string(t.name)
            w.u32(t.queues)
            w.u8(t.type.rawValue)
        }
    }

    public func encode(into w: inout WireWriter) {
        encodeFields(into: &w)
        w.blob(mac)
    }

    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        leader = try r.string("leader")
        term = try r.u64("term")
        version = try r.u64("version")
        sentAt = try r.u64("sent at")
        var members: [GroupMember] = []
        for _ in 0..<(try r.u16("members")) { members.append(GroupMember(id: try r.string("member id"), endpoint: try r.string("member endpoint"))) }
        self.members = members
        let n = Int(try r.u32("topics"))
        var topics: [RegisteredTopic] = []
        topics.reserveCapacity(min(n, r.remaining / 7))
        for _ in 0..<n {
            topics.append(RegisteredTopic(name: try r.string("topic"), queues: try r.u32("queues"), type: try TopicType.decode(r.u8("topic type"))))
        }
        self.topics = topics
        mac = try r.blob("mac", limit: 64)
    }
}

/// Where one group holds a topic's queues (ids 0..<queues in that group), and how to reach it.
public struct GroupRoute: Equatable, Sendable {
    public var group: String
    public var queues: UInt32
    public var type: TopicType
    public var leader: String
    public var term: UInt64
    public var members: [GroupMember]
    public init(group: String, queues: UInt32, type: TopicType, leader: String, term: UInt64, members: [GroupMember]) {
        self.group = group
        self.queues = queues
        self.type = type
        self.leader = leader
        self.term = term
        self.members = members
    }

    /// The leader's endpoint, when it is a listed member.
    public var leaderEndpoint: String? { members.first { $0.id == leader }?.endpoint }
}

/// A name server's answer to `Opcode.topicRoute` (a `NameRequest`; an empty name lists every
/// live group with no queues): the groups holding the topic, in name order. No group holds it:
/// `topicNotFound`.
public struct TopicRoute: WireCodable, Equatable {
    public var groups: [GroupRoute]
    /// False from a name server started less than one registration period ago: it may not have
    /// heard from every group yet, so a group missing from it (or "no such topic") proves nothing.
    public var complete = true
    public init(groups: [GroupRoute], complete: Bool = true) {
        self.groups = groups.sorted { $0.group < $1.group }
        self.complete = complete
    }

    /// Queues over all groups.
    public var totalQueues: UInt32 { groups.reduce(0) { $0 + $1.queues } }

    public func encode(into w: inout WireWriter) {
        w.u16(UInt16(groups.count))
        for g in groups {
            w.string(g.group)
            w.u32(g.queues)
            w.u8(g.type.rawValue)
            w.string(g.leader)
            w.u64(g.term)
            w.u16(UInt16(g.members.count))
            for m in g.members {
                w.string(m.id)
                w.string(m.endpoint)
            }
        }
        if !complete { w.bool(false) }
    }

    public init(from r: inout WireReader) throws(WireError) {
        var groups: [GroupRoute] = []
        for _ in 0..<(try r.u16("groups")) {
            let name = try r.string("group")
            let queues = try r.u32("queues")
            let type = try TopicType.decode(r.u8("topic type"))
            let leader = try r.string("leader")
            let term = try r.u64("term")
            var members: [GroupMember] = []
            for _ in 0..<(try r.u16("members")) { members.append(GroupMember(id: try r.string("member id"), endpoint: try r.string("member endpoint"))) }
            groups.append(GroupRoute(group: name, queues: queues, type: type, leader: leader, term: term, members: members))
        }
        self.groups = groups
        if !r.atEnd { complete = try r.bool("complete") }
    }
}

/// Every live group's registration as a name server holds it (`Opcode.listBrokerGroups`,
/// `Empty` -> this), with how long ago it arrived.
public struct BrokerGroupList: WireCodable, Equatable {
    public var groups: [GroupRegistration]
    public var ageMillis: [UInt64]
    public init(groups: [GroupRegistration], ageMillis: [UInt64]) {
        self.groups = groups
        self.ageMillis = ageMillis
    }
    public func encode(into w: inout WireWriter) {
        w.u16(UInt16(groups.count))
        for (g, age) in zip(groups, ageMillis) {
            var copy = g
            copy.mac = []
            copy.encode(into: &w)
            w.u64(age)
        }
    }
    public init(from r: inout WireReader) throws(WireError) {
        groups = []
        ageMillis = []
        for _ in 0..<(try r.u16("groups")) {
            groups.append(try GroupRegistration(from: &r))
            ageMillis.append(try r.u64("age"))
        }
    }
}

/// A name server's state: the newest registration of every group, dropped when none came for
/// `expiryMillis`. Nothing is kept on disk; a restarted name server knows every group again
/// after one registration period.
public struct NameRegistry: Sendable {
    public struct Entry: Sendable, Equatable {
        public var registration: GroupRegistration
        public var receivedAt: UInt64
    }

    public var expiryMillis: UInt64
    /// Groups held at most; a registration of another group past it is refused (`full`).
    public var maxGroups = 1024
    public private(set) var entries: [String: Entry] = [:]

    public init(expiryMillis: UInt64 = 40_000) { self.expiryMillis = expiryMillis }

    public enum Outcome: Equatable, Sendable {
        case accepted
        /// Not newer than the registration held (a lower term; in the same term a lower
        /// version; in the same term and version, not sent later): a deposed leader still
        /// registering, a delayed packet, a replay. Ignored (not an error to it).
        case stale
        /// A new group while `maxGroups` are held.
        case full
    }

    /// Takes `r` if it is newer than what is held.
    public mutating func register(_ r: GroupRegistration, now: UInt64) -> Outcome {
        if let held = entries[r.group], now &- held.receivedAt < expiryMillis || now < held.receivedAt {
            let h = held.registration
            if (r.term, r.version, r.sentAt) <= (h.term, h.version, h.sentAt) { return .stale }
        } else if entries[r.group] == nil && entries.count >= maxGroups {
            return .full
        }
        entries[r.group] = Entry(registration: r, receivedAt: now)
        return .accepted
    }

    /// Drops the groups not heard from within the expiry; returns their names, sorted.
    public mutating func expire(now: UInt64) -> [String] {
        let gone = entries.filter { now > $0.value.receivedAt && now - $0.value.receivedAt >= expiryMillis }.map(\.key).sorted()
        for g in gone { entries[g] = nil }
        return gone
    }

    /// The live groups, sorted by name.
    public func live(now: UInt64) -> [Entry] {
        entries.values.filter { now <= $0.receivedAt || now - $0.receivedAt < expiryMillis }.sorted { $0.registration.group < $1.registration.group }
    }

    /// The groups that hold `topic`, in name order (empty topic: every live group, with no queues).
    public func route(_ topic: String, now: UInt64) -> TopicRoute {
        var out: [GroupRoute] = []
        for e in live(now: now) {
            let r = e.registration
            if topic.isEmpty {
                out.append(GroupRoute(group: r.group, queues: 0, type: .mixed, leader: r.leader, term: r.term, members: r.members))
            } else if let t = r.topics.first(where: { $0.name == topic }) {
                out.append(GroupRoute(group: r.group, queues: t.queues, type: t.type, leader: r.leader, term: r.term, members: r.members))
            }
        }
        return TopicRoute(groups: out)
    }
}
