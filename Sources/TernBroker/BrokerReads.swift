// Reads of what a replica applied, served by any replica: queue bounds, topics, committed
// offsets, pulls (with tag and SQL filters), messages by id or key, and the offset of a time.
import TernProtocol
import TernStorage

extension Broker {
    public func maxOffset(_ q: QueueRef) -> UInt64? { queue(q)?.maxOffset }

    /// The queue's first kept offset and one past its last.
    public func bounds(_ q: QueueRef) -> (min: UInt64, max: UInt64)? { queue(q).map { ($0.baseOffset, $0.maxOffset) } }

    public func topicInfo(_ name: String) -> TopicInfo? {
        guard let n = topics[name] else { return nil }
        return TopicInfo(
            name: name,
            queues: (0..<n).map { id in
                let q = queue(QueueRef(topic: name, queueID: id))!
                return TopicInfo.Queue(queueID: id, minOffset: q.baseOffset, maxOffset: q.maxOffset)
            }, type: topicTypes[name] ?? .mixed, traced: traces.topics.contains(name))
    }

    public func topicList() -> [TopicInfo] { topics.keys.sorted().compactMap(topicInfo) }

    public func committedOffset(group: String, queue: QueueRef) -> UInt64? { offsets[group]?[queue] }

    /// The `offsetsInMemoryOnly` planted bug: set offsets outside the log. SPI, simulator only.
    public func plantedSetOffsets(group: String, _ map: [QueueRef: UInt64]) {
        for (q, o) in map { offsets[group, default: [:]][q] = o }
    }

    /// Messages of a queue from `offset`, at most `maxMessages` and about `maxBytes` of bodies
    /// (at least one message when any matches). An offset below the queue's first is moved up
    /// to it; one past the end returns nothing.
    public func pull(_ request: PullRequest) throws(StorageError) -> Result<PullResponse, ErrorBody> {
        let ref = QueueRef(topic: request.topic, queueID: request.queueID)
        guard let q = queue(ref) else {
            return .failure(
                topics[request.topic] == nil
                    ? ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(request.topic) does not exist")
                    : ErrorBody(code: ErrorCode.queueNotFound, message: "topic \(request.topic) has no queue \(request.queueID)"))
        }
        let filter = TagFilter(request.tagFilter)
        var sql: SQLFilter?
        if !request.sqlFilter.isEmpty {
            switch sqlFilter(request.sqlFilter) {
            case .success(let f): sql = f
            case .failure(let e): return .failure(e)
            }
        }
        var offset = max(request.offset, q.baseOffset)
        var out: [ReceivedMessage] = []
        var bytes = 0
        var scanned = 0
        var cursor = RowCursor(queueFiles, q.key)
        while offset < q.maxOffset, out.count < Int(request.maxMessages), scanned < config.maxScanPerPull {
            let (row, nextRow) = try cursor.row(at: offset)
            scanned += 1
            if filter.matches(hash: row.tagHash) {
                let wrong = config.plantedBugs.contains(.readWrongSlot) && nextRow?.entryIndex == row.entryIndex
                guard let m = try readRetained(wrong ? QueueRow(entryIndex: row.entryIndex, position: nextRow!.position, slot: 0, tagHash: 0) : row) else {
                    offset += 1  // its entry was deleted by retention: gone
                    continue
                }
                if filter.matches(tag: m.1.tag) && (sql?.matches(properties: m.1.properties, tag: m.1.tag) ?? true) {
                    if !out.isEmpty && bytes + m.1.body.count > Int(request.maxBytes) { break }
                    bytes += m.1.body.count
                    out.append(
                        ReceivedMessage(
                            id: MessageID(entryIndex: row.entryIndex, slot: row.slot), topic: request.topic, queueID: request.queueID, queueOffset: offset,
                            storeTimestamp: m.0.timestamp, producerGroup: m.0.group, message: m.1))
                }
            }
            offset += 1
        }
        return .success(PullResponse(nextOffset: offset, minOffset: q.baseOffset, maxOffset: q.maxOffset, messages: out))
    }

    /// The message with this id, when it is applied here and still indexed in its queue.
    ///
    /// Rows' stored indexes never fall along a queue (a row is appended while its stored entry
    /// applies: the send, or the release or commit that carries a copy), so a message is found by
    /// binary search for its stored entry: its own, read from the entry; or, for a message
    /// delivered later than stored, the copy's, from the late-place index (KeyIndex.swift).
    public func message(_ id: MessageID) throws(StorageError) -> ReceivedMessage? {
        guard id.entryIndex <= appliedIndex else { return nil }
        var stored: [UInt8]?
        do {
            stored = try source.entryBody(at: id.entryIndex)
        } catch  where error.code == .invalidArgument {
            stored = nil  // deleted by retention: a late message may live on in a copy
        }
        if let body = stored {
            var r = WireReader(body)
            if (try? r.u64()) != nil, let header = try? SendHeader(from: &r), id.slot < header.count,
                let m = try message(id, in: QueueRef(topic: header.topic, queueID: header.queueID), storedIndex: id.entryIndex)
            {
                return m
            }
        }
        // A late message: in the live topic whose name hashes as recorded (the search confirms).
        guard let late = try latePlace(id) else { return nil }
        for topic in topics.keys.sorted() where Broker.topicHash(topic) == late.topicHash {
            if let m = try message(id, in: QueueRef(topic: topic, queueID: late.queueID), storedIndex: late.storedIndex) { return m }
        }
        return nil
    }

