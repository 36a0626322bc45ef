// The fault mix a run draws from its seed, and `handle`, which runs each event: node inputs
// (ticks, deliveries, disk completions, client requests and replies), the faults (crashes,
// partitions, pauses, full disks, power loss, fail-stop) and the end of the faults.
import TernNode
import TernProtocol
import TernRaft
import TernStorage

/// The fault mix of one run, drawn from its seed.
struct FaultMix: CustomStringConvertible {
    var lossRate = 0.0
    var duplicateRate = 0.0
    var latencyMinMicros: UInt64 = 100
    var latencyJitterMicros: UInt64 = 1000
    var fsyncMinMicros: UInt64 = 100
    var fsyncJitterMicros: UInt64 = 500
    var slowFsyncRate = 0.0
    var crashEverySeconds = 0.0  // mean; 0 = never
    var partitionEverySeconds = 0.0
    var pauseEverySeconds = 0.0
    var readFlipRate = 0.0
    var diskFullEverySeconds = 0.0
    /// Of the crashes, the share that also lose the disk (the node rejoins with nothing).
    var wipeRate = 0.0
    /// A message is held back 50 ms to 1.5 s (a clogged link): reordering across restarts.
    var delaySpikeRate = 0.0
    // BUGGIFY-style: make rare, dangerous moments common.
    /// Crash a node right after it persisted a vote (and restart it fast).
    var crashAfterVoteRate = 0.0
    /// Crash a leader right after its commit index moved.
    var crashAfterCommitRate = 0.0
    /// Crash a leader right after the first commit of its term (the moment the paper's Figure 8
    /// is about: what a new leader commits first, and whether it survives the leader).
    var crashAfterFirstCommitRate = 0.0
    /// Election timeout jitter in ticks: small values make candidates collide (split votes).
    var electionJitterTicks = 10
    /// Isolate a new leader at the moment it wins, before its first appends leave: its term's
    /// entries stay on it alone (the first half of the paper's Figure 8).
    var isolateNewLeaderRate = 0.0
    /// Entry bytes per append message; 1 sends one entry per message.
    var maxAppendBytes = 64 << 10

    static func draw(_ r: inout SplitMix64, faults: Bool) -> FaultMix {
        var m = FaultMix()
        func unit(_ r: inout SplitMix64) -> Double { Double(r.next() >> 11) / Double(1 << 53) }
        m.latencyMinMicros = 50 + r.next() % 500
        m.latencyJitterMicros = 1 + r.next() % 5000
        m.fsyncMinMicros = 50 + r.next() % 300
        m.fsyncJitterMicros = 1 + r.next() % 2000
        guard faults else { return m }
        if unit(&r) < 0.7 { m.lossRate = unit(&r) * 0.1 }
        if unit(&r) < 0.5 { m.duplicateRate = unit(&r) * 0.05 }
        if unit(&r) < 0.5 { m.slowFsyncRate = unit(&r) * 0.02 }
        if unit(&r) < 0.8 { m.crashEverySeconds = 1 + unit(&r) * 9 }
        if unit(&r) < 0.8 { m.partitionEverySeconds = 1 + unit(&r) * 9 }
        if unit(&r) < 0.5 { m.pauseEverySeconds = 2 + unit(&r) * 10 }
        if unit(&r) < 0.3 { m.readFlipRate = unit(&r) * 0.0005 }
        if unit(&r) < 0.5 { m.delaySpikeRate = unit(&r) * 0.02 }
        if unit(&r) < 0.3 { m.diskFullEverySeconds = 3 + unit(&r) * 10 }
        if unit(&r) < 0.4 { m.wipeRate = unit(&r) * 0.5 }
        if unit(&r) < 0.5 { m.crashAfterVoteRate = unit(&r) * 0.5 }
        if unit(&r) < 0.5 { m.crashAfterCommitRate = unit(&r) * 0.01 }
        if unit(&r) < 0.4 { m.crashAfterFirstCommitRate = unit(&r) * 0.5 }
        if unit(&r) < 0.4 { m.electionJitterTicks = 1 + Int(r.next() % 3) }
        if unit(&r) < 0.4 { m.isolateNewLeaderRate = unit(&r) * 0.5 }
        if unit(&r) < 0.2 { m.maxAppendBytes = 1 }
        return m
    }

    var description: String {
        func f(_ x: Double) -> String { String(Int(x * 10000)) }
        return
            "loss \(f(lossRate))/10k dup \(f(duplicateRate))/10k latency \(latencyMinMicros)+\(latencyJitterMicros)us fsync \(fsyncMinMicros)+\(fsyncJitterMicros)us slow-fsync \(f(slowFsyncRate))/10k crash/\(Int(crashEverySeconds))s partition/\(Int(partitionEverySeconds))s pause/\(Int(pauseEverySeconds))s read-flip \(f(readFlipRate))/10k disk-full/\(Int(diskFullEverySeconds))s wipe \(f(wipeRate))/10k of crashes delay-spike \(f(delaySpikeRate))/10k crash-after-vote \(f(crashAfterVoteRate))/10k crash-after-commit \(f(crashAfterCommitRate))/10k crash-after-first-commit \(f(crashAfterFirstCommitRate))/10k election-jitter \(electionJitterTicks) ticks isolate-new-leader \(f(isolateNewLeaderRate))/10k append-bytes \(maxAppendBytes)"
    }
}

