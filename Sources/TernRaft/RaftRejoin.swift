// Rejoining after a lost disk: the node abstains from voting and campaigning until it has heard
// every peer's term and caught up with a leader of a term at least that high.

extension Raft {
    /// A rejoining node records the highest term each peer has shown. Every message carries at
    /// least its sender's current term, and a candidate persisted its term before asking for
    /// votes, so once every peer has been heard from, the maximum bounds every term this node
    /// could have voted in before it lost its disk.
    func noteTermHeard(_ m: Message) {
        heardTerms[m.from] = max(heardTerms[m.from] ?? 0, m.term)
        if rejoinFloor == nil && counted.allSatisfy({ heardTerms[$0] != nil }) {
            rejoinFloor = counted.map { heardTerms[$0]! }.max() ?? term
        }
    }

    /// Ends the abstention once the log holds everything a leader of a term at or above the
    /// floor had committed: from then on this node's vote cannot help elect a leader that lacks
    /// a committed entry. The current term counts as voted in (its old self may have voted in
    /// it), so the first new vote is in a later term, above the floor.
    ///
    /// The leader's commit index counts only once it covers an entry of the leader's own term:
    /// a new leader does not know how far earlier terms committed until its no-op commits
    /// (found by the simulator: a member rejoined against such a leader, missing committed
    /// entries, and then helped elect a leader without them).
    func maybeFinishRejoin() {
        guard role == .follower, leader != nil, let floor = rejoinFloor, term >= floor,
            leaderCommitSeen > 0, verifiedIndex >= leaderCommitSeen, log.durableIndex >= leaderCommitSeen,
            (try? termAt(leaderCommitSeen)) == term
        else { return }
        rejoining = false
        if vote == nil { vote = id }
        out.hardState = hardState
    }

    /// The node found nothing usable on its disk after a start (its log dropped): from now on it
    /// behaves as a member that lost its disk, persisted.
    public func beginRejoin() -> Effects {
        precondition(log.lastIndex == 0, "rejoin with a log that ends at \(log.lastIndex)")
        rejoining = true
        rejoinFloor = nil
        heardTerms = [:]
        leaderCommitSeen = 0
        commitIndex = 0
        appliedIndex = 0
        reportedCommit = 0
        verifiedIndex = 0
        out.hardState = hardState
        return finish()
    }
}
