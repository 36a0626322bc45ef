// The chaos run's checker: reads every queue back from the start and holds the result against
// the history. Failures: an acknowledged message missing (lost), a message nobody sent
// (unexpected), a duplicate from an idempotent producer, a sharding key's messages out of
// order, a delayed message delivered early, a transaction torn (visible without a commit, or
// committed and acknowledged but not visible), a consumer group that never got a message.
import Foundation
import TernClient
import TernLauncher
import TernProtocol

struct ChaosReport {
    var text: String
    var failed: Bool
    /// "kind,seconds" lines: each fault's recovery time (for figures over many runs).
    var recoveryCSV: String
}

struct ChaosChecker {
    let client: TernCluster
    let history: ChaosHistory
    let workloads: ChaosWorkloads
    let cliAcked: [String: String]
    let seed: UInt64
    let duration: Int
    /// The group's trim index (retention stress; 0 otherwise): an acknowledged message stored
    /// before it may be gone by retention, and is counted apart, not as lost.
    var trimIndex: UInt64 = 0
    /// Runs with `--groups`: each group's own client, read group by group (empty: `client`), and
    /// how each topic's queues lie over the groups.
    var readers: [(group: String, client: TernCluster)] = []
    var placements: [String: [TopicPlacement]] = [:]

    func retained(_ id: MessageID?) -> Bool { id.map { $0.entryIndex < trimIndex } ?? false }

    /// Every message of `topic`, in queue order per queue.
    static func read(_ client: TernCluster, topic: String, queues: UInt32) async throws -> [ReceivedMessage] {
        var out: [ReceivedMessage] = []
        for q in 0..<queues {
            var offset: UInt64 = 0
            while true {
                let r = try await client.pull(topic: topic, queue: q, offset: offset, maxMessages: 1024)
                out += r.messages
                if r.messages.isEmpty || r.nextOffset >= r.maxOffset { break }
                offset = r.nextOffset
            }
        }
        return out
    }

    /// Acknowledged messages the live consumers have not seen yet.
    static func backlog(client: TernCluster, workloads: ChaosWorkloads, trimIndex: UInt64 = 0) async throws -> Int {
        let sends = workloads.history.allSends.filter { $0.acked && !($0.id.map { $0.entryIndex < trimIndex } ?? false) }
        let idempotent = Set(sends.filter { $0.workload == "idempotent" }.map(\.body))
        let plain = Set(sends.filter { $0.workload == "plain" }.map(\.body))
        let delayed = Set(sends.filter { $0.workload == "delayed" }.map(\.body))
        return idempotent.subtracting(workloads.clusteringSeen.bodies).count
            + workloads.broadcastSeen.map { plain.subtracting($0.bodies).count }.reduce(0, +)
            + delayed.subtracting(workloads.delayedSeen.bodies).count
    }

