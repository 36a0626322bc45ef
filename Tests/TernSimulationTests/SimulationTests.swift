import TernRaft
import Testing

@testable import TernSimulation

@Suite("Simulation")
struct SimulationTests {
    @Test("one seed replays exactly: the same trace digest twice")
    func determinism() {
        var options = SimulationOptions(seed: 42)
        options.seconds = 10
        let a = Simulation.run(options), b = Simulation.run(options)
        #expect(a.digest == b.digest)
        #expect(a.events == b.events && a.events > 1000)
        var other = options
        other.seed = 43
        #expect(Simulation.run(other).digest != a.digest, "another seed takes another path")
    }
}

@Suite("Simulation: regressions")
struct SimulationRegressionTests {
    // Seed 38 found that a damaged index record, read while rewinding the log for a Raft
    // conflict, trapped the process instead of failing the log (and restarting the node).
    @Test("seed 38: a bit flip on the truncation path stops the node cleanly")
    func seed38() {
        var options = SimulationOptions(seed: 38)
        options.seconds = 30
        let result = Simulation.run(options)
        #expect(result.ok, "\(result.violations)")
        #expect(result.faults["fail-stop", default: 0] > 0, "the seed still exercises fail-stops")
    }

    @Test("a short sweep passes every checker")
    func shortSweep() {
        for seed in UInt64(1)...8 {
            var options = SimulationOptions(seed: seed)
            options.seconds = 15
            let result = Simulation.run(options)
            #expect(result.ok, "seed \(seed): \(result.violations)")
            #expect(result.acknowledged > 0, "seed \(seed) acknowledged nothing")
        }
    }
}

@Suite("Simulation: rejoining after a lost disk, and pauses")
struct SimulationRejoinTests {
    // Seed 45 (before the fix, 2026-11-29): a member that lost its disk waited to hear from every
    // peer, but a follower never writes to another follower, so it waited forever and, later, with
    // a second member in the same state, no leader could be elected. Rejoining members now ask
    // (termQuery). Since membership changes (2026-12-05) a member that lost its disk after the
    // leader stamped its incarnation is a stranger the operator replaces; seed 48 now loses five
    // disks and replaces five strangers, and seed 45 no longer wipes any.
    @Test("seed 48: members that lost their disks are replaced (new ids, as an operator would); liveness holds")
    func lostDisksReplaced() {
        var options = SimulationOptions(seed: 48)
        options.seconds = 60
        let result = Simulation.run(options)
        #expect(result.ok, "\(result.violations)")
        #expect(result.faults["crash with a wiped disk", default: 0] > 0)
        #expect(result.faults["membership: replace a stranger", default: 0] > 0)
    }

    // Seed 4 (2026-12-05, while membership changes were built; seed 9 after the worlds moved):
    // snapshot-install chunks, made by the node and not by Raft's `send`, carried incarnation 0.
    // Once a new member's configuration stamped the leader's incarnation it dropped every chunk,
    // never caught up, and the operator's promotion never came (liveness). Without the fix seeds
    // 9, 11, 20, 22 and 30 of 1-40 (30 s) fail.
    @Test("seed 9: members added after the log's front was deleted catch up through installs")
    func seed9InstallIncarnation() {
        var options = SimulationOptions(seed: 9)
        options.seconds = 30
        let result = Simulation.run(options)
        #expect(result.ok, "\(result.violations)")
        #expect(result.faults["snapshot install", default: 0] > 0)
    }

    // Seed 290 (before the fix): a leader paused past its lease served a stale read on resume,
    // because the simulated pause froze its clock. A paused process's monotonic clock runs on:
    // the missed ticks are now fed on resume, before anything else, as the server must do.
    @Test("seed 290: a leader paused past its lease does not serve a stale read")
    func seed290() {
        var options = SimulationOptions(seed: 290)
        options.seconds = 45
        let result = Simulation.run(options)
        #expect(result.ok, "\(result.violations)")
        #expect(result.faults["pause", default: 0] > 0)
    }
}

@Suite("Simulation: the broker workload")
struct SimulationBrokerTests {
    // Seeds 22, 30 and 40 (before the fix): a batch spanning two segment files was torn so that
    // the later file kept its part and the earlier lost its own; recovery called the gap
    // corruption and the node refused to start. Now a torn tail beyond the checkpoint.
    @Test("seed 22: a batch torn across segment files after a full disk; the node recovers", arguments: [22, 30, 40] as [UInt64])
    func crossSegmentTear(seed: UInt64) {
        var options = SimulationOptions(seed: seed)
        options.seconds = 60
        let result = Simulation.run(options)
        #expect(result.ok, "\(result.violations)")
        #expect(result.faults["fail-stop", default: 0] > 0)
    }

