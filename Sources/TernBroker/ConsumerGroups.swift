// Consumer group membership and queue assignment, kept by the leader only (soft state: after a
// failover, consumers heartbeat the new leader and the groups form again within one heartbeat).
// Offsets are not here: they are replicated entries (`OffsetCommit`). Time comes in as an
// argument; nothing here reads a clock.
import TernProtocol

public final class ConsumerGroups {
    struct Member {
        var mode: ConsumeMode
        var topics: [String]
        var lastSeen: UInt64
    }

    /// Group -> client id -> member.
    var groups: [String: [String: Member]] = [:]
    var generations: [String: UInt64] = [:]
    /// A member silent this long (milliseconds) loses its queues.
    public var sessionTimeoutMillis: UInt64

    public init(sessionTimeoutMillis: UInt64 = 10_000) {
        self.sessionTimeoutMillis = sessionTimeoutMillis
    }

    public func heartbeat(_ request: HeartbeatRequest, now: UInt64, queuesOf: (String) -> UInt32?) -> HeartbeatResponse {
        let member = Member(mode: request.mode, topics: request.topics.sorted(), lastSeen: now)
        let old = groups[request.group]?[request.clientID]
        if old == nil || old!.topics != member.topics || old!.mode != member.mode {
            generations[request.group, default: 0] += 1
        }
        groups[request.group, default: [:]][request.clientID] = member
        return HeartbeatResponse(
            assigned: assignment(group: request.group, clientID: request.clientID, queuesOf: queuesOf), generation: generations[request.group] ?? 0)
    }

    public func unregister(group: String, clientID: String) {
        if groups[group]?.removeValue(forKey: clientID) != nil { generations[group, default: 0] += 1 }
        if groups[group]?.isEmpty == true { groups[group] = nil }
    }

    /// Drops members not heard from within the session timeout.
    public func expire(now: UInt64) {
        for g in groups.keys.sorted() {
            let dead = groups[g]!.filter { now >= $0.value.lastSeen + sessionTimeoutMillis }.keys.sorted()
            for c in dead { unregister(group: g, clientID: c) }
        }
    }

    /// Forgets every member (the node stopped leading; groups form again at the next leader).
    public func reset() {
        groups = [:]
    }

    public func members(of group: String) -> [String] { (groups[group] ?? [:]).keys.sorted() }

    /// Groups with live members, sorted.
    public func groupNames() -> [String] { groups.keys.sorted() }

    /// The queues `clientID` owns: in broadcasting mode all of each subscribed topic's; in
    /// clustering mode a contiguous share of each topic's queues, the members (subscribed to it,
    /// sorted by id) taking them in turn, the first ones one more when they do not divide evenly.
    public func assignment(group: String, clientID: String, queuesOf: (String) -> UInt32?) -> [QueueRef] {
        guard let members = groups[group], let me = members[clientID] else { return [] }
        var out: [QueueRef] = []
        for topic in me.topics {
            guard let n = queuesOf(topic), n > 0 else { continue }
            if me.mode == .broadcasting {
                out += (0..<n).map { QueueRef(topic: topic, queueID: $0) }
                continue
            }
            let peers = members.filter { $0.value.mode == .clustering && $0.value.topics.contains(topic) }.keys.sorted()
            guard let k = peers.firstIndex(of: clientID) else { continue }
            let range = ConsumerGroups.share(queues: Int(n), members: peers.count, index: k)
            out += range.map { QueueRef(topic: topic, queueID: UInt32($0)) }
        }
        return out
    }

    /// Member `index` of `members` gets this range of `queues`.
    public static func share(queues: Int, members: Int, index: Int) -> Range<Int> {
        let base = queues / members
        let extra = queues % members
        let start = index * base + min(index, extra)
        let count = base + (index < extra ? 1 : 0)
        return start..<(start + count)
    }
}