    func check() async throws -> ChaosReport {
        var failures: [String] = []
        var lines: [String] = []
        var retainedAway = 0
        func fail(_ s: String) { failures.append(s) }
        for p in history.problems { fail(p) }
        let sends = history.allSends
        let faults = history.allFaults
        var stored: [String: [ReceivedMessage]] = [:]
        if readers.isEmpty {
            for (topic, queues) in ChaosTopic.all {
                for m in try await ChaosChecker.read(client, topic: topic, queues: queues) {
                    stored[String(decoding: m.message.body, as: UTF8.self), default: []].append(m)
                }
            }
        } else {
            for (group, reader) in readers {
                for (topic, _) in ChaosTopic.all {
                    let queues = placements[topic]?.first { $0.group == group }?.queues ?? 0
                    for var m in try await ChaosChecker.read(reader, topic: topic, queues: queues) {
                        m.brokerGroup = group
                        stored[String(decoding: m.message.body, as: UTF8.self), default: []].append(m)
                    }
                }
            }
        }
        // Many groups: an acknowledged message is stored in the group that acknowledged it, and
        // no message is stored in two groups (a send never moves to another group).
        var misplaced = 0
        if !readers.isEmpty {
            for s in sends where s.acked {
                guard let g = s.group, let list = stored[s.body], !list.isEmpty, !list.contains(where: { $0.brokerGroup == g }) else { continue }
                misplaced += 1
                fail(
                    "misplaced: \(s.workload) message \(s.body) was acknowledged by \(g) (\(s.idText ?? "")) and is stored in \(Set(list.map(\.brokerGroup)).sorted())"
                )
            }
            for (body, list) in stored.sorted(by: { $0.key < $1.key }) where Set(list.map(\.brokerGroup)).count > 1 {
                misplaced += 1
                fail("two groups: \(body) is stored in \(Set(list.map(\.brokerGroup)).sorted().joined(separator: " and "))")
            }
        }
        let attempted = Set(sends.map(\.body))
        var counts: [String: (sent: Int, acked: Int, lost: Int, duplicated: Int)] = [:]
        var unexpected = 0
        for (body, list) in stored.sorted(by: { $0.key < $1.key }) {
            let known = attempted.contains(body) || (body.hasPrefix("cli-") && list.allSatisfy { $0.topic == ChaosTopic.cli })
            if !known {
                unexpected += 1
                fail(
                    "unexpected: \(body) stored at \(list.map { "\($0.topic)#\($0.queueID)@\($0.queueOffset)" }.joined(separator: ", ")), which no client sent")
            }
        }
        let byWorkload = Dictionary(grouping: sends, by: \.workload)
        for w in byWorkload.keys.sorted() {
            let list = byWorkload[w]!
            let ackedBodies = Set(list.filter(\.acked).map(\.body))
            var lost = 0, duplicated = 0
            let ackedIDs = Dictionary(list.filter(\.acked).map { ($0.body, $0.id) }, uniquingKeysWith: { a, _ in a })
            let attemptsOf = Dictionary(list.map { ($0.body, 1) }, uniquingKeysWith: +)
            for body in ackedBodies.sorted() {
                if w == "transactional" { continue }  // judged below, by its decision
                if (stored[body] ?? []).isEmpty {
                    if retained(ackedIDs[body] ?? nil) {
                        retainedAway += 1
                        continue
                    }
                    lost += 1
                    fail(
                        "lost: \(w) message \(body) was acknowledged (\(list.first { $0.body == body && $0.acked }?.id.map { "\($0)" } ?? "")) and is not stored"
                    )
                }
            }
            for body in Set(list.map(\.body)).sorted() {
                let n = stored[body]?.count ?? 0
                guard n > 1 else { continue }
                duplicated += 1
                // Idempotent producers store a send once; a body sent again after a failed
                // attempt (ordered) is a new send, and may be stored twice.
                if w == "idempotent" || w == "transactional" || (w == "ordered" && (attemptsOf[body] ?? 1) == 1) {
                    fail("duplicate: \(w) message \(body) is stored \(n) times")
                }
            }
            counts[w] = (list.count, ackedBodies.count, lost, duplicated)
        }

        // Order per sharding key: along its queue, a key's numbers never go down.
        var outOfOrder = 0
        var last: [String: (n: Int, offset: UInt64, queue: UInt32)] = [:]
        let orderedStored = stored.values.flatMap { $0 }.filter { $0.topic == ChaosTopic.ordered }.sorted {
            ($0.brokerGroup, $0.queueID, $0.queueOffset) < ($1.brokerGroup, $1.queueID, $1.queueOffset)
        }
        let orderedPlacement = placements[ChaosTopic.ordered] ?? []
        for m in orderedStored {
            let parts = String(decoding: m.message.body, as: UTF8.self).split(separator: "|")
            guard parts.count == 3, let n = Int(parts[2]) else { continue }
            let key = String(parts[1])
            // The key's queue: its hash over every queue, numbered across the groups in name order.
            var (group, queue) = ("", queueForShardingKey(key, queues: 4))
            if !orderedPlacement.isEmpty {
                var q = queueForShardingKey(key, queues: orderedPlacement.reduce(0) { $0 + $1.queues })
                for p in orderedPlacement {
                    if q < p.queues {
                        (group, queue) = (p.group, q)
                        break
                    }
                    q -= p.queues
                }
            }
            if m.queueID != queue || m.brokerGroup != group {
                fail("order: \(key)'s message \(n) is in \(m.brokerGroup)#\(m.queueID), not its key's \(group)#\(queue)")
            }
            if let l = last[key], n < l.n {
                outOfOrder += 1
                fail("out of order: key \(key): \(n) at \(m.queueID)@\(m.queueOffset) after \(l.n) at @\(l.offset)")
            }
            last[key] = (n, m.queueOffset, m.queueID)
        }

        // Transactions: visible exactly when the local transaction committed.
        var torn = 0
        let decisions = workloads.database.all
        let txAcked = Set(sends.filter { $0.workload == "transactional" && $0.acked }.map(\.body))
        for body in Set(sends.filter { $0.workload == "transactional" }.map(\.body)).sorted() {
            let visible = !(stored[body] ?? []).isEmpty
            let committed = decisions[body] == .commit
            if visible && !committed {
                torn += 1
                fail("torn: transaction \(body) is visible although its local transaction \(decisions[body] == nil ? "never ran" : "rolled back")")
            } else if !visible && committed && txAcked.contains(body) && !retained(sends.first { $0.body == body && $0.acked }?.id) {
                torn += 1
                fail("torn: transaction \(body) committed locally (half message acknowledged) but is not visible")
            }
        }
        let txVisible = Set(txAcked.filter { !(stored[$0] ?? []).isEmpty })

        // Delayed: never before its time (same machine clock); lateness reported.
        var early = 0
        var lateness: [Double] = []
        for (body, seen) in workloads.delayedSeen.firsts {
            let parts = body.split(separator: "|")
            guard parts.count == 3, let delay = UInt64(parts[2]) else { continue }
            let due = seen.message.storeTimestamp + delay
            if seen.at + 2 < due {
                early += 1
                fail("early: delayed message \(body) delivered at \(seen.at), due at \(due) (stored \(seen.message.storeTimestamp) + \(delay) ms)")
            } else {
                lateness.append(Double(seen.at) - Double(due))
            }
        }

        // Killed CLI clients: every id they printed is stored, with their body.
        var cliLost = 0
        let byID = Dictionary(
            stored.values.flatMap { $0 }.filter { $0.topic == ChaosTopic.cli }.map { ($0.groupMessageID.description, $0) }, uniquingKeysWith: { a, _ in a })
        for (id, label) in cliAcked.sorted(by: { $0.key < $1.key }) {
            let prefix = label.split(separator: " ").first.map(String.init) ?? label
            guard let m = byID[id], String(decoding: m.message.body, as: UTF8.self).hasPrefix(prefix + " ") else {
                if retained(GroupMessageID(id)?.id) {
                    retainedAway += 1
                    continue
                }
                cliLost += 1
                fail("lost: \(id), acknowledged to the killed client \(prefix), is not stored")
                continue
            }
        }

        // Consumer groups: everything acknowledged reached them.
        let backlogMissing = try await ChaosChecker.backlog(client: client, workloads: workloads, trimIndex: trimIndex)
        if backlogMissing > 0 { fail("consumers: \(backlogMissing) acknowledged messages never reached a live consumer group that should have had them") }

        // Recovery: from each fault to the first acknowledged write that started after it.
        let acks = sends.filter { $0.acked && ["plain", "idempotent", "ordered"].contains($0.workload) }.sorted { $0.ended < $1.ended }
        var recovery: [String: [Double]] = [:]
        for f in faults {
            // A fault in one group: the first acknowledgement by that group (the others never stopped).
            if let first = acks.first(where: { $0.started >= f.started && (f.group == nil || $0.group == f.group) }) {
                recovery[f.kind, default: []].append(first.ended - f.started)
            }
        }

        // The report.
        let totalSent = sends.count + cliAcked.count
        let totalAcked = sends.filter(\.acked).count + cliAcked.count
        lines.append("tern chaos report")
        lines.append("seed \(seed), \(duration) s of faults; replay the fault schedule: tern chaos --seed \(seed) --duration \(duration)")
        lines.append("")
        lines.append(
            "faults injected: \(faults.count)  ("
                + Dictionary(grouping: faults, by: \.kind).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.count)" }.joined(separator: ", ") + ")")
        lines.append(
            "sent \(totalSent), acknowledged \(totalAcked), lost \(counts.values.map(\.lost).reduce(0, +) + cliLost), unexpected \(unexpected), out of order \(outOfOrder), torn \(torn), early \(early)"
                + (readers.isEmpty ? "" : ", misplaced \(misplaced)")
        )
        if !readers.isEmpty {
            let perGroup = Dictionary(grouping: sends.filter(\.acked), by: { $0.group ?? "?" }).mapValues(\.count)
            lines.append("acknowledged per group: " + perGroup.keys.sorted().map { "\($0) \(perGroup[$0]!)" }.joined(separator: ", "))
        }
        if trimIndex > 0 {
            lines.append(
                "retention stress: trim index \(trimIndex); \(retainedAway) acknowledged messages before it were deleted by retention (not counted as lost)")
        }
        lines.append("")
        lines.append("workload        sent   acked   lost   duplicated")
        for w in counts.keys.sorted() {
            let c = counts[w]!
            lines.append("\(w.padding(14))  \(String(c.sent).padding(5))  \(String(c.acked).padding(6))  \(String(c.lost).padding(5))  \(c.duplicated)")
        }
        lines.append("\("killed-clients".padding(14))  -      \(String(cliAcked.count).padding(6))  \(String(cliLost).padding(5))  -")
        lines.append("")
        lines.append(
            "transactions: \(txAcked.count) half messages acknowledged, \(txVisible.count) committed and visible, \(decisions.values.filter { $0 == .rollback }.count) rolled back locally, \(txAcked.count - decisions.count) never decided (crashed before deciding)"
        )
        let late = Quantiles(lateness.map { $0 / 1000 }, unit: 1e-3)
        lines.append(
            "delayed: \(workloads.delayedSeen.firsts.count) delivered, \(early) early; lateness p50 \(fmt(late.value(at: 0.5))) s, p99 \(fmt(late.value(at: 0.99))) s, max \(fmt(late.max)) s"
        )
        lines.append(
            "consumers: clustering group \(workloads.clusteringSeen.total) deliveries, broadcasting members \(workloads.broadcastSeen.map { String($0.total) }.joined(separator: " and ")), delayed \(workloads.delayedSeen.total)"
        )
        lines.append("")
        lines.append("recovery (fault to first acknowledged write started after it), seconds:")
        lines.append("fault                 count   p50     p99     max")
        for kind in recovery.keys.sorted() {
            let v = Quantiles(recovery[kind]!, unit: 1e-3)
            lines.append(
                "\(kind.padding(20))  \(String(v.count).padding(5))  \(fmt(v.value(at: 0.5)).padding(6))  \(fmt(v.value(at: 0.99)).padding(6))  \(fmt(v.max))")
        }
        lines.append("")
        if failures.isEmpty {
            lines.append("result: PASS (nothing lost, unexpected, out of order, torn, early; no idempotent duplicates)")
        } else {
            lines.append("result: FAIL, \(failures.count) problems; the first:")
            for f in failures.prefix(30) { lines.append("  - \(f)") }
        }
        var csv = "fault,recovery_seconds\n"
        for kind in recovery.keys.sorted() { for v in recovery[kind]! { csv += "\(kind),\(fmt(v))\n" } }
        return ChaosReport(text: lines.joined(separator: "\n") + "\n", failed: !failures.isEmpty, recoveryCSV: csv)
    }
}
