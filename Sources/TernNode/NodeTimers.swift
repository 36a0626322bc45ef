// What the leader proposes by its own clock, one entry in flight at a time: the release of
// delayed messages that fell due, and checks of undecided transactions; and the answers to
// the producers' check polls, from the checks applied for their group.
import TernBroker
import TernProtocol
import TernStorage

extension Node {
    /// The leader proposes the release of delayed messages due by its clock, one release entry
    /// (up to 1,024 messages) at a time. Only a leader that applied its own term's entry does:
    /// then its timer has every earlier release, and nothing is released twice.
    func releaseDue(into out: inout NodeOutput) throws(StorageError) {
        if let r = releaseInFlight, broker.appliedIndex >= r { releaseInFlight = nil }
        let twice = config.raft.plantedBugs.contains(.releaseTwice)
        guard isReadyLeader, releaseInFlight == nil || twice, let next = broker.nextDelayDue else { return }
        let clock = config.raft.plantedBugs.contains(.releaseEarly) ? now + 2_000 : now
        guard next <= clock else { return }
        let due = try broker.dueTimers(now: clock, max: 1024)
        guard !due.isEmpty else { return }
        // Each with a copy (Copies.swift), about 1 MiB of them per entry.
        var items: [(id: MessageID, item: [UInt8])] = []
        var bytes = 0
        for t in due where items.isEmpty || bytes < 1 << 20 {
            guard let item = try broker.carryItem(t) else {
                out.notices.append("delayed message \(t.id) is due but its entry \(t.storedIndex) is gone")
                continue
            }
            items.append((t.id, item))
            bytes += item.count
        }
        guard !items.isEmpty else { return }
        let (result, output) = try replica.propose([(BrokerEntryType.releaseCopies, ReleaseCopies(items: items, at: stamp).encoded())])
        if case .accepted(let first, _) = result {
            releaseInFlight = first
            pending[first] = .internalWrite
        }
        try absorb(output, into: &out)
    }

    /// The leader proposes a check entry for the half messages whose check is due by its clock,
    /// one entry at a time, once it applied its own term's entry (so every earlier check and
    /// decision is in its state).
    func checkTransactions(into out: inout NodeOutput) throws(StorageError) {
        if let c = checkInFlight, broker.appliedIndex >= c { checkInFlight = nil }
        let expired = checkPolls.filter { now >= $0.deadline }
        checkPolls.removeAll { now >= $0.deadline }
        for p in expired {
            out.replies.append(Reply(to: p.client, opcode: Opcode.pollTransactionChecks.rawValue, result: .success(MessageList(messages: []).encoded())))
        }
        guard isReadyLeader, checkInFlight == nil, let next = broker.checkTimers.next, next <= now else { return }
        // A check counts against the maximum: spend one only where a producer of the group is
        // polling here and can answer it (simulator seed 50031: eight checks were spent while
        // leadership moved and no producer's poll was held, and a committed local transaction
        // was rolled back). Past the give-up age a half message is checked (and so rolled back)
        // whoever polls.
        let polled = Set(checkPolls.map(\.group))
        // Filtered before the limit, so a group nobody polls cannot hold back the others.
        let giveUp = config.broker.transactionGiveUpMillis
        let halves = broker.halfMessages
        let due: [PendingTimer] = Array(
            broker.checkTimers.due(now: now, max: Int.max).lazy.filter { [now] timer in
                guard let half = halves[timer.id] else { return false }
                return polled.contains(half.group) || now >= half.storedAt + giveUp
            }.prefix(1024))
        guard !due.isEmpty else { return }
        let (result, output) = try replica.propose([(BrokerEntryType.transactionCheck, TransactionCheck(now: now, ids: due.map(\.id)).encoded())])
        if case .accepted(let first, _) = result {
            checkInFlight = first
            pending[first] = .internalWrite
        }
        try absorb(output, into: &out)
    }

    /// Answers held check polls from the checks waiting for their group, oldest poll first.
    func deliverChecks(into out: inout NodeOutput) throws(StorageError) {
        var keep: [(client: ClientRef, group: String, deadline: UInt64)] = []
        for p in checkPolls {
            guard var ids = checkOutbox[p.group], !ids.isEmpty else {
                keep.append(p)
                continue
            }
            var list: [ReceivedMessage] = []
            while !ids.isEmpty && list.count < 32 {
                if let m = try broker.halfMessage(ids.removeFirst()) { list.append(m) }
            }
            checkOutbox[p.group] = ids.isEmpty ? nil : ids
            if list.isEmpty {
                keep.append(p)
                continue
            }
            out.replies.append(Reply(to: p.client, opcode: Opcode.pollTransactionChecks.rawValue, result: .success(MessageList(messages: list).encoded())))
        }
        checkPolls = keep
    }
}
