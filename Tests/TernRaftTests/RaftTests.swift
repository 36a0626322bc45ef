import Testing

@testable import TernRaft

// Tests named after the Raft paper's sections (Ongaro & Ousterhout, "In Search of an
// Understandable Consensus Algorithm", extended version) and the thesis for pre-vote,
// check-quorum and leadership transfer.

@Suite("Raft §5.2: leader election")
struct ElectionTests {
    @Test("a node that times out wins with a majority; every node agrees and the no-op commits")
    func electsLeader() {
        let net = Network(3)
        net.elect("n1")
        #expect(net["n1"].role == .leader)
        #expect(net["n1"].term == 1, "pre-vote must not spend a term")
        #expect(net["n2"].leader == "n1" && net["n3"].leader == "n1")
        #expect(net.log("n1").entries.map(\.type) == [RaftEntryType.noop])
        net.tickAll(times: 2)
        #expect(net["n2"].commitIndex == 1 && net["n3"].commitIndex == 1)
        // What the metrics count: one election started and won, by n1 alone.
        #expect(net["n1"].electionsStarted == 1 && net["n1"].leadershipsWon == 1)
        #expect(net["n2"].electionsStarted == 0 && net["n3"].leadershipsWon == 0)
    }

    @Test("a member grants one vote per term")
    func oneVotePerTerm() throws {
        let log = MemoryLog()
        let raft = Raft(config: RaftConfig(id: "n1", members: ["n1", "n2", "n3"]), log: log, hardState: HardState(term: 1), seed: 1)
        let first = try raft.step(Message(from: "n2", to: "n1", term: 2, kind: .vote(lastIndex: 0, lastTerm: 0, transfer: false)))
        #expect(first.hardState == HardState(term: 2, vote: "n2"), "the vote is persisted before the grant leaves")
        #expect(first.messages == [Message(from: "n1", to: "n2", term: 2, kind: .voteResponse(granted: true))])
        let second = try raft.step(Message(from: "n3", to: "n1", term: 2, kind: .vote(lastIndex: 0, lastTerm: 0, transfer: false)))
        #expect(second.messages == [Message(from: "n1", to: "n3", term: 2, kind: .voteResponse(granted: false))])
    }

    @Test("§5.4.1: a candidate whose log is behind cannot win; the planted vote-without-log-check bug lets it")
    func upToDateCheck() {
        for planted in [false, true] {
            let net = Network(3, logs: [[1], [1, 2], [1, 2]]) { if planted { $0.plantedBugs = .voteWithoutLogCheck } }
            net.elect("n1")
            #expect((net["n1"].role == .leader) == planted, "planted \(planted)")
        }
    }

    @Test("pre-vote: a partitioned node does not inflate its term and does not depose the leader when it returns")
    func preVoteKeepsTermStable() {
        let net = Network(3)
        net.elect("n1")
        net.isolate("n3")
        net.tick("n3", times: 100)
        #expect(net["n3"].term == 1, "pre-vote failed, so no term was spent")
        net.heal()
        net.tickAll(times: 5)
        #expect(net["n1"].role == .leader && net["n1"].term == 1)
    }

    @Test("two members whose timers run out together: the lower id (logs equal) wins the next term, no split vote")
    func simultaneousPreCandidates() {
        let net = Network(3)
        net.elect("n1")
        net.isolate("n1")
        for name in ["n3", "n2"] {  // both campaign before either hears the other
            while net[name].role == .follower { net.absorb(NodeID(name), try! net[name].tick()) }
        }
        net.settle()
        #expect(net["n2"].role == .leader && net["n2"].term == 2)
        #expect(net["n3"].leader == "n2" && net["n3"].term == 2, "one term, one election")
    }

    @Test("a pre-candidate grants a pre-vote to a longer log, or to a lower id with an equal log, and to no one else")
    func preCandidateYields() throws {
        let log = MemoryLog(terms: [1, 1])
        let raft = Raft(config: RaftConfig(id: "n2", members: ["n1", "n2", "n3"]), log: log, hardState: HardState(term: 1), seed: 1)
        while raft.role == .follower { _ = try raft.tick() }
        #expect(raft.role == .preCandidate)
        func answer(_ from: NodeID, _ lastIndex: UInt64, _ lastTerm: UInt64) throws -> Bool? {
            let effects = try raft.step(Message(from: from, to: "n2", term: 2, kind: .preVote(lastIndex: lastIndex, lastTerm: lastTerm)))
            guard case .preVoteResponse(let granted)? = effects.messages.first(where: { $0.to == from })?.kind else { return nil }
            return granted
        }
        #expect(try answer("n3", 2, 1) == false, "equal log, higher id")
        #expect(try answer("n1", 2, 1) == true, "equal log, lower id")
        #expect(try answer("n3", 3, 1) == true, "longer log")
        #expect(try answer("n3", 1, 2) == true, "later last term")
        #expect(try answer("n1", 1, 1) == false, "shorter log")
        #expect(raft.role == .preCandidate && raft.term == 1, "pre-votes change neither role nor term")
    }

