// Applying: what Raft returns from each input (peer messages, entries to apply, a role change)
// is absorbed here. Applied entries go to the broker and answer the writes waiting on them;
// a deposed leader fails everything still waiting and drops its soft state.
import TernBroker
import TernProtocol
import TernStorage

extension Node {
    func absorb(_ r: ReplicaOutput, into out: inout NodeOutput) throws(StorageError) {
        out.messages += r.messages
        // Entries up to the applied state's index are not applied again: after a snapshot
        // install (or a restart from a snapshot the log did not reach) the log refills entries
        // whose effect the snapshot holds.
        let fresh = r.apply.filter { $0.index > broker.appliedIndex }
        out.applied += fresh
        if let role = r.role { out.role = role }
        if r.votedNow { out.votedNow = true }
        var touched = false
        var checksQueued = false
        for entry in fresh {
            lastAppliedTerm = entry.term
            let outcome: ApplyOutcome
            do {
                outcome = try broker.apply(index: entry.index, type: entry.type, body: entry.body)
            } catch let e as StorageError {
                throw e
            } catch {
                throw StorageError(.corruption, "\(error); the node stops rather than skip it")
            }
            snapshotIfDue(entry, into: &out)
            if entry.type == BrokerEntryType.trim { trimApplied(entry, into: &out) }
            if entry.type == BrokerEntryType.acl { recheckHeld(into: &out) }
            if case .sent = outcome { touched = true }
            if entry.type == BrokerEntryType.release || entry.type == BrokerEntryType.releaseCopies || entry.type == BrokerEntryType.transactionEnd {
                touched = true
            }
            if case .checks(let ids) = outcome, isLeader {
                for id in ids {
                    guard let group = broker.halfMessages[id]?.group else { continue }
                    var list = checkOutbox[group] ?? []
                    if !list.contains(id) { list.append(id) }
                    if list.count > 10_000 { list.removeFirst(list.count - 10_000) }
                    checkOutbox[group] = list
                    checksQueued = true
                }
            }
            if entry.type == BrokerEntryType.receive, isLeader {
                // It decoded a moment ago in `apply`.
                guard let e = try? ReceiveEntry.decode(entry.body) else { preconditionFailure("receive entry \(entry.index) applied but does not decode") }
                for q in e.queues {
                    let ref = QueueRef(topic: e.topic, queueID: q.queueID)
                    for o in q.offsets { receiveProposedAgain.remove(DeliveryKey(group: e.group, queue: ref, offset: o)) }
                    if let held = receiveInFlight[e.group]?[ref] {
                        receiveInFlight[e.group]![ref] = held.count > 1 ? (held.count - 1, held.at) : nil
                        if receiveInFlight[e.group]!.isEmpty { receiveInFlight[e.group] = nil }
                    }
                }
            }
            guard let owner = pending.removeValue(forKey: entry.index) else { continue }
            switch (owner, outcome) {
            case (.send(let c, let op), .sent(let response)):
                out.replies.append(Reply(to: c, opcode: op.rawValue, result: .success(response.encoded())))
            case (.answer(let c, let op, let body), .done):
                out.replies.append(Reply(to: c, opcode: op.rawValue, result: .success(body)))
            case (.offsets(let cs), .done):
                for c in cs { out.replies.append(Reply(to: c, opcode: Opcode.commitOffset.rawValue, result: .success([]))) }
            case (.receive(let c), .received(let grants)):
                var deliveries: [ReceivedDelivery] = []
                for g in grants {
                    guard let m = try broker.message(at: g.handle.offset, in: g.handle.queue) else { continue }
                    deliveries.append(ReceivedDelivery(handle: g.handle, invisibleUntil: g.until, attempt: g.attempt, message: m))
                }
                let encoded = ReceiveResponse(deliveries: deliveries).encoded()
                if let topic = deliveries.first?.handle.queue.topic { traffic.delivered(topic, messages: deliveries.count, bytes: encoded.count) }
                out.replies.append(Reply(to: c, opcode: Opcode.receive.rawValue, result: .success(encoded)))
            case (.changeInvisible(let c), .invisibleUntil(let until)):
                out.replies.append(
                    Reply(to: c, opcode: Opcode.changeInvisible.rawValue, result: .success(ChangeInvisibleResponse(invisibleUntil: until).encoded())))
            case (_, .failed(let e)):
                fail(owner, e, into: &out)
            case (.internalWrite, _):
                break
            default:
                fail(owner, ErrorBody(code: ErrorCode.badRequest, message: "entry \(entry.index) did not apply as its request expected"), into: &out)
            }
        }
        let leaderNow = isLeader
        if leaderNow && !wasLeader {
            leaderSince = now
            locks = [:]
        }
        if wasLeader && !leaderNow {
            // Deposed: what was waiting may or may not commit under the next leader. Clients
            // retry there (idempotently, with a producer id). Groups re-form at the new leader.
            let e = notLeader()!
            for index in pending.keys.sorted() { fail(pending[index]!, e, into: &out) }
            pending = [:]
            releaseInFlight = nil
            checkInFlight = nil
            retentionInFlight = nil
            checkOutbox = [:]
            for p in checkPolls { out.replies.append(Reply(to: p.client, opcode: Opcode.pollTransactionChecks.rawValue, result: .failure(e))) }
            checkPolls = []
            for p in parkedReceives { out.replies.append(Reply(to: p.client, opcode: Opcode.receive.rawValue, result: .failure(e))) }
            parkedReceives = []
            receiveProposedNext = [:]
            receiveProposedAgain = []
            receiveInFlight = [:]
            for c in offsetWaiters { out.replies.append(Reply(to: c, opcode: Opcode.commitOffset.rawValue, result: .failure(e))) }
            offsetWaiters = []
            offsetBuffer = OffsetCommit()
            groups.reset()
        }
        wasLeader = leaderNow
        if !leaderNow { installsOut = [:] }
        for peer in r.snapshotRequests { startInstall(to: peer, into: &out) }
        for p in r.snapshotProgress { installProgress(p, into: &out) }
        for c in r.snapshotChunks { try receiveChunk(c, into: &out) }
        writePendingSnapshot(into: &out)
        if touched { try wakeParked(into: &out) }
        if checksQueued { try deliverChecks(into: &out) }
    }
}
