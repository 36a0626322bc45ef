// Membership administration from the client's side (docs/operations.md, "Replacing a member").
import TernProtocol

extension TernCluster {
    /// The configuration with each member's progress, as the leader sees it (a follower's answer,
    /// without progress, when no leader answers).
    public func members() async throws -> MemberList {
        _ = try? await queryRoute()
        // Every known member in turn, the leader first: the leader's answer (with progress), else
        // a member's. A node in no configuration yet answers with no members and is passed over:
        // a new member waiting at the address of the one it replaces, which the others may still
        // name as the leader for a moment (chaos seed 301 with two groups).
        var order = knownEndpoints
        if let l = knownLeader { order = [l] + order.filter { $0 != l } }
        var fallback: MemberList?
        for e in order {
            guard let list = try? MemberList.decode(try await call(endpoint: e, .memberList, [])), !list.members.isEmpty else { continue }
            if list.node == list.leader { return list }
            if fallback == nil { fallback = list }
        }
        if let fallback { return fallback }
        return try MemberList.decode(try await anyCall(.memberList, []))
    }

    /// Proposes a change at the leader; returns the index of the configuration entry, once
    /// applied. A learner not caught up is refused at once (NOT_CAUGHT_UP); a change while
    /// another is pending waits for it (BUSY is retried until the request timeout).
    @discardableResult
    public func changeMembers(_ request: MemberChangeRequest) async throws -> UInt64 {
        try MemberChangeDone.decode(try await leaderCall(.memberChange, request.encoded())).index
    }
}