    @Test("a candidate rejected by a majority goes back to follower")
    func rejectedCandidateStepsDown() {
        let net = Network(3, logs: [[1], [1, 1], [1, 1]]) { $0.preVote = false }
        net.elect("n1")
        #expect(net["n1"].role == .follower)
        #expect(net["n1"].term == 2)
    }
}

@Suite("Raft §5.3: log replication")
struct ReplicationTests {
    @Test("proposals reach every log in order and commit everywhere")
    func replicates() {
        let net = Network(3)
        net.elect("n1")
        for k in 0..<20 { #expect(net.propose("n1", "m\(k)") != .transferring) }
        net.tickAll(times: 3)
        let expected = net.log("n1").entries
        #expect(expected.count == 21)
        for id in ["n2", "n3"] {
            #expect(net.log(id).entries == expected)
            #expect(net[id].commitIndex == 21)
        }
    }

    @Test("a follower refuses a proposal and names the leader")
    func followerRedirects() {
        let net = Network(3)
        net.elect("n1")
        #expect(net.propose("n2", "x") == .notLeader(leader: "n1", term: 1))
    }

    @Test("§5.3 log matching: a follower's conflicting uncommitted suffix is truncated and replaced")
    func conflictingSuffixReplaced() {
        // n3 holds entries from a term-2 leader that never committed them.
        let net = Network(3, logs: [[1, 1], [1, 1], [1, 2, 2, 2]])
        net.elect("n1")  // n1 and n2 vote for n1 (n3's log is more up to date; it refuses)
        #expect(net["n1"].role == .leader)
        _ = net.propose("n1", "after")
        net.tickAll(times: 3)
        #expect(net.log("n3").terms == net.log("n1").terms)
        #expect(net.log("n3").terms == [1, 1, 3, 3])
    }

    @Test("fast back-off: a follower far behind on a divergent history converges in a few round trips")
    func fastBackoff() {
        let divergent = [UInt64](repeating: 1, count: 5) + [UInt64](repeating: 2, count: 200)
        let net = Network(
            3,
            logs: [
                [UInt64](repeating: 1, count: 5) + [UInt64](repeating: 3, count: 50),
                [UInt64](repeating: 1, count: 5) + [UInt64](repeating: 3, count: 50), divergent,
            ])
        net.elect("n1")
        net.tickAll(times: 3)
        let rejections = net.delivered.filter {
            if case .appendResponse(false, _, _, _) = $0.kind { return $0.from == "n3" }
            return false
        }
        #expect(rejections.count <= 3, "one rejection per divergent term, not per entry: \(rejections.count)")
        #expect(net.log("n3").terms == net.log("n1").terms)
    }

    @Test("pipelining: the leader keeps several appends in flight to a follower in the replicate state")
    func pipelined() throws {
        let log = MemoryLog()
        var config = RaftConfig(id: "n1", members: ["n1", "n2", "n3"])
        config.maxAppendBytes = 1
        config.preVote = false
        let raft = Raft(config: config, log: log, hardState: HardState(), seed: 1)
        while raft.role != .candidate { _ = try raft.tick() }
        _ = try raft.step(Message(from: "n2", to: "n1", term: 1, kind: .voteResponse(granted: true)))
        #expect(raft.role == .leader)
        _ = try raft.step(Message(from: "n2", to: "n1", term: 1, kind: .appendResponse(success: true, index: 1, hintIndex: 0, hintTerm: 0)))
        let (_, proposed) = try raft.propose((0..<5).map { _ in (type: UInt8(16), body: [1]) })
        let appendsToN2 = proposed.messages.filter { $0.to == "n2" }
        #expect(appendsToN2.count == 5, "one entry per message under a 1-byte budget, all sent without waiting")
    }
}

@Suite("Raft §5.4.2 and Figure 8: commitment")
struct CommitmentTests {
    /// The paper's Figure 8: a leader of term 4 holds index 2 from term 2, now on a majority. It
    /// must not count that majority to commit index 2; only its own term-4 entry, once on a
    /// majority, commits both.
    func figure8(planted: Bool) -> (before: UInt64, after: UInt64) {
        let net = Network(5, logs: [[1, 2], [1, 2], [1, 2], [1], [1, 3]]) {
            $0.preVote = false
            $0.checkQuorum = false  // the followers just heard from n5; no lease to wait out
            if planted { $0.plantedBugs = .commitEarlierTerm }
        }
        for id in ["n2", "n3", "n4", "n5"] { net.log(id).autoPersist = false }
        // Bring n1 to term 4 as the paper has it, then elect it.
        for id in net.ids { _ = try! net.nodes[id]!.step(Message(from: "n5", to: id, term: 3, kind: .heartbeat(commit: 0, context: 0))) }
        net.queue.removeAll()
        net.elect("n1")
        precondition(net["n1"].role == .leader && net["n1"].term == 4)
        net.tickAll(times: 2)
        let before = net["n1"].commitIndex
        net.persist("n2")
        net.persist("n3")
        net.tickAll(times: 2)
        return (before, net["n1"].commitIndex)
    }

