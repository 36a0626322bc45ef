// The safety and liveness checks of the Raft log (election safety, state machine safety, log
// matching, linearizable reads), and the final check of every node's stored messages.
import TernRaft
import TernStorage

/// The safety and liveness checkers. Each is shown to catch a planted bug (tests, and
/// `tern-sim --plant`).
struct Checker {
    var plantedBugs: PlantedBugs = []
    var violations: [String] = []
    var leaderOfTerm: [UInt64: NodeID] = [:]
    /// The highest term any node reached: terms beyond `leaderOfTerm.count` had no leader.
    var highestTerm: UInt64 = 0
    /// Index -> (term, body digest, chain) of the entry applied there; every node must agree.
    var committed: [UInt64: (term: UInt64, digest: UInt64, chain: UInt64)] = [:]
    var maxCommitted: UInt64 = 0
    var acknowledged = 0
    var maxAckedIndex: UInt64 = 0
    var reads = 0
    var livenessStart: UInt64 = 0
    var livenessAckIndex: UInt64?
    /// The latest configuration entry applied by any node (so committed), and its index.
    var committedMembership: (index: UInt64, membership: Membership)?
    /// The first committed index of each term (for the membership change rules).
    var firstCommittedInTerm: [UInt64: UInt64] = [:]

    mutating func leaderElected(_ id: NodeID, term: UInt64) {
        if let other = leaderOfTerm[term], other != id {
            violations.append("election safety: \(other) and \(id) both lead term \(term)")
        }
        leaderOfTerm[term] = id
    }

    static func fnv(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// State machine safety: every node applies the same entry at each index, and the same
    /// sequence (a hash chain over all entries up to it), and applies in order without gaps.
    mutating func applied(node: SimNode, entry e: LogEntry) {
        if e.index != node.appliedIndex + 1 {
            violations.append("\(node.id) applied \(e.index) after \(node.appliedIndex)")
        }
        let digest = Checker.fnv(e.body) ^ UInt64(e.type) << 56
        var chain = node.chain ^ digest ^ e.term &* 0x9E37_79B9_7F4A_7C15
        chain = chain &* 0x0000_0100_0000_01B3
        node.chain = chain
        if let c = committed[e.index] {
            if c.term != e.term || c.digest != digest {
                violations.append(
                    "state machine safety: \(node.id) applied index \(e.index) term \(e.term), another node applied term \(c.term) there (a committed entry was lost or changed)"
                )
            } else if c.chain != chain {
                violations.append("log matching: \(node.id)'s applied sequence differs before index \(e.index)")
            }
        } else {
            committed[e.index] = (e.term, digest, chain)
            maxCommitted = max(maxCommitted, e.index)
            firstCommittedInTerm[e.term] = min(firstCommittedInTerm[e.term] ?? e.index, e.index)
            if e.type == RaftEntryType.membership, e.index > (committedMembership?.index ?? 0), let m = Membership.decode(e.body) {
                committedMembership = (e.index, m)
            }
        }
    }

    /// Snapshot digests by index: replicas (and one replica again after a restart) that
    /// snapshot the same index must write the same bytes.
    var snapshots: [UInt64: (node: NodeID, digest: UInt64)] = [:]
    var snapshotsCompared = 0

    mutating func snapshot(node: SimNode, index: UInt64, digest: UInt64) {
        if let s = snapshots[index] {
            snapshotsCompared += 1
            if s.digest != digest {
                violations.append(
                    "snapshot digests differ at index \(index): \(s.node) wrote \(String(s.digest, radix: 16)), \(node.id) \(String(digest, radix: 16))")
            }
        } else {
            snapshots[index] = (node.id, digest)
        }
    }

    mutating func acknowledge(index: UInt64, at time: UInt64) {
        acknowledged += 1
        maxAckedIndex = max(maxAckedIndex, index)
        if livenessStart > 0 && time >= livenessStart && livenessAckIndex == nil { livenessAckIndex = index }
    }

    mutating func read(by id: NodeID, servedIndex: UInt64, term: UInt64) {
        reads += 1
        if servedIndex < maxAckedIndex {
            violations.append(
                "linearizable read: \(id) (term \(term), holding a lease) served index \(servedIndex) after index \(maxAckedIndex) was acknowledged")
        }
    }

}

extension World {
    /// The commitment rule (the Raft paper's section 5.4.2, Figure 8): a leader moves its commit
    /// index only to an entry of its own term (earlier entries commit with it, never by being
    /// counted on their own). Checked from outside on every output of a node that leads the same
    /// term before and after it.
    func checkCommitmentRule(_ node: SimNode) {
        guard let replica = node.replica, replica.raft.role == .leader else {
            node.leaderCommit = nil
            return
        }
        let raft = replica.raft
        defer { node.leaderCommit = (raft.term, raft.commitIndex) }
        guard let before = node.leaderCommit, before.term == raft.term, raft.commitIndex > before.commit else { return }
        if let t = try? replica.log.term(at: raft.commitIndex), t != raft.term {
            checker.violations.append(
                "commitment rule: \(node.id), leader of term \(raft.term), moved its commit index from \(before.commit) to \(raft.commitIndex), an entry of term \(t)"
            )
        }
    }

    /// A linearizable read served by a leader under lease: it must reflect every write
    /// acknowledged before the read began.
    func read() {
        let node = nodes[clientLeaderGuess]
        guard let replica = node.replica, now >= node.pausedUntil, replica.raft.hasLease else { return }
        checker.read(by: node.id, servedIndex: replica.raft.commitIndex, term: replica.raft.term)
    }

    /// After the liveness phase: every node that applied every acknowledged entry holds every
    /// acknowledged message where its receipt says, each queue in log order, nothing twice and
    /// nothing that no producer sent.
    func finalCheck() {
        for node in nodes {
            guard let n = node.node, node.appliedIndex >= checker.maxAckedIndex else { continue }
            do {
                try messages.checkStored(n, node: node.id, releasedBy: (livenessMetAt ?? now) / 1000)
                try messages.checkRetries(n, node: node.id, group: "g")
                try transactions.check(n, node: node.id, &messages)
            } catch {
                messages.violations.append("\(node.id): reading its queues failed: \(error)")
            }
        }
    }
}