extension World {
    /// The process dies: its replica is gone, events for it are stale, and the disk keeps what
    /// was durable plus a torn prefix of what was in flight.
    func powerOff(_ node: SimNode) {
        node.node = nil
        node.leaderCommit = nil
        node.incarnation += 1
        node.device.crash { [unowned self] n in Int(below(UInt64(n))) }
    }

    func failStop(_ node: SimNode, _ error: StorageError) {
        trace("\(node.id) fail-stop: \(error)")
        count("fail-stop")
        if node.device.flipsInjected == 0 && node.device.noSpaceInjected == 0 {
            // Torn writes and crashes must never make the log unreadable: only an injected bit
            // flip may stop a node.
            checker.violations.append("\(node.id) stopped on a storage error with no injected fault: \(error)")
        }
        // The step that stopped may have applied entries (and written a snapshot of them) whose
        // output never reached the world; a restart loads that state, so account for them here
        // (seed 235: a snapshot at an index the checkers had never seen applied).
        if let n = node.node, let replica = node.replica {
            while node.appliedIndex < n.broker.appliedIndex,
                let e = try? replica.log.read(from: node.appliedIndex + 1, maxBytes: 1).first, e.index == node.appliedIndex + 1
            {
                apply(node, e)
            }
        }
        powerOff(node)
        schedule(.restart(node.index), after: 50_000 + below(500_000))
    }

