// Driving the nodes: starting one on its simulated disk, running an input on it and carrying
// out its output (peer messages and client replies under the fault mix, applied entries to
// the checkers).
import TernBroker
import TernNode
import TernProtocol
import TernRaft
import TernStorage

extension World {
    func config(for node: SimNode) -> RaftConfig {
        // Founding members know each other (`--peers`); a node added later knows nobody (`--join`).
        var c = RaftConfig(id: node.id, members: node.joiner ? [] : nodes.prefix(options.nodes).map(\.id))
        c.plantedBugs = options.plantedBugs
        c.maxAppendBytes = mix.maxAppendBytes
        c.electionJitterTicks = mix.electionJitterTicks
        return c
    }

    func start(_ node: SimNode) {
        node.incarnation += 1
        let incarnation = node.incarnation
        node.device.schedule = { [unowned self, unowned node] id in
            var latency = mix.fsyncMinMicros + below(mix.fsyncJitterMicros)
            if faultsOn && chance(mix.slowFsyncRate) {
                latency += 20_000 + below(500_000)
                count("slow fsync")
            }
            schedule(.diskDone(node: node.index, batch: id, incarnation: incarnation), after: latency)
        }
        node.device.random = { [unowned self] in unit() }
        // One segment in three finds its zero-filling unfinished (FNV-1a of node and path).
        let salt = node.id.name
        node.device.preparationLags = { path in
            (salt + path).utf8.reduce(UInt64(0xCBF2_9CE4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 } % 3 == 0
        }
        if options.trace { node.device.traceHook = { [unowned self, unowned node] line in trace("\(node.id) disk: \(line)") } }
        node.device.readFlipProbability = faultsOn ? mix.readFlipRate : 0
        // Faults of the incarnation that just ended count for what this start finds.
        let earlierFaults = node.device.flipsInjected + node.device.noSpaceInjected
        node.device.flipsInjected = 0
        node.device.noSpaceInjected = 0
        node.appliedIndex = 0
        node.chain = 0xCBF2_9CE4_8422_2325
        var nodeConfig = NodeConfig(raft: config(for: node), endpoints: Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, address(of: $0.index)) }))
        nodeConfig.brokerGroup = options.brokerGroup
        nodeConfig.broker.autoCreateTopics = true
        nodeConfig.broker.defaultQueues = SimProducer.queues
        nodeConfig.broker.maxMessageBytes = 1024
        nodeConfig.broker.transactionCheckFirstMillis = 1_000
        nodeConfig.broker.transactionCheckIntervalMillis = 1_500
        nodeConfig.broker.transactionMaxChecks = 8
        // Past the fault phase and the liveness bound: a transaction is never given up while
        // faults keep its producers from the leader (seed 2822: elections from term 51 to 138
        // kept a committed local transaction's decision from every leader for longer than the
        // derived 26 s, and it was rolled back). Its checks decide it once the faults stop;
        // NodeTests shows the give-up rule itself.
        nodeConfig.broker.transactionGiveUpOverrideMillis = UInt64((options.seconds + options.livenessBoundSeconds) * 1000) + 30_000
        (nodeConfig.snapshotEveryEntries, nodeConfig.queueFileRows) = storageShape
        nodeConfig.snapshotEveryBytes = nodeConfig.snapshotEveryEntries == 0 ? 0 : (options.seed % 2 == 0 ? 96 << 10 : 0)
        if nodeConfig.snapshotEveryEntries > 0, let bytes = retentionShape {
            // Short retention: the log's front goes while members are down or partitioned away,
            // so that they come back to a leader without their next entries (a snapshot install).
            nodeConfig.retentionBytes = bytes
            nodeConfig.retentionMillis = 20_000
            nodeConfig.retentionCheckMillis = 500
        }
        do {
            node.node = try Node(
                config: nodeConfig, device: node.device, directory: "/\(node.id)",
                logOptions: CommitlogOptions(segmentSizeBytes: 64 << 10, maxEntryBodyBytes: 16 << 10),
                seed: options.seed &* 31 &+ UInt64(node.index) &+ UInt64(incarnation) << 32,
                lostDisk: node.lostDisk)
            let wiped = node.lostDisk
            node.lostDisk = false
            node.raftIncarnation = node.replica!.raft.incarnation
            node.lastMembershipIndex = node.replica!.raft.membershipIndex
            // Crashes alone never cost a node its own state: without a bit flip or a full disk
            // (in the incarnation that ended, or during this start) or a wiped disk, every
            // snapshot it kept is usable and its log is kept. (A flip read during an install
            // after its queue files were replaced stops the node, and the state it had is
            // gone: simulator seed 38 with this checker's first version.)
            let report = node.node!.startReport
            if !wiped && earlierFaults + node.device.flipsInjected + node.device.noSpaceInjected == 0,
                let bad = report.first(where: { $0.contains("set aside") || $0.contains("cannot be used") || $0.contains("rejoins as after a lost disk") })
            {
                messages.fail("restart: \(node.id) lost durable state in a crash (no bit flip injected, disk not wiped): \(bad)")
            }
            // A restart from a snapshot applies from after it: the applied sequence continues
            // from the chain recorded when the snapshot's entry was first applied.
            let restored = node.node!.broker.appliedIndex
            if restored > 0 {
                guard let c = checker.committed[restored] else { preconditionFailure("\(node.id) restored a snapshot at \(restored), never applied") }
                node.appliedIndex = restored
                node.chain = c.chain
                trace("\(node.id) restored snapshot \(restored): \(node.node!.startReport.joined(separator: "; "))")
                count("restart from a snapshot")
            } else if node.node!.startReport.count > 1 {
                count("snapshot set aside")
            }
        } catch {
            failStop(node, error)
        }
    }

    func index(of id: NodeID) -> Int { Int(id.name.dropFirst())! - 1 }

    /// A node's client address (its endpoint in route answers).
    func address(of index: Int) -> String { "\(options.addressPrefix)\(index)" }

    func kindCode(_ k: Message.Kind) -> UInt64 {
        switch k {
        case .preVote: return 1
        case .preVoteResponse(let g): return g ? 2 : 3
        case .vote: return 4
        case .voteResponse(let g): return g ? 5 : 6
        case .append(let p, _, let es, let c): return 7 &+ p << 8 &+ UInt64(es.count) << 32 &+ c << 40
        case .appendResponse(let s, let i, _, _): return (s ? 8 : 9) &+ i << 8
        case .heartbeat: return 10
        case .heartbeatResponse: return 11
        case .timeoutNow: return 12
        case .termQuery: return 13
        case .termQueryResponse: return 14
        case .snapshotChunk(let i, let o, _, _): return 15 &+ i << 8 &+ o << 32
        case .snapshotChunkResponse(let i, let o): return 16 &+ i << 8 &+ o << 32
        }
    }

    /// The node a NOT_LEADER answer names, or a random one when it names none (as the SDK does).
    func leaderHint(_ e: ErrorBody) -> Int {
        if let d = try? NotLeaderDetail.decode(e.detail), let k = nodes.firstIndex(where: { $0.id.name == d.leader }) { return k }
        return randomNode()
    }

    /// Milliseconds of virtual time: the node's clock.
    var millis: UInt64 { now / 1000 }

    /// Runs one input on a node and carries out its output; a storage error stops the node.
    func run(_ node: SimNode, _ body: () throws(StorageError) -> NodeOutput) {
        do {
            let out = try body()
            carryOut(node, out)
        } catch {
            failStop(node, error)
        }
    }

    func carryOut(_ node: SimNode, _ out: NodeOutput) {
        guard let replica = node.replica else { return }
        if node.amnesiac && !replica.raft.rejoining { node.amnesiac = false }
        checker.highestTerm = max(checker.highestTerm, replica.raft.term)
        if faultsOn && out.votedNow && chance(mix.crashAfterVoteRate) {
            schedule(.crashNow(node.index), after: below(1_000))
        }
        if faultsOn && replica.raft.role == .leader && !out.applied.isEmpty {
            let first = node.committedInTerm != replica.raft.term
            node.committedInTerm = replica.raft.term
            if chance(mix.crashAfterCommitRate) || (first && chance(mix.crashAfterFirstCommitRate)) {
                schedule(.crashNow(node.index), after: below(500))
            }
        }
        if out.role == .leader {
            checker.leaderElected(node.id, term: replica.raft.term)
            clientLeaderGuess = node.index
            if faultsOn && chance(mix.isolateNewLeaderRate) {
                blocked.removeAll()
                for j in nodes.indices where j != node.index { blocked.insert([node.index, j]); blocked.insert([j, node.index]) }
                count("partition: isolate new leader")
                trace("partition: isolate new leader \(node.id)")
                schedule(.heal, after: 100_000 + below(1_500_000))
            }
        }
        for m in out.messages { send(m) }
        let jump = out.installed?.afterApplied ?? out.applied.count
        for e in out.applied[..<jump] { apply(node, e) }
        if let s = out.installed?.index {
            // The applied state jumped to the installed snapshot's index: the applied sequence
            // continues from the chain recorded when that entry was first applied.
            guard let c = checker.committed[s] else { preconditionFailure("\(node.id) installed a snapshot at \(s), never applied") }
            trace("\(node.id) installed snapshot \(s) (applied \(node.appliedIndex) before)")
            count("snapshot install")
            node.appliedIndex = s
            node.chain = c.chain
        }
        for e in out.applied[jump...] { apply(node, e) }
        for snap in out.snapshots { checker.snapshot(node: node, index: snap.index, digest: snap.digest) }
        for n in out.notices { trace("\(node.id) notice: \(n)") }
        if let first = out.compacted {
            count("log compacted")
            trace("\(node.id) compacted its log: it starts at \(first)")
        }
        checkMembership(node, out)
        checkCommitmentRule(node)
        for r in out.replies { sendToClient(r) }
    }

    func send(_ m: Message) {
        let from = index(of: m.from), to = index(of: m.to)
        if faultsOn && (blocked.contains([from, to]) || chance(mix.lossRate)) { return }
        var latency = mix.latencyMinMicros + below(mix.latencyJitterMicros)
        if faultsOn && chance(mix.delaySpikeRate) {
            latency += 50_000 + below(1_450_000)
            count("delay spike")
        }
        var bytes = PeerCodec.encode(m)
        if options.plantedBugs.contains(.truncatePeerFrames), case .append(_, _, let entries, _) = m.kind, !entries.isEmpty {
            bytes.removeLast()  // a codec that loses a message's last byte
        }
        schedule(.deliver(to: to, bytes: bytes), after: latency)
        if faultsOn && chance(mix.duplicateRate) { schedule(.deliver(to: to, bytes: bytes), after: latency + below(10_000)) }
    }

    /// Client links: latency and loss, no partitions (a lost request or reply times out at the client).
    func sendRequest(to node: Int, client: ClientRef, frame: Frame) {
        if faultsOn && chance(mix.lossRate) { return }
        schedule(.request(node: node, client: client, frame: frame), after: mix.latencyMinMicros + below(mix.latencyJitterMicros))
    }

    func sendToClient(_ r: Reply) {
        if faultsOn && chance(mix.lossRate) { return }
        schedule(.reply(r), after: mix.latencyMinMicros + below(mix.latencyJitterMicros))
    }

    func apply(_ node: SimNode, _ e: LogEntry) {
        if options.trace { trace("\(node.id) applies \(e.index) t\(e.term) type \(e.type)") }
        var releasedIDs: [MessageID]?
        if e.type == BrokerEntryType.release { releasedIDs = (try? MessageIDList.decode(e.body))?.ids }
        if e.type == BrokerEntryType.releaseCopies { releasedIDs = (try? ReleaseCopies.decode(e.body))?.items.map(\.id) }
        if let ids = releasedIDs, let n = node.node {
            // Never early: a release applies no sooner than the leader's clock said it was due
            // (every clock here is the virtual one; apply follows the proposal).
            for id in ids {
                guard let m = try? n.broker.message(id), let delay = m.message.properties["TIMER_DELAY_MS"].flatMap(UInt64.init) else { continue }
                if millis < m.storeTimestamp + delay {
                    messages.fail(
                        "delayed message \(String(decoding: m.message.body, as: UTF8.self)) (\(id)) released at \(millis) ms on \(node.id), due at \(m.storeTimestamp + delay) ms"
                    )
                }
            }
        }
        if e.type == BrokerEntryType.trim, let n = node.node {
            // Retention never deletes what a message still needs: every pending delayed or half
            // message and every invisible delivery is stored at or after the trim index.
            if let pinned = try? n.broker.oldestPinnedEntry(), pinned < n.broker.trimIndex {
                messages.fail("retention: \(node.id) applied trim \(n.broker.trimIndex) (entry \(e.index)) past entry \(pinned), which a message still needs")
            }
        }
        checker.applied(node: node, entry: e)
        node.appliedIndex = e.index
        mixDigest(7, now, UInt64(node.index), e.index, e.term)
    }

    /// Snapshot interval and consume-queue file rows for this seed: a function of the seed, not
    /// a draw, so that every other choice of a seed stays as it was. A quarter of the seeds
    /// never snapshot (the whole log is replayed at every restart, as before).
    /// The log's size limit in half of the seeds that snapshot (a function of the seed): 3 to 10
    /// segments of 64 KiB.
    var retentionShape: UInt64? {
        let h = (options.seed &+ 0x7E7E).multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15).low
        return h >> 63 == 0 ? nil : (3 + (h >> 40) % 8) * (64 << 10)
    }

    var storageShape: (UInt64, UInt64) {
        let h = (options.seed &+ 0x5EED).multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15).low
        let every: [UInt64] = [0, 20, 100, 500]
        let rows: [UInt64] = [3, 16, 1 << 10]
        return (every[Int(h >> 60) % 4], rows[Int((h >> 50) % 3)])
    }
}