    @Test("an earlier-term entry on a majority is not committed by counting; the current term's entry commits it")
    func figure8Rule() {
        let correct = figure8(planted: false)
        #expect(correct.before < 2, "index 2 (term 2) must not commit by counting replicas")
        #expect(correct.after == 3, "the term-4 no-op on a majority commits 2 and 3")
        let planted = figure8(planted: true)
        #expect(planted.before >= 2, "the planted commit-earlier-term bug commits index 2 early")
    }

    @Test("durability: a follower acknowledges only what is on disk, and the leader counts itself only after its fsync")
    func ackAfterFsync() {
        let net = Network(3)
        net.elect("n1")
        net.tickAll(times: 2)
        net.isolate("n3")
        net.log("n1").autoPersist = false
        net.log("n2").autoPersist = false
        _ = net.propose("n1", "durable?")
        net.tickAll(times: 2)
        #expect(net["n1"].commitIndex == 1, "nothing on disk but the no-op: no commit")
        net.persist("n2")
        net.tickAll(times: 1)
        #expect(net["n1"].commitIndex == 1, "n2 alone is not a majority; the leader has not synced")
        net.persist("n1")
        #expect(net["n1"].commitIndex == 2)
    }

    @Test("the planted ack-before-fsync bug commits entries no disk holds")
    func ackBeforeFsyncPlanted() {
        let net = Network(3) { $0.plantedBugs = .ackBeforeFsync }
        net.elect("n1")
        for id in ["n1", "n2", "n3"] { net.log(id).autoPersist = false }
        _ = net.propose("n1", "x")
        net.tickAll(times: 2)
        #expect(net["n1"].commitIndex == 2)
        #expect(net.ids.allSatisfy { net.logs[$0]!.durableIndex < 2 })
    }
}

@Suite("Raft thesis §6.2 and §3.10: check-quorum, lease, leadership transfer")
struct LeadershipTests {
    @Test("an isolated leader steps down within two election timeouts and loses its lease; the majority elects another")
    func checkQuorum() {
        let net = Network(3)
        net.elect("n1")
        net.tickAll(times: 3)
        #expect(net["n1"].hasLease)
        net.isolate("n1")
        net.tick("n1", times: 2 * net["n1"].config.electionTimeoutTicks)
        #expect(net["n1"].role == .follower)
        #expect(!net["n1"].hasLease)
        net.tickAll(times: 40)
        #expect(net.leaders.count == 2 || net.leaders.count == 1)
        #expect(net.leaders.contains { $0 != "n1" })
    }

    @Test("a catch-up step after a pause: the lease is gone at once; passing two check points steps the leader down, one point checks as a single tick would")
    func catchUpStep() throws {
        let net = Network(3)
        net.elect("n1")
        net.tickAll(times: 3)
        let timeout = net["n1"].config.electionTimeoutTicks
        #expect(net["n1"].hasLease)
        // Paused for just under one timeout's worth and cut off: no lease, still leader (as
        // with single ticks: the next check has not come yet).
        net.isolate("n1")
        net.absorb("n1", try net["n1"].tick(timeout - 1))
        #expect(!net["n1"].hasLease)
        #expect(net["n1"].role == .leader)
        // A step past two check points: the whole last window was the pause.
        net.absorb("n1", try net["n1"].tick(2 * timeout))
        #expect(net["n1"].role == .follower)
        // The same pause as single ticks ends the same way.
        let single = Network(3)
        single.elect("n1")
        single.tickAll(times: 3)
        single.isolate("n1")
        single.tick("n1", times: 3 * timeout - 1)
        #expect(single["n1"].role == .follower)
    }

