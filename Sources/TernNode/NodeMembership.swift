// Membership, the node's part (Raft's part: RaftMembership.swift). The configuration in effect
// comes from Raft (the last configuration entry in the log); the broker keeps the last one
// applied so that snapshots carry it. At start the node rebuilds Raft's history of
// configurations from its snapshot (or the founding one of `--peers`) and the configuration
// entries in the log after it; an install hands Raft the snapshot's.
//
// Admin requests: `memberList` (any node; progress only where the leader answers) and
// `memberChange` (the leader), answered once the configuration entry is applied.
import TernBroker
import TernProtocol
import TernRaft
import TernStorage

extension Node {
    /// The configuration the broker applied last (from a snapshot or the log), with its index.
    var appliedMembership: (index: UInt64, membership: Membership)? {
        guard let m = broker.membership, let decoded = Membership.decode(m.body) else { return nil }
        return (m.index, decoded)
    }

    /// At start, after the state was restored: Raft's configurations are the applied one (or
    /// the founding one) and those in the log after the applied state.
    func restoreMembership() throws(StorageError) {
        var history = [appliedMembership ?? (0, replica.raft.config.founding)]
        let log = replica.log
        var next = max(broker.appliedIndex + 1, log.firstIndex, history[0].index + 1)
        while next <= log.lastIndex {
            let entries = try log.read(from: next, maxBytes: 4 << 20)
            guard let last = entries.last else { break }
            for e in entries where e.type == RaftEntryType.membership {
                if let m = Membership.decode(e.body) { history.append((e.index, m)) }
            }
            next = last.index + 1
        }
        replica.raft.restoreMembership(history)
        if history.count > 1 || history[0].index > 0 {
            startReport.append("membership: \(replica.raft.membership) (entry \(replica.raft.membershipIndex))")
        }
    }

    /// Client endpoint of a member, from the configuration in effect.
    func endpoint(of id: NodeID) -> String? {
        if let e = replica.raft.membership.member(id)?.endpoint, !e.isEmpty { return e }
        return config.endpoints[id]
    }

    func memberList() -> MemberList {
        let raft = replica.raft
        var members: [MemberInfo] = []
        var target: UInt64 = 0
        for m in raft.membership.members {
            var info = MemberInfo(id: m.id.name, endpoint: endpoint(of: m.id) ?? "", learner: m.isLearner, incarnation: m.incarnation)
            if isLeader {
                if m.id == id {
                    info.match = replica.log.durableIndex
                    info.caughtUp = true
                    info.heardMillisAgo = 0
                } else {
                    let c = raft.catchUp(of: m.id)
                    target = c.target
                    info.match = c.match
                    info.caughtUp = c.caughtUp
                    info.heardMillisAgo = raft.heardTicksAgo(m.id).map { $0 * config.tickMillis } ?? UInt64.max
                }
            }
            members.append(info)
        }
        return MemberList(
            node: id.name, leader: raft.leader?.name ?? "", term: raft.term, configurationIndex: raft.membershipIndex,
            committed: raft.membershipIndex <= raft.commitIndex, lastIndex: replica.log.lastIndex, catchUpTarget: target, members: members)
    }

    /// A membership change from an admin: proposed by Raft (it checks the rules), answered once applied.
    func changeMembership(_ request: MemberChangeRequest, client: ClientRef, out: inout NodeOutput) throws(StorageError) -> ErrorBody? {
        let change: MembershipChange
        switch request.kind {
        case .addLearner:
            guard !request.endpoint.isEmpty else { return ErrorBody(code: ErrorCode.badRequest, message: "adding a member needs its endpoint (host:port)") }
            change = .addLearner(NodeID(request.id), endpoint: request.endpoint)
        case .promote: change = .promote(NodeID(request.id))
        case .remove: change = .remove(NodeID(request.id))
        }
        let (result, output) = try replica.proposeMembership(change)
        switch result {
        case .success(let index):
            pending[index] = .answer(client, .memberChange, MemberChangeDone(index: index).encoded())
            out.notices.append("proposed membership change at entry \(index): \(change)")
        case .failure(let refusal):
            try absorb(output, into: &out)
            if case .notLeader = refusal { return notLeader() }
            let code: ErrorCode
            switch refusal {
            case .termNotCommitted, .changePending: code = ErrorCode.busy
            case .notCaughtUp: code = ErrorCode.notCaughtUp
            default: code = ErrorCode.badRequest
            }
            return ErrorBody(code: code, message: refusal.description)
        }
        try absorb(output, into: &out)
        return nil
    }
}
