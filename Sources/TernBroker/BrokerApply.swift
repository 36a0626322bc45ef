// Applying committed entries, in log order: admin commands, sends (checked, deduplicated per
// producer and indexed in their consume queues), releases and recalls of delayed messages,
// offset commits and resets; transactions and receives go to their own files' appliers.
import TernProtocol
import TernRaft
import TernStorage

extension Broker {
    /// Applies committed entry `index`. Throws `CorruptEntry` when the entry's envelope (what the
    /// leader encoded: the store timestamp and send header, an admin command, an offset commit,
    /// ...) does not decode or its type is unknown: a committed entry is never skipped, and the
    /// node fails stop. Client content inside a send that fails validation is not corruption:
    /// every replica refuses it the same way (`.failed`).
    /// A consume queue's file that cannot be written or read throws its `StorageError`.
    public func apply(index: UInt64, type: UInt8, body: [UInt8]) throws -> ApplyOutcome {
        precondition(index > appliedIndex, "entry \(index) applied after \(appliedIndex)")
        appliedIndex = index
        appliedBytes += Broker.countedBytes(type: type, body.count)
        traceClock = lastStoreTimestamp
        do {
            switch type {
            case BrokerEntryType.admin: return try applyAdmin(try AdminCommand.decode(body), index: index)
            case BrokerEntryType.messages: return try applyMessages(index: index, body: body)
            case BrokerEntryType.release:
                return try applyRelease(try MessageIDList.decode(body).ids, index: index)
            case BrokerEntryType.recall:
                let ids = try MessageIDList.decode(body).ids
                for id in ids where !(try isDelayPending(id)) {
                    return .failed(
                        ErrorBody(
                            code: ErrorCode.messageNotFound, message: "\(id) is not a pending delayed message (delivered already, recalled, or never delayed)"))
                }
                for id in ids {
                    try recallDelayed(id)
                    trace(id, TraceEvent(kind: .recalled, at: traceClock, index: index))
                }
                return .done
            case BrokerEntryType.offsetReset:
                let commit = try OffsetCommit.decode(body)
                for g in commit.groups.keys.sorted() {
                    for (q, o) in commit.groups[g]! where topics[q.topic] != nil { offsets[g, default: [:]][q] = o }
                }
                return .done
            case BrokerEntryType.transactionEnd: return try applyTransactionEnd(try TransactionEnd.decode(body), index: index)
            case BrokerEntryType.transactionCheck: return try applyTransactionCheck(try TransactionCheck.decode(body))
            case BrokerEntryType.receive: return applyReceive(try ReceiveEntry.decode(body), index: index)
            case BrokerEntryType.receipt: return applyReceipt(try ReceiptEntry.decode(body), index: index)
            case BrokerEntryType.trim: return applyTrim(try TrimEntry.decode(body))
            case BrokerEntryType.releaseCopies:
                let (items, at) = try ReleaseCopies.decode(body)
                if let at { traceClock = at }
                return try applyReleaseCopies(items, index: index)
            case BrokerEntryType.acl: return applyAcl(try AclCommand.decode(body))
            case BrokerEntryType.offsets:
                let commit = try OffsetCommit.decode(body)
                if let at = commit.at { traceClock = at }
                for g in commit.groups.keys.sorted() {
                    for (q, o) in commit.groups[g]!.sorted(by: { $0.key < $1.key }) where topics[q.topic] != nil {
                        let before = offsets[g]?[q] ?? 0
                        offsets[g, default: [:]][q] = max(before, o)
                        if o > before, traces.active {
                            for t in tracedIDs(in: q, before..<o) {
                                trace(t.id, TraceEvent(kind: .consumed, at: traceClock, index: index, group: g, queue: q, offset: t.offset))
                            }
                        }
                    }
                }
                return .done
            case BrokerEntryType.raftMembership:
                // One that does not decode changes nothing, for Raft either.
                if Membership.decode(body) != nil { membership = (index, body) }
                return .done
            case BrokerEntryType.traceTopic:
                let request = try TraceTopicRequest.decode(body)
                return setTracing(request.topic, on: request.on)
            case let t where t < BrokerEntryType.firstBrokerType:
                return .none  // Raft's own entries (the no-op of each term)
            default:
                throw CorruptEntry(index: index, type: type, reason: "the entry type is unknown to this broker")
            }
        } catch let error as CorruptEntry {
            throw error
        } catch let error as StorageError {
            throw error
        } catch {
            throw CorruptEntry(index: index, type: type, reason: "\(error)")
        }
    }

