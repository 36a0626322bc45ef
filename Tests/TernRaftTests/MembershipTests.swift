import Testing

@testable import TernRaft

extension Network {
    /// Adds a node that knows no configuration yet (it waits to be added: `tern serve --join`).
    func addJoiner(_ name: String, incarnation: UInt64 = 0, configure: (inout RaftConfig) -> Void = { _ in }) {
        let id = NodeID(name)
        var config = RaftConfig(id: id, members: [])
        configure(&config)
        let log = MemoryLog()
        ids.append(id)
        logs[id] = log
        nodes[id] = Raft(config: config, log: log, hardState: HardState(incarnation: incarnation), seed: UInt64(ids.count))
    }

    @discardableResult
    func change(_ name: String, _ change: MembershipChange) -> Result<UInt64, MembershipRefusal> {
        let (result, effects) = try! self[name].proposeMembership(change)
        absorb(NodeID(name), effects)
        settle()
        return result
    }
}

@Suite("Membership: single-server changes with learners")
struct MembershipTests {
    @Test("a configuration encodes and decodes; garbage does not decode")
    func codec() {
        let m = Membership([
            Member(id: "n2", endpoint: "10.0.0.2:7001", incarnation: 0xDEAD_BEEF, isLearner: true), Member(id: "n1", endpoint: "10.0.0.1:7001"),
        ])
        #expect(m.ids == ["n1", "n2"])
        #expect(Membership.decode(m.encode()) == m)
        #expect(Membership.decode([]) == nil)
        #expect(Membership.decode(m.encode() + [0]) == nil)
        #expect(Membership.decode(Array(m.encode().dropLast())) == nil)
        // Invalid UTF-8 in an id does not decode (fuzzing found it re-encoding differently).
        var bad = Membership([Member(id: "ab", endpoint: "h:1")]).encode()
        bad[4] = 0xFF
        #expect(Membership.decode(bad) == nil)
    }

    @Test("a learner receives the log, never campaigns and counts in no quorum; the planted learner-in-quorum bug counts it")
    func learnerCountsNowhere() {
        for planted in [false, true] {
            let net = Network(3) { if planted { $0.plantedBugs = .learnerInQuorum } }
            net.elect("n1")
            net.addJoiner("n4") { if planted { $0.plantedBugs = .learnerInQuorum } }
            #expect(net.change("n1", .addLearner("n4", endpoint: "h4:1")) != .failure(.termNotCommitted))
            net.tickAll(times: 3)
            #expect(net["n4"].membership.learners == ["n4"])
            #expect(net["n4"].commitIndex == net["n1"].commitIndex, "the learner caught up")
            #expect(!net["n4"].isVoter)
            // Only the learner hears the leader: nothing may commit (quorum 2 of n1..n3).
            net.isolate("n2")
            net.isolate("n3")
            let before = net["n1"].commitIndex
            _ = net.propose("n1", "x")
            net.tickAll(times: 1)
            #expect((net["n1"].commitIndex > before) == planted, "planted \(planted): commit \(before) -> \(net["n1"].commitIndex)")
            net.heal()
            // The learner never campaigns, however long it hears nothing.
            net.isolate("n1")
            net.tick("n4", times: 100)
            #expect(net["n4"].role == .follower && net["n4"].term == net["n1"].term)
        }
    }

