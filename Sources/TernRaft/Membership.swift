// The group's configuration: who the members are, which of them vote, where they listen, and
// which incarnation of each the group knows. It is replicated state: a log entry of type
// `RaftEntryType.membership` holds a whole configuration, and it is carried in snapshots.
//
// A member's incarnation is a number its replica drew when its state file was first written
// (stored with its term and vote). A machine that comes back with an empty disk draws a new
// one: the group does not take it for the member it was (docs/raft.md, "Membership"). 0 means
// "not known yet": the founding members of a group (from `--peers`) and a learner the leader has
// not heard from; the leader fills it in ("stamps" it) from the first message it hears.

public struct Member: Equatable, Sendable, CustomStringConvertible {
    public var id: NodeID
    /// Where the member listens (clients and peers), "host:port".
    public var endpoint: String
    /// 0: not known yet (see the file's header).
    public var incarnation: UInt64
    /// Receives the log, does not vote, counts in no quorum.
    public var isLearner: Bool

    public init(id: NodeID, endpoint: String, incarnation: UInt64 = 0, isLearner: Bool = false) {
        self.id = id
        self.endpoint = endpoint
        self.incarnation = incarnation
        self.isLearner = isLearner
    }

    public var description: String {
        "\(id)@\(endpoint)\(isLearner ? " (learner)" : "")\(incarnation == 0 ? "" : " #\(String(incarnation, radix: 16))")"
    }
}

public struct Membership: Equatable, Sendable, CustomStringConvertible {
    /// Sorted by id, ids unique.
    public private(set) var members: [Member]

    public init(_ members: [Member] = []) {
        self.members = members.sorted { $0.id < $1.id }
    }

    /// Founding voters with their endpoints ("" where unknown).
    public init(voters: [NodeID], endpoints: [NodeID: String] = [:]) {
        self.init(voters.map { Member(id: $0, endpoint: endpoints[$0] ?? "") })
    }

    public var voters: [NodeID] { members.filter { !$0.isLearner }.map(\.id) }
    public var learners: [NodeID] { members.filter(\.isLearner).map(\.id) }
    public var ids: [NodeID] { members.map(\.id) }
    public func member(_ id: NodeID) -> Member? { members.first { $0.id == id } }

    /// True when `id` votes in this configuration as the incarnation given.
    public func isVoter(_ id: NodeID, incarnation: UInt64) -> Bool {
        guard let m = member(id), !m.isLearner else { return false }
        return m.incarnation == 0 || m.incarnation == incarnation
    }

    public mutating func upsert(_ m: Member) {
        members.removeAll { $0.id == m.id }
        members.append(m)
        members.sort { $0.id < $1.id }
    }

    public mutating func remove(_ id: NodeID) { members.removeAll { $0.id == id } }

    public var description: String { "[" + members.map(\.description).joined(separator: ", ") + "]" }

    // MARK: Encoding
    // Layout: version u8 (1), count u16, then per member: id (u8 length, UTF-8), endpoint (u8
    // length, UTF-8), incarnation u64, flags u8 (bit 0: learner). Little-endian.

    public func encode() -> [UInt8] {
        var b: [UInt8] = [1]
        b += [UInt8(members.count & 0xFF), UInt8(members.count >> 8)]
        for m in members {
            let id = Array(m.id.name.utf8.prefix(255)), endpoint = Array(m.endpoint.utf8.prefix(255))
            b.append(UInt8(id.count))
            b += id
            b.append(UInt8(endpoint.count))
            b += endpoint
            for k in 0..<8 { b.append(UInt8(truncatingIfNeeded: m.incarnation >> (8 * UInt64(k)))) }
            b.append(m.isLearner ? 1 : 0)
        }
        return b
    }

    /// Nil when the bytes are not a configuration.
    public static func decode(_ b: [UInt8]) -> Membership? {
        var at = 0
        func byte() -> UInt8? {
            guard at < b.count else { return nil }
            defer { at += 1 }
            return b[at]
        }
        func string() -> String? {
            guard let n = byte(), at + Int(n) <= b.count else { return nil }
            defer { at += Int(n) }
            // Valid UTF-8 only: a replacement character would not encode back to these bytes
            // (found by fuzzing: an id of 0xFF bytes re-encoded longer, and cut).
            return String(validating: b[at..<(at + Int(n))], as: UTF8.self)
        }
        guard byte() == 1, let lo = byte(), let hi = byte() else { return nil }
        var members: [Member] = []
        for _ in 0..<(Int(lo) | Int(hi) << 8) {
            guard let id = string(), !id.isEmpty, let endpoint = string(), at + 9 <= b.count else { return nil }
            var incarnation: UInt64 = 0
            for k in 0..<8 { incarnation |= UInt64(b[at + k]) << (8 * UInt64(k)) }
            at += 8
            guard let flags = byte(), flags <= 1 else { return nil }
            guard !members.contains(where: { $0.id.name == id }) else { return nil }
            members.append(Member(id: NodeID(id), endpoint: endpoint, incarnation: incarnation, isLearner: flags == 1))
        }
        guard at == b.count else { return nil }
        return Membership(members)
    }
}

/// A change an operator asks for. One is pending at a time.
public enum MembershipChange: Equatable, Sendable, CustomStringConvertible {
    /// Adds a member that receives the log but does not vote.
    case addLearner(NodeID, endpoint: String)
    /// Makes a caught-up learner a voter.
    case promote(NodeID)
    /// Removes a voter or a learner (the leader itself too: it steps down once that commits).
    case remove(NodeID)

    public var description: String {
        switch self {
        case .addLearner(let id, let e): return "add \(id) at \(e) as a learner"
        case .promote(let id): return "promote \(id)"
        case .remove(let id): return "remove \(id)"
        }
    }
}

/// Why a change was not proposed.
public enum MembershipRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    case notLeader(leader: NodeID?, term: UInt64)
    /// The leader has not yet committed an entry of its own term (try again shortly).
    case termNotCommitted
    /// The configuration entry at `index` is not committed yet.
    case changePending(index: UInt64)
    case unknownMember(NodeID)
    case alreadyMember(NodeID)
    case notLearner(NodeID)
    /// The learner has acknowledged `match` of the leader's `target` (its last index an
    /// election timeout ago), or the leader has not heard from it within an election timeout.
    case notCaughtUp(NodeID, match: UInt64, target: UInt64)
    /// Removing the only voter would leave nobody to decide anything.
    case lastVoter(NodeID)
    case invalid(String)

    public var description: String {
        switch self {
        case .notLeader(let l, let t): return "not the leader (the leader is \(l?.name ?? "unknown") in term \(t))"
        case .termNotCommitted: return "the leader has not yet committed an entry of its term; retry shortly"
        case .changePending(let i): return "a membership change (entry \(i)) is not committed yet; one change at a time"
        case .unknownMember(let id): return "\(id) is not a member"
        case .alreadyMember(let id): return "\(id) is already a member"
        case .notLearner(let id): return "\(id) is a voter already"
        case .notCaughtUp(let id, let m, let t):
            return
                "\(id) has not caught up: it holds the log through \(m), and must reach \(t) (the leader's end an election timeout ago) and answer within an election timeout"
        case .lastVoter(let id): return "\(id) is the only voter; add and promote another member first"
        case .invalid(let why): return why
        }
    }
}