    @Test("without check-quorum (planted) a deposed leader keeps claiming a lease")
    func noCheckQuorumPlanted() {
        let net = Network(3) { $0.plantedBugs = .noCheckQuorum }
        net.elect("n1")
        net.isolate("n1")
        net.tick("n1", times: 100)
        #expect(net["n1"].role == .leader && net["n1"].hasLease)
    }

    @Test("a leader that is back from a partition steps down on the first message of the new term")
    func staleLeaderStepsDown() {
        let net = Network(3) { $0.checkQuorum = false }
        net.elect("n1")
        net.isolate("n1")
        net.tickAll(times: 40)
        let newLeader = net.leaders.first { $0 != "n1" }
        #expect(newLeader != nil)
        net.heal()
        net.tickAll(times: 3)
        #expect(net["n1"].role == .follower)
        #expect(net.leaders == [newLeader!])
    }

    @Test("leadership transfer: the target catches up, gets TimeoutNow and wins the next term; proposals wait meanwhile")
    func transfer() {
        let net = Network(3)
        net.elect("n1")
        _ = net.propose("n1", "a")
        net.isolate("n3")
        _ = net.propose("n1", "b")
        net.absorb("n1", try! net["n1"].transferLeadership(to: "n3"))
        net.settle()
        #expect(net.propose("n1", "c") == .transferring)
        net.heal()
        net.tickAll(times: 8)  // a few heartbeats: the leader notices n3 lags, probes, catches it up
        #expect(net["n3"].role == .leader)
        #expect(net["n3"].term == 2)
        #expect(net.log("n3").entries.filter { $0.type == 16 }.map { String(decoding: $0.body, as: UTF8.self) } == ["a", "b"])
    }

    @Test("a preferred leader takes over once it is caught up")
    func preferredLeader() {
        let net = Network(3) { $0.preferredLeader = "n2" }
        net.elect("n1")
        net.tickAll(times: 10)
        #expect(net["n2"].role == .leader)
    }
}

@Suite("Raft: determinism")
struct DeterminismTests {
    @Test("the same seeds and inputs give the same message trace")
    func sameTrace() {
        func run() -> [Message] {
            let net = Network(5)
            net.tickAll(times: 30)
            for k in 0..<10 { if let l = net.leaders.first { _ = net.propose(l.name, "m\(k)") } }
            net.tickAll(times: 10)
            return net.delivered
        }
        let a = run(), b = run()
        #expect(!a.isEmpty)
        #expect(a == b)
    }
}

@Suite("Raft: rejoining after a lost disk")
struct RejoinTests {
    @Test("a member that lost its disk neither votes nor campaigns until it knows every peer's term and has caught up")
    func rejoiningAbstains() throws {
        let net = Network(3)
        net.elect("n1")
        for k in 0..<5 { _ = net.propose("n1", "m\(k)") }
        net.tickAll(times: 2)
        // n3 loses its disk: empty log, term 0, rejoining.
        let fresh = MemoryLog()
        net.logs["n3"] = fresh
        net.nodes["n3"] = Raft(config: net["n3"].config, log: fresh, hardState: HardState(rejoining: true), seed: 99)
        // It grants nothing now, even to an up-to-date candidate: its old self may have voted
        // for someone else in this very term.
        let ask = try net["n3"].step(Message(from: "n2", to: "n3", term: 1, kind: .vote(lastIndex: 6, lastTerm: 1, transfer: false)))
        #expect(ask.messages.contains(Message(from: "n3", to: "n2", term: 1, kind: .voteResponse(granted: false))))
        #expect(net["n3"].rejoining)
        // It asks its peers for their terms, hears the leader, catches up, and becomes a voter.
        net.tickAll(times: 6)
        #expect(net.log("n3").entries == net.log("n1").entries)
        #expect(!net["n3"].rejoining)
        #expect(net["n3"].vote == "n3" || net["n3"].vote == "n1", "the current term counts as voted in")
        // And a later election can count its vote again.
        net.isolate("n1")
        net.tickAll(times: 60)
        #expect(net.leaders.contains { $0 != "n1" })
    }