    @Test("promotion waits until the learner caught up; then it votes and the quorum grows")
    func promote() {
        let net = Network(3)
        net.elect("n1")
        for k in 0..<20 { _ = net.propose("n1", "e\(k)") }
        net.addJoiner("n4", incarnation: 44)
        net.isolate("n4")
        #expect(net.change("n1", .addLearner("n4", endpoint: "h4:1")).isSuccess)
        net.tickAll(times: 12)  // past a check-quorum point, so the catch-up target is set
        guard case .failure(.notCaughtUp) = net.change("n1", .promote("n4")) else {
            Issue.record("promotion of a learner that holds nothing must be refused")
            return
        }
        net.heal()
        net.tickAll(times: 12)
        #expect(net.change("n1", .promote("n4")).isSuccess)
        net.tickAll(times: 2)
        for name in ["n1", "n2", "n3", "n4"] { #expect(net[name].membership.voters == ["n1", "n2", "n3", "n4"], "\(name)") }
        #expect(net["n1"].membership.member("n4")?.incarnation == 44, "promoted with the incarnation it answered with")
        #expect(net["n1"].quorum == 3)
        // Two of four voters cannot commit.
        net.isolate("n3")
        net.isolate("n4")
        let before = net["n1"].commitIndex
        _ = net.propose("n1", "y")
        #expect(net["n1"].commitIndex == before)
    }

    @Test("one change at a time; the planted two-changes-pending bug proposes a second")
    func oneChangeAtATime() {
        for planted in [false, true] {
            let net = Network(3) { if planted { $0.plantedBugs = .twoChangesPending } }
            net.elect("n1")
            net.isolate("n2")
            net.isolate("n3")
            #expect(net.change("n1", .addLearner("n4", endpoint: "h4:1")).isSuccess)
            let second = net.change("n1", .addLearner("n5", endpoint: "h5:1"))
            if planted {
                #expect(second.isSuccess)
            } else {
                guard case .failure(.changePending) = second else {
                    Issue.record("a second change while the first is uncommitted: \(second)")
                    continue
                }
            }
        }
    }

    @Test("a new leader proposes no change before an entry of its term commits; the planted bug does")
    func changeAfterTermCommit() {
        for planted in [false, true] {
            // No check-quorum: n3 votes for n2 at once, without waiting out n1's lease.
            let net = Network(3) {
                $0.checkQuorum = false
                if planted { $0.plantedBugs = .changeBeforeTermCommit }
            }
            net.elect("n1")
            net.tickAll(times: 2)
            // n2 wins term 2, but its voter cannot make the no-op durable: it stays uncommitted.
            net.isolate("n1")
            net.log("n3").autoPersist = false
            net.elect("n2")
            #expect(net["n2"].role == .leader)
            #expect(net["n2"].commitIndex < net["n2"].termStartIndex)
            let (result, _) = try! net["n2"].proposeMembership(.remove("n1"))
            if planted {
                #expect(result.isSuccess)
            } else {
                #expect(result == .failure(.termNotCommitted))
            }
        }
    }

    @Test("a leader that removes itself steps down once that commits and its successor campaigns at once; the planted bug keeps it leading")
    func removeLeader() {
        for planted in [false, true] {
            let net = Network(3) { if planted { $0.plantedBugs = .removedLeaderKeepsLeading } }
            net.elect("n1")
            net.tickAll(times: 2)
            #expect(net.change("n1", .remove("n1")).isSuccess)
            net.tickAll(times: 2)
            #expect((net["n1"].role == .leader) == planted, "planted \(planted)")
            if !planted {
                let leaders = net.leaders
                #expect(leaders.count == 1 && leaders.first != "n1", "a successor took over without an election timeout: \(leaders)")
                #expect(net[leaders.first!.name].membership.voters == ["n2", "n3"])
                // The removed member never campaigns again, and does not disturb the group.
                net.tick("n1", times: 100)
                #expect(net["n1"].role == .follower)
                #expect(net.leaders == leaders)
            }
        }
    }

    @Test("a member removed while partitioned away never learns it, campaigns, and disturbs nobody: pre-vote and the lease")
    func removedWhilePartitioned() {
        let net = Network(4)
        net.elect("n1")
        net.tickAll(times: 2)
        net.isolate("n4")
        #expect(net.change("n1", .remove("n4")).isSuccess)
        net.tickAll(times: 2)
        let term = net["n1"].term
        // n4 still holds the old configuration and times out again and again.
        net.tick("n4", times: 60)
        #expect(net["n4"].membership.voters.contains("n4"), "it never heard of its removal")
        net.heal()
        net.tickAll(times: 60)
        #expect(net["n1"].role == .leader && net["n1"].term == term, "the group kept its leader and its term")
        #expect(net.leaders == ["n1"])
        // n4 is not in the leader's configuration: nothing is sent to it, so it stays outside.
        #expect(!net["n1"].membership.ids.contains("n4"))
    }

    @Test("a configuration takes effect when appended and is undone when its entry is truncated")
    func revertOnTruncate() {
        let net = Network(3)
        net.elect("n1")
        net.tickAll(times: 2)
        // n1 appends a removal that nobody receives, then loses leadership.
        net.isolate("n1")
        #expect(net.change("n1", .remove("n3")).isSuccess)
        #expect(net["n1"].membership.voters == ["n1", "n2"], "in effect at once, uncommitted")
        net.tickAll(times: 40)
        #expect(net["n1"].role != .leader, "check-quorum among {n1, n2}")
        let next = net.leaders.first!
        _ = net.propose(next.name, "after")
        net.heal()
        net.tickAll(times: 3)
        #expect(net["n1"].role == .follower)
        #expect(net["n1"].membership.voters == ["n1", "n2", "n3"], "the truncated configuration was undone")
        #expect(net.log("n1").entries.allSatisfy { $0.type != RaftEntryType.membership })
    }

    @Test("entries refilled below the configuration a snapshot brought do not bring back an older one (simulator seed 38)")
    func refillAfterInstall() throws {
        let log = MemoryLog()
        let raft = Raft(config: RaftConfig(id: "n2", members: ["n1", "n2", "n3"]), log: log, hardState: HardState(term: 1), seed: 1)
        let older = Membership(voters: ["n1", "n2", "n3"])
        var newer = older
        newer.upsert(Member(id: "n4", endpoint: "h4:1", isLearner: true))
        // As after an install whose snapshot applied the configuration at entry 3.
        raft.restoreMembership([(3, newer)])
        let entries = [
            Entry(index: 1, term: 1, body: []), Entry(index: 2, term: 1, type: RaftEntryType.membership, body: older.encode()),
            Entry(index: 3, term: 1, type: RaftEntryType.membership, body: newer.encode()), Entry(index: 4, term: 1, body: []),
        ]
        _ = try raft.step(Message(from: "n1", to: "n2", term: 1, kind: .append(prevIndex: 0, prevTerm: 0, entries: entries, commit: 4)))
        #expect(raft.membership == newer && raft.membershipIndex == 3)
    }

    @Test("an install that resets the log drops a configuration the old log held on a dead branch (helper review)")
    func installDropsDeadBranchConfiguration() throws {
        let log = MemoryLog()
        let raft = Raft(config: RaftConfig(id: "n2", members: ["n1", "n2", "n3"]), log: log, hardState: HardState(term: 1), seed: 1)
        let snapshotConfig = Membership(voters: ["n1", "n2", "n3"])
        let deadBranch = Membership(voters: ["n2", "n3"])
        // Entries 1-6 from a leader of term 1; entry 5 removes n1 and never commits.
        var entries = (1...6).map { Entry(index: UInt64($0), term: 1, body: []) }
        entries[4] = Entry(index: 5, term: 1, type: RaftEntryType.membership, body: deadBranch.encode())
        _ = try raft.step(Message(from: "n1", to: "n2", term: 1, kind: .append(prevIndex: 0, prevTerm: 0, entries: entries, commit: 0)))
        #expect(raft.membership == deadBranch)
        // The leader of term 2 installs a snapshot (its configuration applied at entry 3, base 8):
        // the node resets its log to continue after the base, then tells Raft.
        log.reset(after: 8)
        _ = raft.installedSnapshot(base: 8, membership: (3, snapshotConfig))
        #expect(raft.membership == snapshotConfig, "the dead branch's configuration is gone with its entry")
        #expect(raft.committedMembership.membership == snapshotConfig)
    }

    @Test("a leader whose removal is appended takes no more proposals, so its successor is caught up when it hands over (helper review)")
    func removedLeaderRefusesProposals() {
        let net = Network(3)
        net.elect("n1")
        net.tickAll(times: 2)
        net.isolate("n2")
        net.isolate("n3")
        #expect(net.change("n1", .remove("n1")).isSuccess)
        #expect(net.propose("n1", "late") == .transferring)
        net.heal()
        net.tickAll(times: 2)
        #expect(net.leaders.count == 1 && net.leaders.first != "n1")
    }

    @Test("a follower whose configuration names an old incarnation of the leader still takes its appends (helper review)")
    func staleIncarnationLeader() throws {
        let log = MemoryLog()
        let raft = Raft(config: RaftConfig(id: "n2", members: ["n1", "n2", "n3"]), log: log, hardState: HardState(term: 1, incarnation: 2), seed: 1)
        raft.restoreMembership([
            (
                0,
                Membership([Member(id: "n1", endpoint: "a", incarnation: 11), Member(id: "n2", endpoint: "b", incarnation: 2), Member(id: "n3", endpoint: "c")])
            )
        ])
        // n1 came back with a new disk (incarnation 12), was added again and leads term 5.
        let append = Message(
            from: "n1", to: "n2", term: 5, kind: .append(prevIndex: 0, prevTerm: 0, entries: [Entry(index: 1, term: 5, body: [])], commit: 0), incarnation: 12)
        let out = try raft.step(append)
        #expect(raft.term == 5 && log.lastIndex == 1 && raft.leader == "n1")
        #expect(out.messages.contains { if case .appendResponse(true, 1, _, _) = $0.kind { return true } else { return false } })
        // Its votes still do not count as n1's: a vote request from incarnation 12 is dropped.
        let vote = Message(from: "n1", to: "n2", term: 6, kind: .vote(lastIndex: 1, lastTerm: 5, transfer: false), incarnation: 12)
        #expect(try raft.step(vote).messages.isEmpty)
    }

    @Test("the leader stamps incarnations, then drops messages from another incarnation of a member")
    func incarnations() {
        let net = Network(2)
        // Give both members incarnations: rebuild them with hard states that carry one.
        for (k, id) in net.ids.enumerated() {
            net.nodes[id] = Raft(
                config: RaftConfig(id: id, members: net.ids), log: net.logs[id]!, hardState: HardState(incarnation: UInt64(100 + k)), seed: UInt64(k + 1))
        }
        net.elect("n1")
        net.tickAll(times: 4)
        #expect(net["n1"].membership.members.map(\.incarnation) == [100, 101])
        #expect(net["n2"].membership.members.map(\.incarnation) == [100, 101])
        // n2 comes back as a stranger (an empty disk, a new incarnation): its acknowledgements
        // no longer count, and its campaign wins nothing.
        let before = net["n1"].commitIndex
        let stranger = Raft(config: RaftConfig(id: "n2", members: net.ids), log: MemoryLog(), hardState: HardState(term: 5, incarnation: 999), seed: 9)
        net.nodes["n2"] = stranger
        net.logs["n2"] = stranger.log as? MemoryLog
        _ = net.propose("n1", "z")
        net.tickAll(times: 30)
        #expect(net["n1"].commitIndex == before, "a stranger's acknowledgements count for nothing")
        #expect(net["n1"].term < 5, "a stranger's messages are dropped before their term is looked at")
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