    // Seed 59 (before the fix): a follower catching up from an empty disk answered duplicated
    // appends with stale acknowledgements, and the leader left its probe on each one and sent a
    // full window: a message storm of millions of events (now caught as "runaway").
    @Test("seed 59: no message storm while a wiped follower catches up")
    func seed59() {
        var options = SimulationOptions(seed: 59)
        options.seconds = 20
        let result = Simulation.run(options)
        #expect(result.ok, "\(result.violations)")
        #expect(result.faults["crash with a wiped disk", default: 0] > 0)
    }

    // The idle phase (after the checks: clients silent, a follower killed and restarted) found
    // that a follower restarted on an idle group stayed at commit 0 until the next write: a
    // heartbeat's commit was capped at what it had verified since its restart. The planted bug
    // keeps that rule. (Seed 1 showed it until 2026-12-04; since then its restarted follower
    // loads a snapshot at the group's last entry and has nothing left to learn, so seed 2.)
    @Test("idle phase: a follower restarted with nothing written reaches the leader's commit index (seed 2)")
    func idleFollowerCatchesUp() {
        var options = SimulationOptions(seed: 2)
        options.seconds = 30
        let fixed = Simulation.run(options)
        #expect(fixed.ok, "\(fixed.violations)")
        options.plantedBugs = .heartbeatCommitCapped
        let planted = Simulation.run(options)
        #expect(planted.violations.contains { $0.contains("idle liveness") }, "the planted rule escaped: \(planted.violations)")
    }

    // Seed 50031 (outside the CI sweep, before the fix): a transaction its producer had
    // committed locally was rolled back: the broker spent all eight checks while leadership
    // moved and no producer's poll was held at the leader, and the simulated producer kept
    // retrying its end at a node that was down instead of moving on. Both are fixed (checks count
    // only where a producer of the group polls; the producer moves to the next node after a
    // timeout, and a check answer's end no longer loses its reply to a new transaction).
    // NodeTests' checksWaitForAPollThenGiveUp shows the broker rule directly, since any change
    // to the workload changes this seed's run.
    @Test("seed 50031: a locally committed transaction is not rolled back by checks nobody could answer")
    func seed50031() {
        let result = Simulation.run(SimulationOptions(seed: 50031))
        #expect(result.ok, "\(result.violations)")
        #expect(result.transactionsCommitted > 0)
    }

    @Test("the peer codec checker catches Raft messages that do not decode (planted truncate-peer-frames)")
    func codecChecker() {
        var options = SimulationOptions(seed: 3)
        options.seconds = 5
        options.plantedBugs = .truncatePeerFrames
        let result = Simulation.run(options)
        #expect(result.violations.contains { $0.contains("peer codec") }, "\(result.violations)")
    }

    // Seed 2822 (the sweep of seeds 2001-3000, after the check rule above): elections from term
    // 51 to 138 kept a committed local transaction's decision from every leader for longer than
    // the give-up age the simulator then derived (26 s), and the broker rolled it back as the
    // rule says. The simulator now gives up only after its fault and liveness phases.
    @Test("seed 2822: no transaction is given up while faults keep its producers from the leader")
    func seed2822() {
        let result = Simulation.run(SimulationOptions(seed: 2822))
        #expect(result.ok, "\(result.violations)")
    }

    // Seed 1013 (the sweep of seeds 1001-2000): the idle phase restarted a member that was still
    // rejoining after a lost disk, with its whole log; it rejected each heartbeat as rejoining
    // members do, but its log reached past its match, so the leader took the rejections for stale
    // ones and sent nothing: commit 0 until the next write. The leader now probes such a member
    // from its match when nothing is in flight to it.
    @Test("seed 1013: a rejoining member restarted on an idle group is probed and catches up")
    func seed1013() {
        let result = Simulation.run(SimulationOptions(seed: 1013))
        #expect(result.ok, "\(result.violations)")
    }

    @Test("producers' messages are acknowledged and the consumer receives them")
    func workload() {
        var options = SimulationOptions(seed: 5)
        options.seconds = 20
        let result = Simulation.run(options)
        #expect(result.ok, "\(result.violations)")
        #expect(result.messagesAcknowledged > 100)
        #expect(result.messagesDelivered >= result.messagesAcknowledged / 2)
    }

    @Test(
        "each broker checker catches its planted bug",
        arguments: [
            "dedupe-off", "offsets-in-memory-only", "reverse-batch", "read-wrong-slot", "release-early", "release-twice", "lock-without-fence",
            "send-back-twice", "dead-letter-early", "deliver-half", "redeliver-early",
        ])
    func plantedBrokerBugs(name: String) throws {
        let plant = try #require(PlantedBugs.all.first { $0.0 == name }?.1)
        let caught = Simulation.hunt(plant, seeds: 1...20, seconds: 30)
        #expect(caught != nil, "\(name) escaped seeds 1-20")
    }
}