    @Test("the leader starts over with a follower whose log went backwards")
    func leaderResetsProgress() {
        let net = Network(3)
        net.elect("n1")
        for k in 0..<5 { _ = net.propose("n1", "m\(k)") }
        net.tickAll(times: 2)
        let fresh = MemoryLog()
        net.logs["n2"] = fresh
        net.nodes["n2"] = Raft(config: net["n2"].config, log: fresh, hardState: HardState(term: 1, rejoining: true), seed: 98)
        _ = net.propose("n1", "after")
        net.tickAll(times: 6)
        #expect(net.log("n2").entries == net.log("n1").entries)
    }
}

@Suite("Raft: rejoining, regressions")
struct RejoinRegressionTests {
    // Found by the simulator (seed 17, with wiped disks and one entry per append): a rejoining
    // member finished rejoining against a new leader whose commit index was still stale (its
    // no-op not yet committed), so it voted again while missing committed entries.
    @Test("a rejoining member waits until the leader's commit index covers an entry of the leader's term")
    func waitsForCurrentTermCommit() throws {
        let log = MemoryLog()
        let raft = Raft(config: RaftConfig(id: "n3", members: ["n1", "n2", "n3"]), log: log, hardState: HardState(rejoining: true), seed: 5)
        // Hear every peer's term: n2 answers a term query with 4; n1 leads term 5.
        _ = try raft.step(Message(from: "n2", to: "n3", term: 4, kind: .termQueryResponse))
        // The new leader of term 5 sends its log: entries of term 1 and its term-5 no-op at 3,
        // but it has committed only through 2 (its no-op is not committed yet).
        let entries = [Entry(index: 1, term: 1, body: []), Entry(index: 2, term: 1, body: []), Entry(index: 3, term: 5, type: RaftEntryType.noop, body: [])]
        _ = try raft.step(Message(from: "n1", to: "n3", term: 5, kind: .append(prevIndex: 0, prevTerm: 0, entries: entries, commit: 2)))
        #expect(raft.rejoining, "commit 2 is of term 1: the leader may not know how far term 1 committed")
        _ = try raft.step(Message(from: "n1", to: "n3", term: 5, kind: .heartbeat(commit: 3, context: 1)))
        #expect(!raft.rejoining, "commit 3 is the leader's own no-op: everything committed before is in the log")
        #expect(raft.vote == "n3", "the current term counts as voted in")
    }
}

@Suite("Raft §5.3: probing")
struct ProbeTests {
    @Test("stale acknowledgements and rejections do not restart or end a probe (simulator seeds 59 and 1085: message storms)")
    func staleAckKeepsProbe() throws {
        let net = Network(3)
        net.elect("n1")
        for k in 0..<5 { _ = net.propose("n1", "e\(k)") }
        for n in ["n1", "n2", "n3"] { net.persist(n) }
        let leader = net["n1"]
        func appends(_ e: Effects) -> Int { e.messages.filter { if case .append = $0.kind { return true } else { return false } }.count }
        // n2 says its log ends at 1 (a lost disk): the leader probes from there, one append.
        // A stale ordinary rejection (a reordered append's) is ignored, not taken for a lost disk.
        let staleReject = try leader.step(
            Message(from: "n2", to: "n1", term: leader.term, kind: .appendResponse(success: false, index: 3, hintIndex: 2, hintTerm: 0)))
        #expect(appends(staleReject) == 0, "simulator seed 1085: each such rejection restarted the probe")
        let reset = try leader.step(
            Message(from: "n2", to: "n1", term: leader.term, kind: .appendResponse(success: false, index: 6, hintIndex: 2, hintTerm: Message.lostLogHintTerm)))
        #expect(appends(reset) == 1)
        // While that probe (prev 1) is out, a rejection of some other, older append is ignored.
        let other = try leader.step(
            Message(from: "n2", to: "n1", term: leader.term, kind: .appendResponse(success: false, index: 4, hintIndex: 2, hintTerm: 0)))
        #expect(appends(other) == 0)
        // An acknowledgement no newer than what the leader knows must not send more.
        let stale = try leader.step(Message(from: "n2", to: "n1", term: leader.term, kind: .appendResponse(success: true, index: 1, hintIndex: 0, hintTerm: 0)))
        #expect(appends(stale) == 0)
        // Still probing, with the probe out: a new entry is not sent to n2 yet.
        let (_, held) = try leader.propose([(type: 16, body: [1])])
        #expect(held.messages.filter { $0.to == "n2" && { if case .append = $0.kind { true } else { false } }($0) }.isEmpty)
        // The probe's own answer (matching through 6) ends the probe: the entry after it goes out.
        let fresh = try leader.step(Message(from: "n2", to: "n1", term: leader.term, kind: .appendResponse(success: true, index: 6, hintIndex: 0, hintTerm: 0)))
        #expect(appends(fresh) == 1)
    }
}
