// Receive/ack consumption (RocketMQ 5's SimpleConsumer). A group's state per queue is the next
// offset it has not yet handed out, and the deliveries handed out but not yet acknowledged,
// each invisible until a time. All of it changes only by log entries: a receive entry (the
// leader's choice, stamped with its clock), and receipt entries (acknowledge, or change the
// invisible time). A new leader therefore knows every invisible time its predecessor gave,
// and hands a message out again only once that time has passed by its own clock.
import TernProtocol
import TernStorage

struct Invisible {
    var until: UInt64
    /// Index of the receive entry that handed it out last: the receipt handle's proof.
    var receiveIndex: UInt64
    var attempt: UInt32
}

struct ReceiveQueue {
    var next: UInt64
    var invisible: [UInt64: Invisible] = [:]
}

/// A delivery the leader has proposed and not yet applied.
public struct DeliveryKey: Hashable, Sendable {
    public var group: String
    public var queue: QueueRef
    public var offset: UInt64
    public init(group: String, queue: QueueRef, offset: UInt64) {
        self.group = group
        self.queue = queue
        self.offset = offset
    }
}

extension Broker {
    private var earlyMillis: UInt64 { config.plantedBugs.contains(.redeliverEarly) ? 2_000 : 0 }

    /// The leader's choice for a receive, nil when nothing is there: deliveries whose invisible
    /// time has passed by `now` first, then fresh messages matching the tag filter, queue by
    /// queue from `startQueue`. `proposedNext` and `proposedAgain` are what the leader proposed
    /// and has not applied yet, so that two receives in flight do not choose the same message;
    /// `inFlight`, the group's queues named by a receive entry proposed and not yet applied (a
    /// FIFO group's queue hands out nothing while one is).
    public func chooseForReceive(
        _ request: ReceiveRequest, now: UInt64, startQueue: UInt32, proposedNext: [QueueRef: UInt64], proposedAgain: Set<DeliveryKey>,
        inFlight: Set<QueueRef> = []
    ) throws(StorageError) -> Result<ReceiveEntry?, ErrorBody> {
        guard let n = topics[request.topic] else {
            return .failure(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(request.topic) does not exist"))
        }
        let filter = TagFilter(request.tagFilter)
        var sql: SQLFilter?
        if !request.sqlFilter.isEmpty {
            switch sqlFilter(request.sqlFilter) {
            case .success(let f): sql = f
            case .failure(let e): return .failure(e)
            }
        }
        let fifo = groupSettings[request.group] == true
        var left = Int(max(1, min(request.maxMessages, 1024)))
        var chosen: [ReceiveEntry.Queue] = []
        for k in 0..<n {
            let ref = QueueRef(topic: request.topic, queueID: (startQueue &+ k) % n)
            guard left > 0, let q = queue(ref) else { continue }
            var cursor = RowCursor(queueFiles, q.key)
            let state = receiveGroups[request.group]?[ref] ?? ReceiveQueue(next: q.baseOffset)
            if fifo {
                // A FIFO group's queue is blocked while a delivery of it is invisible, or one
                // proposed is not applied yet; once all lapse, they go out again first, in order.
                if inFlight.contains(ref) || state.invisible.values.contains(where: { $0.until > now + earlyMillis }) { continue }
            }
            var offsets: [UInt64] = []
            for o in state.invisible.keys.sorted() where left > 0 && state.invisible[o]!.until <= now + earlyMillis {
                guard !proposedAgain.contains(DeliveryKey(group: request.group, queue: ref, offset: o)) else { continue }
                offsets.append(o)
                left -= 1
            }
            if fifo && !state.invisible.isEmpty {
                if !offsets.isEmpty { chosen.append(ReceiveEntry.Queue(queueID: ref.queueID, next: state.next, offsets: offsets)) }
                continue
            }
            let start = Swift.max(state.next, proposedNext[ref] ?? 0, q.baseOffset)
            var next = start
            var scanned = 0
            var invisible = state.invisible.count
            while left > 0, next < q.maxOffset, invisible < config.maxInvisiblePerQueue, scanned < config.maxScanPerPull {
                let row = try cursor.row(at: next).0
                scanned += 1
                if filter.matches(hash: row.tagHash) {
                    let exact =
                        try filter.tags == nil && sql == nil
                        ? true
                        : readRetained(row).map { filter.matches(tag: $0.1.tag) && (sql?.matches(properties: $0.1.properties, tag: $0.1.tag) ?? true) } ?? false
                    if exact {
                        offsets.append(next)
                        left -= 1
                        invisible += 1
                    }
                }
                next += 1
            }
            if !offsets.isEmpty || next > start { chosen.append(ReceiveEntry.Queue(queueID: ref.queueID, next: next, offsets: offsets)) }
        }
        guard !chosen.isEmpty else { return .success(nil) }
        return .success(ReceiveEntry(group: request.group, topic: request.topic, now: now, until: now + request.invisibleMillis, queues: chosen))
    }

    /// Hands out what the entry names and is still there to hand out: a fresh offset not handed
    /// out before, or a delivery whose invisible time passed by the entry's clock. Everything
    /// else (taken meanwhile, acknowledged) is left out of the grant.
    func applyReceive(_ e: ReceiveEntry, index: UInt64) -> ApplyOutcome {
        var grants: [ReceivedGrant] = []
        let fifo = groupSettings[e.group] == true
        for chosen in e.queues {
            let ref = QueueRef(topic: e.topic, queueID: chosen.queueID)
            guard let q = queue(ref) else { continue }
            // A FIFO group's queue: nothing while a delivery is invisible by the entry's clock;
            // only the lapsed deliveries while there are any; fresh messages only after.
            if fifo, let held = receiveGroups[e.group]?[ref]?.invisible, !held.isEmpty {
                if held.values.contains(where: { $0.until > e.now + earlyMillis }) { continue }
            }
            // Out of the table while it changes, so the change does not copy its invisible map.
            var state = receiveGroups[e.group]?.removeValue(forKey: ref) ?? ReceiveQueue(next: q.baseOffset)
            let oldNext = Swift.max(state.next, q.baseOffset)
            let blocked = fifo && !state.invisible.isEmpty
            let newNext = blocked ? oldNext : Swift.min(Swift.max(chosen.next, oldNext), q.maxOffset)
            for o in chosen.offsets {
                if o >= oldNext && o < newNext {
                    guard state.invisible[o] == nil else { continue }
                    state.invisible[o] = Invisible(until: e.until, receiveIndex: index, attempt: 1)
                } else if o < oldNext, var inv = state.invisible[o], inv.until <= e.now + earlyMillis {
                    inv.until = e.until
                    inv.receiveIndex = index
                    inv.attempt += 1
                    state.invisible[o] = inv
                } else {
                    continue
                }
                grants.append(
                    ReceivedGrant(handle: ReceiptHandle(queue: ref, offset: o, receiveIndex: index), until: e.until, attempt: state.invisible[o]!.attempt))
                if traces.active, let t = tracedIDs(in: ref, o..<(o + 1)).first {
                    trace(
                        t.id,
                        TraceEvent(
                            kind: .received, at: e.now, index: index, group: e.group, queue: ref, offset: o, attempt: state.invisible[o]!.attempt,
                            detail: e.until))
                }
            }
            state.next = newNext
            receiveGroups[e.group, default: [:]][ref] = state
        }
        return .received(grants)
    }

    func applyReceipt(_ e: ReceiptEntry, index: UInt64) -> ApplyOutcome {
        let h = e.handle
        if let at = e.at { traceClock = at }
        guard let state = receiveGroups[e.group]?[h.queue], h.offset < state.next else {
            return .failed(ErrorBody(code: ErrorCode.receiptExpired, message: "receipt handle \(h) names nothing this group received"))
        }
        // Below `state.next`, so below the queue's end: `offset + 1` cannot overflow (the handle
        // is the client's; seen with UInt64.max by review, TraceTests.forgedReceipt).
        let traced = traces.active ? tracedIDs(in: h.queue, h.offset..<(h.offset + 1)).first?.id : nil
        guard let inv = state.invisible[h.offset] else {
            // Consumed already: a repeated acknowledgement (its first answer was lost) succeeds.
            if e.until == nil { return .done }
            return .failed(ErrorBody(code: ErrorCode.receiptExpired, message: "receipt handle \(h): the message was acknowledged already"))
        }
        guard inv.receiveIndex == h.receiveIndex else {
            return .failed(
                ErrorBody(
                    code: ErrorCode.receiptExpired,
                    message: "receipt handle \(h) is no longer valid: its invisible time ended and the message was delivered again (attempt \(inv.attempt))"))
        }
        // In place: a copy of `state` written back would copy the group's whole invisible map.
        if let until = e.until {
            receiveGroups[e.group]![h.queue]!.invisible[h.offset]!.until = until
            if let traced {
                trace(
                    traced, TraceEvent(kind: .invisibleChanged, at: traceClock, index: index, group: e.group, queue: h.queue, offset: h.offset, detail: until))
            }
            return .invisibleUntil(until)
        }
        receiveGroups[e.group]![h.queue]!.invisible[h.offset] = nil
        if let traced {
            trace(traced, TraceEvent(kind: .acknowledged, at: traceClock, index: index, group: e.group, queue: h.queue, offset: h.offset, attempt: inv.attempt))
        }
        return .done
    }

    /// The message at `offset` of `queue`, if the queue still holds it.
    public func message(at offset: UInt64, in ref: QueueRef) throws(StorageError) -> ReceivedMessage? {
        guard let q = queue(ref), offset >= q.baseOffset, offset < q.maxOffset, let row = try row(ref, at: offset) else { return nil }
        guard let (meta, m) = try readRetained(row) else { return nil }
        return ReceivedMessage(
            id: MessageID(entryIndex: row.entryIndex, slot: row.slot), topic: ref.topic, queueID: ref.queueID, queueOffset: offset,
            storeTimestamp: meta.timestamp, producerGroup: meta.group, message: m)
    }

    /// The group received and acknowledged (or passed over) the message at `offset`.
    public func receiveConsumed(group: String, queue: QueueRef, offset: UInt64) -> Bool {
        guard let state = receiveGroups[group]?[queue] else { return false }
        return offset < state.next && state.invisible[offset] == nil
    }

    /// How a receive group stands with one message, for diagnostics.
    public func receiveDescription(group: String, queue: QueueRef, offset: UInt64) -> String {
        guard let state = receiveGroups[group]?[queue] else { return "group has no state for \(queue)" }
        if let inv = state.invisible[offset] {
            return "invisible until \(inv.until), attempt \(inv.attempt), handed out by entry \(inv.receiveIndex) (next \(state.next))"
        }
        return offset < state.next ? "done (acknowledged or passed; next \(state.next))" : "not yet handed out (next \(state.next))"
    }

    /// A receive group's progress on a queue: next fresh offset and deliveries invisible now.
    public func receiveState(group: String, queue: QueueRef) -> (next: UInt64, invisible: Int)? {
        receiveGroups[group]?[queue].map { ($0.next, $0.invisible.count) }
    }
}
