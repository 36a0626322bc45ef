// Membership administration from the client's side (docs/operations.md, "Replacing a member").
import TernProtocol

extension TernCluster {
    /// The configuration with each member's progress, as the leader sees it (a follower's answer,
    /// without progress, when no leader answers).
    public func members() async throws -> MemberList {
        _ = try? await queryRoute()
        if let leader = knownLeader, let list = try? MemberList.decode(try await call(endpoint: leader, .memberList, [])), list.node == list.leader {
            return list
        }
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