    /// The message `id` in queue `ref`, whose row names `storedIndex`.
    func message(_ id: MessageID, in ref: QueueRef, storedIndex: UInt64) throws(StorageError) -> ReceivedMessage? {
        guard let q = queue(ref) else { return nil }
        var lo = q.baseOffset, hi = q.maxOffset
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if try row(ref, at: mid)!.storedIndex < storedIndex { lo = mid + 1 } else { hi = mid }
        }
        var cursor = RowCursor(queueFiles, q.key)
        var offset = lo
        while offset < q.maxOffset {
            let r = try cursor.row(at: offset).0
            guard r.storedIndex == storedIndex else { return nil }
            if r.entryIndex == id.entryIndex && r.slot == id.slot {
                guard let m = try readRetained(r) else { return nil }
                return ReceivedMessage(
                    id: id, topic: ref.topic, queueID: ref.queueID, queueOffset: offset, storeTimestamp: m.0.timestamp, producerGroup: m.0.group,
                    message: m.1)
            }
            offset += 1
        }
        return nil
    }

    /// The first offset of `queue` whose message was stored at or after `timestamp` (the queue's
    /// end when none was). Binary search over store timestamps, which ascend along a queue
    /// because the leader's clock as applied is made monotonic.
    public func offset(_ queue: QueueRef, atOrAfter timestamp: UInt64) throws(StorageError) -> UInt64? {
        guard let q = self.queue(queue) else { return nil }
        var lo = q.baseOffset, hi = q.maxOffset
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            let body: [UInt8]
            do { body = try source.entryBody(at: try row(queue, at: mid)!.entryIndex) } catch  where error.code == .invalidArgument { body = [] }
            let stamp = body.count >= 8 ? body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } : 0
            if stamp < timestamp { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The message a row names, or nil when retention deleted the entry holding it.
    func readRetained(_ row: QueueRow) throws(StorageError) -> ((timestamp: UInt64, group: String), WireMessage)? {
        do {
            return try readMessage(entryIndex: row.storedIndex, position: row.position, carried: row.carried)
        } catch  where error.code == .invalidArgument {
            return nil
        }
    }

    /// The message at `position` of entry `entryIndex`: in a send (the entry starts with the
    /// store time and the send's header), or `carried`: a copy item (`Broker.carryItem`).
    func readMessage(
        entryIndex: UInt64, position: UInt32, carried: Bool = false
    ) throws(StorageError) -> (
        (timestamp: UInt64, group: String), WireMessage
    ) {
        let body: [UInt8]
        if let c = cachedEntry, c.index == entryIndex {
            body = c.body
        } else {
            body = try source.entryBody(at: entryIndex)
            cachedEntry = (entryIndex, body)
        }
        do {
            if carried {
                var c = WireReader(body, at: Int(position))
                let ts = try c.u64("store timestamp")
                let group = try c.string("producer group")
                return ((ts, group), try WireMessage(from: &c))
            }
            var r = WireReader(body)
            let ts = try r.u64("store timestamp")
            let header = try SendHeader(from: &r)
            var m = WireReader(body, at: Int(position))
            return ((ts, header.producerGroup), try WireMessage(from: &m))
        } catch {
            throw StorageError(.corruption, "entry \(entryIndex) does not hold the message its consume queue points at: \(error.description)")
        }
    }
}

extension Broker {
    /// Every group with committed offsets, receive/ack state or settings, sorted.
    public func groupNames() -> [String] {
        Set(offsets.keys).union(receiveGroups.keys).union(groupSettings.keys).sorted()
    }

    /// A group's progress on every queue of the topics it committed an offset in, received from
    /// or (`alsoTopics`) its members subscribe to, in queue order, with when the last message it
    /// consumed there was stored. A queue it never consumed lags by all it holds.
    /// Without `storeTimes`, nothing is read from the log (`lastConsumedStored` stays 0).
    public func progress(group: String, alsoTopics: Set<String> = [], storeTimes: Bool = true) throws(StorageError) -> [GroupProgress.Queue] {
        let committed = offsets[group] ?? [:]
        let received = receiveGroups[group] ?? [:]
        let topicNames = Set(committed.keys.map(\.topic)).union(received.keys.map(\.topic)).union(alsoTopics)
        var refs: [QueueRef] = []
        for t in topicNames.sorted() { refs += (0..<(topics[t] ?? 0)).map { QueueRef(topic: t, queueID: $0) } }
        var out: [GroupProgress.Queue] = []
        for ref in refs {
            guard let q = queue(ref) else { continue }
            var row = GroupProgress.Queue(queue: ref, committed: committed[ref], minOffset: q.baseOffset, maxOffset: q.maxOffset)
            if let r = received[ref] {
                row.receiveNext = r.next
                row.invisible = UInt32(min(r.invisible.count, Int(UInt32.max)))
            }
            // The last consumed: the message just below the committed (or handed-out) offset.
            let consumedTo = row.committed ?? row.receiveNext ?? 0
            if storeTimes, consumedTo > q.baseOffset, consumedTo <= q.maxOffset, let m = try message(at: consumedTo - 1, in: ref) {
                row.lastConsumedStored = m.storeTimestamp
            }
            out.append(row)
        }
        return out
    }
}