    func handle(_ event: Event) {
        switch event {
        case .tick(let k):
            let node = nodes[k]
            schedule(.tick(k), after: World.tickMicros)
            guard let n = node.node else { return }
            if now < node.pausedUntil {
                node.ticksOwed += 1
                return
            }
            mixDigest(1, now, UInt64(k))
            run(node) { () throws(StorageError) in try n.tick(now: millis) }
        case .deliver(let to, let bytes):
            let node = nodes[to]
            guard let n = node.node else { return }
            if now < node.pausedUntil {
                schedule(event, after: node.pausedUntil - now)
                return
            }
            let m: Message
            do {
                m = try PeerCodec.decode(bytes)
            } catch {
                checker.violations.append("peer codec: a message to \(node.id) does not decode: \(error)")
                return
            }
            mixDigest(2, now, UInt64(index(of: m.from)), UInt64(node.index), m.term, kindCode(m.kind))
            trace("deliver \(m)")
            run(node) { () throws(StorageError) in try n.receive([m], now: millis) }
        case .diskDone(let k, let batch, let incarnation):
            let node = nodes[k]
            guard node.incarnation == incarnation, let n = node.node else { return }
            if now < node.pausedUntil {
                schedule(event, after: node.pausedUntil - now)
                return
            }
            mixDigest(3, now, UInt64(k), batch)
            node.device.complete(batch)
            run(node) { () throws(StorageError) in try n.diskCompleted(now: millis) }
        case .crash(let k):
            if faultsOn {
                let node = nodes[k]
                if node.replica != nil {
                    mixDigest(4, now, UInt64(k))
                    trace("crash \(node.id)")
                    count("crash")
                    powerOff(node)
                    // Lose the disk too, but never while another member is still rejoining:
                    // two lost copies of a committed entry are beyond what 3 replicas survive.
                    let othersWhole = nodes.allSatisfy { $0 === node || !$0.amnesiac }
                    if othersWhole && chance(mix.wipeRate) {
                        node.device.wipe()
                        node.lostDisk = true
                        node.amnesiac = true
                        count("crash with a wiped disk")
                        trace("\(node.id) lost its disk")
                    }
                    schedule(.restart(k), after: 10_000 + below(3_000_000))
                }
                schedule(.crash(randomNode()), after: exponentialMicros(meanSeconds: mix.crashEverySeconds))
            }
        case .crashNow(let k):
            let node = nodes[k]
            guard faultsOn, node.replica != nil else { return }
            mixDigest(8, now, UInt64(k))
            trace("crash \(node.id) (buggify)")
            count("crash (buggify)")
            powerOff(node)
            schedule(.restart(k), after: 100 + below(2_000))  // back before the messages in flight land
        case .restart(let k):
            let node = nodes[k]
            guard node.replica == nil, !node.retired else { return }
            mixDigest(5, now, UInt64(k))
            trace("restart \(node.id)")
            start(node)
        case .partition:
            guard faultsOn else { return }
            blocked.removeAll()
            let n = nodes.count
            let victim = Int(below(UInt64(n)))
            switch below(4) {
            case 0:  // isolate one node both ways
                for j in 0..<n where j != victim { blocked.insert([victim, j]); blocked.insert([j, victim]) }
                count("partition: isolate")
            case 1:  // asymmetric: the victim can send but not receive
                for j in 0..<n where j != victim { blocked.insert([j, victim]) }
                count("partition: one-way")
            case 2:  // clog one link
                let other = (victim + 1 + Int(below(UInt64(n - 1)))) % n
                blocked.insert([victim, other]); blocked.insert([other, victim])
                count("partition: clog link")
            default:  // split into two random halves
                var side = [Bool](repeating: false, count: n)
                for j in 0..<n { side[j] = below(2) == 0 }
                for a in 0..<n { for b in 0..<n where side[a] != side[b] { blocked.insert([a, b]) } }
                count("partition: split")
            }
            mixDigest(6, now, UInt64(blocked.count))
            trace("partition \(blocked.sorted { $0.lexicographicallyPrecedes($1) })")
            schedule(.heal, after: 200_000 + below(4_000_000))
            schedule(.partition, after: exponentialMicros(meanSeconds: mix.partitionEverySeconds) + 1_000_000)
        case .heal:
            blocked.removeAll()
            trace("heal")
        case .pause(let k):
            guard faultsOn else { return }
            let node = nodes[k]
            guard node.pausedUntil <= now else { return }
            node.pausedUntil = now + 100_000 + below(400_000)
            node.ticksOwed = 0
            schedule(.resume(k), after: node.pausedUntil - now)
            count("pause")
            trace("pause \(node.id) until \(Double(node.pausedUntil) / 1e6)s")
            schedule(.pause(randomNode()), after: exponentialMicros(meanSeconds: mix.pauseEverySeconds))
        case .resume(let k):
            let node = nodes[k]
            let owed = node.ticksOwed
            node.ticksOwed = 0
            guard let n = node.node, owed > 0 else { return }
            trace("resume \(node.id): \(owed) ticks fell due during the pause")
            mixDigest(9, now, UInt64(k), UInt64(owed))
            // One catch-up step, before anything that queued during the pause (the server does
            // the same; docs/raft.md, "Time").
            run(node) { () throws(StorageError) in try n.tick(now: millis, ticks: owed) }
        case .diskFull(let k):
            guard faultsOn else { return }
            nodes[k].device.full = true
            count("disk full")
            trace("disk full on \(nodes[k].id)")
            schedule(.diskFreed(k), after: 200_000 + below(2_000_000))
            schedule(.diskFull(randomNode()), after: exponentialMicros(meanSeconds: mix.diskFullEverySeconds) + 500_000)
        case .diskFreed(let k):
            nodes[k].device.full = false
            trace("disk freed on \(nodes[k].id)")
        case .client(let k):
            guard !idle else { return }  // the idle phase: no client writes or reads
            clients[k].timer(self)
        case .request(let k, let client, let frame):
            let node = nodes[k]
            guard let n = node.node else { return }
            if now < node.pausedUntil {
                schedule(event, after: node.pausedUntil - now)
                return
            }
            mixDigest(10, now, UInt64(k), client.connection, client.requestID, UInt64(frame.opcode))
            run(node) { () throws(StorageError) in try n.handle([(client, frame)], now: millis) }
        case .reply(let r):
            mixDigest(11, now, r.to.connection, r.to.requestID)
            if r.to.connection >= World.externalBase {
                external?(r)
                return
            }
            clients[Int(r.to.connection) - 1].reply(r, self)
        case .read:
            schedule(.read, after: 5_000 + below(50_000))
            read()
        case .endFaults:
            faultsOn = false
            blocked.removeAll()
            // One entry per append is a fault too: it ends with the others.
            mix.maxAppendBytes = FaultMix().maxAppendBytes
            for node in nodes { node.replica?.raft.setMaxAppendBytes(mix.maxAppendBytes) }
            for node in nodes {
                if node.pausedUntil > now { schedule(.resume(node.index), after: 0) }
                node.pausedUntil = 0
                node.device.full = false
                node.device.readFlipProbability = 0
                if node.replica == nil && !node.retired { schedule(.restart(node.index), after: 1) }
            }
            checker.livenessStart = now
            receives.expected = Set(messages.acked.filter { $0.value.topic == ReceiveChecker.topic }.keys)
            trace(
                "faults end; liveness phase; "
                    + nodes.map { n in
                        guard let r = n.replica?.raft else { return "\(n.id) down" }
                        return
                            "\(n.id) \(r.role) t\(r.term) last \(n.replica!.log.lastIndex) commit \(r.commitIndex)\(r.rejoining ? " rejoining" : "")\(n.retired ? " retired" : "") membership \(r.membership) at \(r.membershipIndex)"
                    }.joined(separator: ", "))
        }
    }
}