    /// What an entry adds to `appliedBytes`: its body, but for Raft's no-op (whose body names its
    /// leader), so that a restart's election does not move the points where snapshots are taken.
    public static func countedBytes(type: UInt8, _ count: Int) -> UInt64 { type == RaftEntryType.noop ? 0 : UInt64(count) }

    /// Accounts change in log order on every replica; a put without a secret keeps the stored one.
    func applyAcl(_ command: AclCommand) -> ApplyOutcome {
        switch command {
        case .put(var account):
            if let problem = account.validate() { return .failed(ErrorBody(code: ErrorCode.badRequest, message: problem)) }
            if account.secret.isEmpty {
                guard let stored = accounts[account.accessKey] else {
                    return .failed(ErrorBody(code: ErrorCode.badRequest, message: "account \(account.accessKey) does not exist: a new account needs a secret"))
                }
                account.secret = stored.secret
            }
            accounts[account.accessKey] = account
            return .done
        case .delete(let key):
            guard accounts.removeValue(forKey: key) != nil else {
                return .failed(ErrorBody(code: ErrorCode.badRequest, message: "account \(key) does not exist"))
            }
            return .done
        }
    }

    func applyAdmin(_ command: AdminCommand, index: UInt64) throws(StorageError) -> ApplyOutcome {
        switch command {
        case .createTopic(let name, let n, let type):
            if let existing = topics[name] {
                let existingType = topicTypes[name] ?? .mixed
                guard existingType == type else {
                    return .failed(ErrorBody(code: ErrorCode.topicExists, message: "topic \(name) exists as a \(existingType) topic"))
                }
                return existing == n ? .done : .failed(ErrorBody(code: ErrorCode.topicExists, message: "topic \(name) exists with \(existing) queues"))
            }
            topics[name] = n
            if type != .mixed { topicTypes[name] = type }
            for q in 0..<n { createQueue(QueueRef(topic: name, queueID: q), created: index) }
            return .done
        case .updateTopic(let name, let n):
            guard let existing = topics[name] else {
                return .failed(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(name) does not exist"))
            }
            guard n >= existing else {
                return .failed(
                    ErrorBody(code: ErrorCode.badRequest, message: "topic \(name) has \(existing) queues; a topic's queues can be added, not removed"))
            }
            for q in existing..<n { createQueue(QueueRef(topic: name, queueID: q), created: index) }
            topics[name] = n
            return .done
        case .createGroup(let name, let fifo):
            if let existing = groupSettings[name] {
                return existing == fifo
                    ? .done : .failed(ErrorBody(code: ErrorCode.topicExists, message: "group \(name) exists as a \(existing ? "fifo" : "non-fifo") group"))
            }
            groupSettings[name] = fifo
            return .done
        case .deleteTopic(let name):
            guard let n = topics.removeValue(forKey: name) else {
                return .failed(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(name) does not exist"))
            }
            topicTypes[name] = nil
            forgetTraces(ofTopic: name)
            sendBacks[name] = nil  // a topic created again under the name starts a new window
            for q in 0..<n { try removeQueue(QueueRef(topic: name, queueID: q)) }
            for g in receiveGroups.keys.sorted() {
                receiveGroups[g] = receiveGroups[g]!.filter { $0.key.topic != name }
                if receiveGroups[g]!.isEmpty { receiveGroups[g] = nil }
            }
            for g in offsets.keys.sorted() {
                offsets[g] = offsets[g]!.filter { $0.key.topic != name }
                if offsets[g]!.isEmpty { offsets[g] = nil }
            }
            return .done
        }
    }

    func applyMessages(index: UInt64, body: [UInt8]) throws -> ApplyOutcome {
        var r = WireReader(body)
        let storeTimestamp = try r.u64("store timestamp")
        lastStoreTimestamp = max(lastStoreTimestamp, storeTimestamp)
        let header = try SendHeader(from: &r)
        let ref = QueueRef(topic: header.topic, queueID: header.queueID)
        guard queues[ref] != nil else {
            return .failed(
                topics[header.topic] == nil
                    ? ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(header.topic) does not exist")
                    : ErrorBody(code: ErrorCode.queueNotFound, message: "topic \(header.topic) has no queue \(header.queueID)"))
        }
        // Keyed sends are stored once per (topic, key) among the topic's last 100,000 keyed sends,
        // whichever producer, queue or node they come through: a give-back by its retry key
        // (origin and reconsume count), any other single message by the id its client gave it
        // (RocketMQ's UNIQ_KEY: a RocketMQ 5 client retries a send with the same id).
        let giveBack = header.topic.hasPrefix("%RETRY%") || header.topic.hasPrefix("%DLQ%")
        let key = header.count == 1 ? WireMessage.property(named: giveBack ? RetryProperty.retryKey : DedupeProperty.clientMessageID, at: r) : nil
        guard let key else { return try appendDeduplicated(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp) }
        let planted = config.plantedBugs.contains(giveBack ? .sendBackTwice : .dedupeOff)
        if var earlier = sendBacks[header.topic]?.keys[key], !planted {
            earlier.duplicate = true
            return .sent(earlier)
        }
        let result =
            giveBack
            ? try appendMessages(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp)
            : try appendDeduplicated(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp)
        if case .sent(let response) = result, !response.duplicate {
            // Out of the table while it changes, so the change does not copy it.
            var book = sendBacks.removeValue(forKey: header.topic) ?? ([:], [], 0)
            book.keys[key] = response
            book.order.append(key)
            if book.order.count - book.head > 100_000 {
                book.keys[book.order[book.head]] = nil
                book.head += 1
                if book.head > 50_000 {
                    book.order.removeFirst(book.head)
                    book.head = 0
                }
            }
            sendBacks[header.topic] = book
        }
        return result
    }

    /// A send stored once per (producer, queue, sequence) when its producer numbers its sends.
    private func appendDeduplicated(
        index: UInt64, reader r: inout WireReader, header: SendHeader, ref: QueueRef, storeTimestamp: UInt64
    ) throws(StorageError) -> ApplyOutcome {
        if header.producerID != 0 && !config.plantedBugs.contains(.dedupeOff) {
            if let window = producers[header.producerID]?[ref] {
                if var earlier = window.results[header.sequence] {
                    earlier.duplicate = true
                    return .sent(earlier)
                }
                if header.sequence <= window.forgottenMax {
                    return .failed(
                        ErrorBody(
                            code: ErrorCode.sequenceTooOld,
                            message: "sequence \(header.sequence) of producer \(header.producerID) is older than the dedupe window"))
                }
            }
            let result = try appendMessages(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp)
            guard case .sent(let response) = result else { return result }
            // Out of the table while it changes, so the change does not copy the window.
            var window = producers[header.producerID]?.removeValue(forKey: ref) ?? DedupeWindow()
            window.results[header.sequence] = response
            window.order.append(header.sequence)
            window.lastUsed = index
            if window.order.count - window.head > config.dedupeWindow {
                let old = window.order[window.head]
                window.head += 1
                window.results[old] = nil
                window.forgottenMax = max(window.forgottenMax, old)
                if window.head > 4096 {
                    window.order.removeFirst(window.head)
                    window.head = 0
                }
            }
            producers[header.producerID, default: [:]][ref] = window
            if producers.count > config.maxProducers { forgetLeastRecentProducer() }
            return result
        }
        return try appendMessages(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp)
    }

    private func appendMessages(
        index: UInt64, reader r: inout WireReader, header: SendHeader, ref: QueueRef, storeTimestamp: UInt64
    ) throws(StorageError) -> ApplyOutcome {
        guard header.count > 0, header.count <= UInt32(min(config.maxBatchMessages, Int(UInt16.max))) else {
            return .failed(ErrorBody(code: ErrorCode.badRequest, message: "a send carries 1 to \(config.maxBatchMessages) messages, not \(header.count)"))
        }
        // Validate every message before indexing any, so a bad batch stores nothing.
        var found: [(position: UInt32, hash: UInt32)] = []
        found.reserveCapacity(Int(header.count))
        var keys: [[String]] = []
        var deliverAt: UInt64?
        var half = false
        // A give-back (one message, in a retry or dead-letter topic): the message it copies, whose
        // trace, when it has one, takes the copy's steps. A traced retry topic traces a copy on
        // its own only when its original is not traced.
        let giveBack = header.count == 1 && (header.topic.hasPrefix("%RETRY%") || header.topic.hasPrefix("%DLQ%"))
        var origin: (id: MessageID, attempt: UInt32)?
        var traced = traces.topics.contains(header.topic)
        var scan = r
        for k in 0..<Int(header.count) {
            let start = UInt32(scan.position)
            guard let m = try? WireMessage.meta(from: &scan, maxBody: config.maxMessageBytes) else {
                return .failed(
                    ErrorBody(code: ErrorCode.badRequest, message: "a message in the send is malformed or its body exceeds \(config.maxMessageBytes) bytes"))
            }
            found.append((start, tagHash(m.tag)))
            // A client's message id (UNIQ_KEY) is indexed as a key too: looked up like one.
            if let id = m.properties[DedupeProperty.clientMessageID], !id.isEmpty, !m.keys.contains(id) {
                keys.append(m.keys + [id])
            } else {
                keys.append(m.keys)
            }
            if m.properties[TransactionProperty.half] == "true" { half = true }
            if giveBack, traces.active, let text = m.properties[RetryProperty.originMessageID], let id = MessageID(text) {
                origin = (id, UInt32(m.properties[RetryProperty.reconsumeTimes] ?? "") ?? 0)
            }
            switch Delay.deliverAt(m.properties, storeTimestamp: storeTimestamp, maxDelayMillis: config.maxDelayMillis) {
            case .failure(let e): return .failed(e)
            case .success(let at):
                if k == 0 {
                    deliverAt = at
                } else if at != deliverAt {
                    return .failed(ErrorBody(code: ErrorCode.badRequest, message: "the messages of one send must share their delay"))
                }
            }
        }
        guard scan.atEnd else { return .failed(ErrorBody(code: ErrorCode.badRequest, message: "\(scan.remaining) bytes after the last message")) }
        if let o = origin, traces.origin(o.id) != nil { traced = false } else { origin = nil }
        if half {
            if let e = Broker.validateHalf(header, delayed: deliverAt != nil) { return .failed(e) }
        }
        for (k, list) in keys.enumerated() {
            for key in list where !key.isEmpty {
                try indexKey(key, topic: header.topic, id: MessageID(entryIndex: index, slot: UInt16(k)), index: index)
            }
        }
        if half {
            // Half message: stored, invisible, checked from `transactionCheckFirstMillis` on.
            let id = MessageID(entryIndex: index, slot: 0)
            halfMessages[id] = (header.producerGroup, 0, storeTimestamp)
            checkTimers.schedule(
                PendingTimer(
                    deliverAt: storeTimestamp + config.transactionCheckFirstMillis, id: id, queue: ref, position: found[0].position, tagHash: found[0].hash))
            if config.plantedBugs.contains(.deliverHalf) { try indexLate(checkTimers.pending[id]!) }
            if traced {
                startTrace(id, topic: header.topic)
                trace(id, TraceEvent(kind: .halfStored, at: storeTimestamp, index: index, group: header.producerGroup, queue: ref))
            }
            return .sent(SendResponse(queueID: header.queueID, entryIndex: index, firstQueueOffset: SendResponse.scheduled, count: 1, duplicate: false))
        }
        if let at = deliverAt {
            // Scheduled: into the timer, not the queue; a release entry indexes it when due.
            for (slot, f) in found.enumerated() {
                let id = MessageID(entryIndex: index, slot: UInt16(slot))
                try scheduleDelayed(PendingTimer(deliverAt: at, id: id, queue: ref, position: f.position, tagHash: f.hash), index: index)
                if traced {
                    startTrace(id, topic: header.topic)
                    trace(id, TraceEvent(kind: .delayed, at: storeTimestamp, index: index, queue: ref, detail: at))
                }
                if let origin { traceGiveBack(id, origin: origin, topic: header.topic, at: storeTimestamp, index: index) }
            }
            return .sent(
                SendResponse(queueID: header.queueID, entryIndex: index, firstQueueOffset: SendResponse.scheduled, count: header.count, duplicate: false))
        }
        let first = queue(ref)!.maxOffset
        var order = Array(found.enumerated())
        if config.plantedBugs.contains(.reverseBatch) { order.reverse() }
        for (slot, f) in order { try appendRow(ref, QueueRow(entryIndex: index, position: f.position, slot: UInt16(slot), tagHash: f.hash)) }
        if traced || origin != nil {
            for slot in 0..<found.count {
                let id = MessageID(entryIndex: index, slot: UInt16(slot))
                if traced {
                    startTrace(id, topic: header.topic)
                    trace(id, TraceEvent(kind: .stored, at: storeTimestamp, index: index, queue: ref, offset: first + UInt64(slot)))
                }
                if let origin { traceGiveBack(id, origin: origin, topic: header.topic, at: storeTimestamp, index: index) }
                traceRow(id, queue: ref, offset: first + UInt64(slot))
            }
        }
        return .sent(SendResponse(queueID: header.queueID, entryIndex: index, firstQueueOffset: first, count: header.count, duplicate: false))
    }

    /// Indexes released messages in their queues. A message no longer pending (released before,
    /// recalled, or its topic deleted) is skipped: a release never delivers twice.
    func applyRelease(_ ids: [MessageID], index: UInt64) throws(StorageError) -> ApplyOutcome {
        for id in ids {
            try loadDelayBucket(holding: id)
            let pending = config.plantedBugs.contains(.releaseTwice) ? (timers.pending[id] ?? timers.released[id]) : timers.pending[id]
            guard let t = pending else { continue }
            timers.release(id)
            try indexLate(t, index: index)
        }
        return .done
    }

    /// Indexes a message stored earlier at the end of its queue now (a released delayed message,
    /// a committed half message). Nothing when its topic is gone.
    /// `index` is the entry that does it; `step` what the message's trace calls it.
    func indexLate(
        _ t: PendingTimer, copy: (index: UInt64, position: UInt32)? = nil, index: UInt64 = 0, step: TraceEvent.Kind = .released
    ) throws(StorageError) {
        guard queues[t.queue] != nil else { return }
        let row = QueueRow(
            entryIndex: t.id.entryIndex, storedIndex: copy?.index ?? t.storedIndex, position: copy?.position ?? t.position, slot: t.id.slot,
            tagHash: t.tagHash)
        let offset = queue(t.queue)!.maxOffset
        try appendRow(t.queue, row)
        if traces.origin(t.id) != nil {
            traceRow(t.id, queue: t.queue, offset: offset)
            trace(t.id, TraceEvent(kind: step, at: traceClock, index: index, queue: t.queue, offset: offset))
        }
        try indexLatePlace(t.id, queue: t.queue, storedIndex: row.storedIndex)
    }

    private func forgetLeastRecentProducer() {
        var oldest: (id: UInt64, used: UInt64)?
        for (id, windows) in producers {
            let used = windows.values.map(\.lastUsed).max() ?? 0
            if oldest == nil || (used, id) < (oldest!.used, oldest!.id) { oldest = (id, used) }
        }
        if let o = oldest { producers[o.id] = nil }
    }
}
