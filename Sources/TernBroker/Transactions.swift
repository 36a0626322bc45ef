// Transactional messages. A half message (one message with `TRAN_MSG=true`) is stored in the
// log like any other but indexed only here, invisible to consumers. A transaction-end entry
// commits it (it then takes its place at the end of its queue, as a released delayed message
// does) or rolls it back (it is never indexed). Undecided half messages are checked: the leader
// proposes a check entry naming the ones due whose producer group has a producer polling it for
// checks (or that are past `transactionGiveUpMillis`), and applying it counts the check and sets
// the next one `transactionCheckIntervalMillis` after the entry's time; the check after the last
// allowed one, or any check past the give-up age, rolls the message back. Checks, counts and decisions are all in the log, so a new
// leader continues where the old one stopped, and a decision is made once.
import TernProtocol
import TernStorage

extension Broker {
    /// The rules for a half message: one message per send, from a named producer group, not delayed.
    static func validateHalf(_ header: SendHeader, delayed: Bool) -> ErrorBody? {
        if header.count != 1 { return ErrorBody(code: ErrorCode.badRequest, message: "a transactional send carries one message, not \(header.count)") }
        if header.producerGroup.isEmpty {
            return ErrorBody(code: ErrorCode.badRequest, message: "a transactional message needs a producer group (the broker checks back with its producers)")
        }
        if delayed { return ErrorBody(code: ErrorCode.badRequest, message: "a transactional message cannot also be delayed") }
        return nil
    }

    /// How a transaction ended, if it did and is still remembered.
    public func decision(_ id: MessageID) -> TransactionDecision? { decided[id] }

    func applyTransactionEnd(_ end: TransactionEnd, index: UInt64) throws(StorageError) -> ApplyOutcome {
        if let at = end.at { traceClock = at }
        if let half = halfMessages[end.id] {
            guard half.group == end.group else {
                return .failed(
                    ErrorBody(code: ErrorCode.badRequest, message: "half message \(end.id) was sent by producer group \(half.group), not \(end.group)"))
            }
            // A commit carries a copy of the half message (the leader adds it when it holds the
            // half message pending): the row then names this entry, and rows' entries never fall
            // along a queue (BrokerReads.swift). One proposed while the half message's own send
            // was not applied yet has none, and is sent back to be retried.
            guard end.decision == .rollback || end.copy != nil else {
                return .failed(
                    ErrorBody(code: ErrorCode.busy, message: "the commit of \(end.id) was proposed before its half message was applied; retry"))
            }
            try decide(end.id, end.decision, copy: end.copy == nil ? nil : (index, end.copyPosition), index: index, by: end.group)
            return .done
        }
        if let earlier = decided[end.id] {
            return earlier == end.decision
                ? .done
                : .failed(
                    ErrorBody(
                        code: ErrorCode.transactionDecided, message: "transaction \(end.id) was \(earlier == .commit ? "committed" : "rolled back") already"))
        }
        return .failed(ErrorBody(code: ErrorCode.messageNotFound, message: "\(end.id) is not a half message (or its outcome is no longer remembered)"))
    }

    /// Counts a check of each half message still undecided; past the maximum checks or the
    /// give-up age (by the entry's time), rolls it back. Returns the ones to ask about.
    func applyTransactionCheck(_ check: TransactionCheck) throws(StorageError) -> ApplyOutcome {
        var ask: [MessageID] = []
        for id in check.ids {
            guard var half = halfMessages[id], let timer = checkTimers.pending[id] else { continue }
            half.checks += 1
            if half.checks > config.transactionMaxChecks || check.now >= half.storedAt + config.transactionGiveUpMillis {
                traceClock = check.now
                try decide(id, .rollback, index: appliedIndex, by: "")
                continue
            }
            halfMessages[id] = half
            var next = timer
            next.deliverAt = check.now + config.transactionCheckIntervalMillis
            checkTimers.schedule(next)
            ask.append(id)
        }
        return .checks(ask)
    }

    /// `by`: the producer group that decided ("" when the broker rolled it back after its checks).
    private func decide(
        _ id: MessageID, _ decision: TransactionDecision, copy: (index: UInt64, position: UInt32)? = nil, index: UInt64, by group: String
    ) throws(StorageError) {
        halfMessages[id] = nil
        if let t = checkTimers.pending[id] {
            checkTimers.recall(id)
            if decision == .commit { try indexLate(t, copy: copy, index: index, step: .committed) }
        }
        if decision == .rollback { trace(id, TraceEvent(kind: .rolledBack, at: traceClock, index: index, group: group)) }
        decided[id] = decision
        decidedOrder.append(id)
        if decidedOrder.count - decidedHead > config.decidedTransactions {
            decided[decidedOrder[decidedHead]] = nil
            decidedHead += 1
            if decidedHead > 50_000 {
                decidedOrder.removeFirst(decidedHead)
                decidedHead = 0
            }
        }
    }

    /// An undecided half message as its producer sees it in a check (with `TRANSACTION_CHECK_TIMES`).
    public func halfMessage(_ id: MessageID) throws(StorageError) -> ReceivedMessage? {
        guard let half = halfMessages[id], let t = checkTimers.pending[id] else { return nil }
        let (meta, message) = try readMessage(entryIndex: t.storedIndex, position: t.position, carried: t.storedIndex != t.id.entryIndex)
        var m = ReceivedMessage(
            id: id, topic: t.queue.topic, queueID: t.queue.queueID, queueOffset: 0, storeTimestamp: meta.timestamp, producerGroup: meta.group, message: message)
        m.message.properties[TransactionProperty.checkTimes] = String(half.checks)
        return m
    }
}
