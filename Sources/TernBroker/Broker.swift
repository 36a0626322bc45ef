// The broker state machine. It changes only by `apply`, in log order, so every replica that
// applied the same prefix has the same topics, consume queues, offsets and dedupe windows. It
// reads message bodies back from the log through `EntrySource` (a consume queue holds where a
// message is, not the message). No clock, no I/O of its own, no iteration over unordered
// collections where order could leak into state or output.
import TernProtocol
import TernStorage

/// Where the broker reads stored entries from (the commitlog on a node).
public protocol EntrySource: AnyObject {
    /// The body of entry `index`, verified.
    func entryBody(at index: UInt64) throws(StorageError) -> [UInt8]
}

public struct BrokerConfig: Sendable, Equatable {
    /// A send to a missing topic creates it (the leader proposes the creation first).
    public var autoCreateTopics = false
    public var defaultQueues: UInt32 = 4
    public var maxQueues: UInt32 = 1024
    /// Largest message body accepted.
    public var maxMessageBytes = 4 << 20
    /// Most messages in one send.
    public var maxBatchMessages = 1024
    /// Longest delay a scheduled message may have (milliseconds; 3 days).
    public var maxDelayMillis: UInt64 = 3 * 24 * 3600 * 1000
    /// Sends remembered per (producer, queue) for deduplication.
    public var dedupeWindow = 1024
    /// Producers remembered; the one that sent least recently is forgotten first.
    public var maxProducers = 10_000
    /// Messages a pull scans past its filter before it answers with none.
    public var maxScanPerPull = 10_000
    /// An undecided half message is first checked this long after it was stored, then every
    /// `transactionCheckIntervalMillis`; after `transactionMaxChecks` checks it is rolled back.
    public var transactionCheckFirstMillis: UInt64 = 6_000
    public var transactionCheckIntervalMillis: UInt64 = 30_000
    public var transactionMaxChecks: UInt32 = 15
    /// Transaction outcomes remembered (for repeated or late decisions), at most.
    public var decidedTransactions = 100_000
    /// Invisible (received, unacknowledged) messages per group and queue, at most; a receive
    /// hands out no more new messages of a queue at the limit.
    public var maxInvisiblePerQueue = 10_000
    /// Deliberate bugs for the simulator's checkers. SPI: never set in production.
    public var plantedBugs: BrokerPlantedBugs = []
    public init() {}
}

public struct BrokerPlantedBugs: OptionSet, Sendable, Equatable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let dedupeOff = BrokerPlantedBugs(rawValue: 1 << 0)
    public static let reverseBatch = BrokerPlantedBugs(rawValue: 1 << 1)
    public static let readWrongSlot = BrokerPlantedBugs(rawValue: 1 << 2)
    /// Release a delayed message again even when it was released before.
    public static let releaseTwice = BrokerPlantedBugs(rawValue: 1 << 3)
    /// A repeated give-back stores another retry copy.
    public static let sendBackTwice = BrokerPlantedBugs(rawValue: 1 << 4)
    /// Half messages go into their queue at once (and again when committed).
    public static let deliverHalf = BrokerPlantedBugs(rawValue: 1 << 5)
    /// A received message counts as visible again two seconds before its invisible time ends.
    public static let redeliverEarly = BrokerPlantedBugs(rawValue: 1 << 6)
}

/// What applying one entry produced, for the node to answer the request that proposed it.
public enum ApplyOutcome: Equatable, Sendable {
    case none
    case sent(SendResponse)
    case done
    case failed(ErrorBody)
    /// A transaction check applied: the half messages to ask their producers about now.
    case checks([MessageID])
    /// A receive applied: what it handed out (fewer than proposed when some were taken meanwhile).
    case received([ReceivedGrant])
    /// An invisible time changed.
    case invisibleUntil(UInt64)
}

public struct ReceivedGrant: Equatable, Sendable {
    public var handle: ReceiptHandle
    public var until: UInt64
    public var attempt: UInt32
}

struct ConsumeQueue {
    /// Offset of the first element kept (retention moves it).
    var baseOffset: UInt64 = 0
    var entryIndexes: [UInt64] = []
    var positions: [UInt32] = []
    var slots: [UInt16] = []
    var tagHashes: [UInt32] = []
    var maxOffset: UInt64 { baseOffset + UInt64(entryIndexes.count) }

    mutating func append(entryIndex: UInt64, position: UInt32, slot: UInt16, tagHash: UInt32) {
        entryIndexes.append(entryIndex)
        positions.append(position)
        slots.append(slot)
        tagHashes.append(tagHash)
    }
}

struct DedupeWindow {
    var results: [UInt64: SendResponse] = [:]
    var order: [UInt64] = []
    var head = 0
    /// Highest sequence forgotten; a send at or below it that is not remembered is refused.
    var forgottenMax: UInt64 = 0
    var lastUsed: UInt64 = 0
}

public final class Broker {
    public let config: BrokerConfig
    let source: any EntrySource
    /// Topic name -> queue count.
    public private(set) var topics: [String: UInt32] = [:]
    var queues: [QueueRef: ConsumeQueue] = [:]
    /// Group -> queue -> next offset to consume.
    public private(set) var offsets: [String: [QueueRef: UInt64]] = [:]
    var producers: [UInt64: [QueueRef: DedupeWindow]] = [:]
    /// Give-backs applied, per retry or dead-letter topic: retry key -> stored (bounded FIFO of
    /// 100,000 per topic).
    var sendBacks: [String: (keys: [String: SendResponse], order: [String], head: Int)] = [:]
    /// Queue offsets of released delayed messages and committed half messages (out of entry
    /// order in their queue, so the binary search by id does not find them).
    var lateOffsets: [MessageID: UInt64] = [:]
    /// Delayed and scheduled messages not yet released.
    public private(set) var timers = TimerIndex()
    /// Undecided half messages: id -> producer group and checks so far.
    public internal(set) var halfMessages: [MessageID: (group: String, checks: UInt32)] = [:]
    /// Undecided half messages by when they are next checked.
    public internal(set) var checkTimers = TimerIndex()
    /// Decided transactions (bounded FIFO, `decidedTransactions`).
    var decided: [MessageID: TransactionDecision] = [:]
    var decidedOrder: [MessageID] = []
    var decidedHead = 0
    /// Receive/ack groups: group -> queue -> next fresh offset and the invisible deliveries.
    var receiveGroups: [String: [QueueRef: ReceiveQueue]] = [:]
    /// (topic, key) -> ids of the most recent messages with that key (at most `keyIndexDepth`).
    var keyIndex: [String: [String: [MessageID]]] = [:]
    static let keyIndexDepth = 64
    public private(set) var appliedIndex: UInt64 = 0
    /// Highest store timestamp applied: the broker's notion of "now" for the log.
    public private(set) var lastStoreTimestamp: UInt64 = 0
    private var cachedEntry: (index: UInt64, body: [UInt8])?
    /// Parsed SQL filters by expression (bounded: cleared when it grows past 1,024).
    private var sqlCache: [String: SQLFilter] = [:]

    /// The parsed filter, or the syntax error as an error body.
    public func sqlFilter(_ expression: String) -> Result<SQLFilter, ErrorBody> {
        if let f = sqlCache[expression] { return .success(f) }
        do {
            let f = try SQLFilter(expression)
            if sqlCache.count >= 1024 { sqlCache = [:] }
            sqlCache[expression] = f
            return .success(f)
        } catch {
            return .failure(ErrorBody(code: ErrorCode.filterSyntax, message: error.description))
        }
    }

    public init(config: BrokerConfig, source: any EntrySource) {
        self.config = config
        self.source = source
        timers.keepReleased = config.plantedBugs.contains(.releaseTwice)
    }

    // MARK: Applying entries

    /// Applies committed entry `index`. Throws `CorruptEntry` when the entry's envelope (what the
    /// leader encoded: the store timestamp and send header, an admin command, an offset commit,
    /// ...) does not decode or its type is unknown: a committed entry is never skipped, and the
    /// node fails stop. Client content inside a send that fails validation is not corruption:
    /// every replica refuses it the same way (`.failed`).
    public func apply(index: UInt64, type: UInt8, body: [UInt8]) throws(CorruptEntry) -> ApplyOutcome {
        precondition(index > appliedIndex, "entry \(index) applied after \(appliedIndex)")
        appliedIndex = index
        do {
            switch type {
            case BrokerEntryType.admin: return applyAdmin(try AdminCommand.decode(body))
            case BrokerEntryType.messages: return try applyMessages(index: index, body: body)
            case BrokerEntryType.release:
                return applyRelease(try MessageIDList.decode(body).ids)
            case BrokerEntryType.recall:
                let ids = try MessageIDList.decode(body).ids
                for id in ids where timers.pending[id] == nil {
                    return .failed(ErrorBody(code: ErrorCode.messageNotFound, message: "\(id) is not a pending delayed message (delivered already, recalled, or never delayed)"))
                }
                for id in ids { timers.recall(id) }
                return .done
            case BrokerEntryType.offsetReset:
                let commit = try OffsetCommit.decode(body)
                for g in commit.groups.keys.sorted() {
                    for (q, o) in commit.groups[g]! where topics[q.topic] != nil { offsets[g, default: [:]][q] = o }
                }
                return .done
            case BrokerEntryType.transactionEnd: return applyTransactionEnd(try TransactionEnd.decode(body))
            case BrokerEntryType.transactionCheck: return applyTransactionCheck(try TransactionCheck.decode(body))
            case BrokerEntryType.receive: return applyReceive(try ReceiveEntry.decode(body), index: index)
            case BrokerEntryType.receipt: return applyReceipt(try ReceiptEntry.decode(body))
            case BrokerEntryType.offsets:
                let commit = try OffsetCommit.decode(body)
                for g in commit.groups.keys.sorted() {
                    for (q, o) in commit.groups[g]! where topics[q.topic] != nil {
                        offsets[g, default: [:]][q] = max(offsets[g]?[q] ?? 0, o)
                    }
                }
                return .done
            case let t where t < BrokerEntryType.firstBrokerType:
                return .none  // Raft's own entries (the no-op of each term)
            default:
                throw CorruptEntry(index: index, type: type, reason: "the entry type is unknown to this broker")
            }
        } catch let error as CorruptEntry {
            throw error
        } catch {
            throw CorruptEntry(index: index, type: type, reason: "\(error)")
        }
    }

    func applyAdmin(_ command: AdminCommand) -> ApplyOutcome {
        switch command {
        case .createTopic(let name, let n):
            if let existing = topics[name] {
                return existing == n ? .done : .failed(ErrorBody(code: ErrorCode.topicExists, message: "topic \(name) exists with \(existing) queues"))
            }
            topics[name] = n
            for q in 0..<n { queues[QueueRef(topic: name, queueID: q)] = ConsumeQueue() }
            return .done
        case .updateTopic(let name, let n):
            guard let existing = topics[name] else {
                return .failed(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(name) does not exist"))
            }
            guard n >= existing else {
                return .failed(ErrorBody(code: ErrorCode.badRequest, message: "topic \(name) has \(existing) queues; a topic's queues can be added, not removed"))
            }
            for q in existing..<n { queues[QueueRef(topic: name, queueID: q)] = ConsumeQueue() }
            topics[name] = n
            return .done
        case .deleteTopic(let name):
            guard let n = topics.removeValue(forKey: name) else {
                return .failed(ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(name) does not exist"))
            }
            for q in 0..<n { queues[QueueRef(topic: name, queueID: q)] = nil }
            keyIndex[name] = nil
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

    func applyMessages(index: UInt64, body: [UInt8]) throws(WireError) -> ApplyOutcome {
        var r = WireReader(body)
        let storeTimestamp = try r.u64("store timestamp")
        lastStoreTimestamp = max(lastStoreTimestamp, storeTimestamp)
        let header = try SendHeader(from: &r)
        let ref = QueueRef(topic: header.topic, queueID: header.queueID)
        guard queues[ref] != nil else {
            return .failed(topics[header.topic] == nil
                ? ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(header.topic) does not exist")
                : ErrorBody(code: ErrorCode.queueNotFound, message: "topic \(header.topic) has no queue \(header.queueID)"))
        }
        if header.topic.hasPrefix("%RETRY%") || header.topic.hasPrefix("%DLQ%"), header.count == 1 {
            // A give-back: stored once per (origin, reconsume times).
            var peek = r
            if let m = try? WireMessage.meta(from: &peek), let key = m.properties[RetryProperty.retryKey] {
                if var earlier = sendBacks[header.topic]?.keys[key], !config.plantedBugs.contains(.sendBackTwice) {
                    earlier.duplicate = true
                    return .sent(earlier)
                }
                let result = appendMessages(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp)
                if case .sent(let response) = result {
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
        }
        if header.producerID != 0 && !config.plantedBugs.contains(.dedupeOff) {
            if let window = producers[header.producerID]?[ref] {
                if var earlier = window.results[header.sequence] {
                    earlier.duplicate = true
                    return .sent(earlier)
                }
                if header.sequence <= window.forgottenMax {
                    return .failed(ErrorBody(code: ErrorCode.sequenceTooOld, message: "sequence \(header.sequence) of producer \(header.producerID) is older than the dedupe window"))
                }
            }
            let result = appendMessages(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp)
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
        return appendMessages(index: index, reader: &r, header: header, ref: ref, storeTimestamp: storeTimestamp)
    }

    private func appendMessages(index: UInt64, reader r: inout WireReader, header: SendHeader, ref: QueueRef, storeTimestamp: UInt64) -> ApplyOutcome {
        guard header.count > 0, header.count <= UInt32(min(config.maxBatchMessages, Int(UInt16.max))) else {
            return .failed(ErrorBody(code: ErrorCode.badRequest, message: "a send carries 1 to \(config.maxBatchMessages) messages, not \(header.count)"))
        }
        // Validate every message before indexing any, so a bad batch stores nothing.
        var found: [(position: UInt32, hash: UInt32)] = []
        found.reserveCapacity(Int(header.count))
        var keys: [[String]] = []
        var deliverAt: UInt64?
        var half = false
        var scan = r
        for k in 0..<Int(header.count) {
            let start = UInt32(scan.position)
            guard let m = try? WireMessage.meta(from: &scan, maxBody: config.maxMessageBytes) else {
                return .failed(ErrorBody(code: ErrorCode.badRequest, message: "a message in the send is malformed or its body exceeds \(config.maxMessageBytes) bytes"))
            }
            found.append((start, tagHash(m.tag)))
            keys.append(m.keys)
            if m.properties[TransactionProperty.half] == "true" { half = true }
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
        if half {
            if let e = Broker.validateHalf(header, delayed: deliverAt != nil) { return .failed(e) }
        }
        for (k, list) in keys.enumerated() {
            for key in list where !key.isEmpty {
                var ids = keyIndex[header.topic]?[key] ?? []
                ids.append(MessageID(entryIndex: index, slot: UInt16(k)))
                if ids.count > Broker.keyIndexDepth { ids.removeFirst(ids.count - Broker.keyIndexDepth) }
                keyIndex[header.topic, default: [:]][key] = ids
            }
        }
        if half {
            // Half message: stored, invisible, checked from `transactionCheckFirstMillis` on.
            let id = MessageID(entryIndex: index, slot: 0)
            halfMessages[id] = (header.producerGroup, 0)
            checkTimers.schedule(PendingTimer(deliverAt: storeTimestamp + config.transactionCheckFirstMillis, id: id, queue: ref, position: found[0].position, tagHash: found[0].hash))
            if config.plantedBugs.contains(.deliverHalf) { indexLate(checkTimers.pending[id]!) }
            return .sent(SendResponse(queueID: header.queueID, entryIndex: index, firstQueueOffset: SendResponse.scheduled, count: 1, duplicate: false))
        }
        if let at = deliverAt {
            // Scheduled: into the timer, not the queue; a release entry indexes it when due.
            for (slot, f) in found.enumerated() {
                let id = MessageID(entryIndex: index, slot: UInt16(slot))
                timers.schedule(PendingTimer(deliverAt: at, id: id, queue: ref, position: f.position, tagHash: f.hash))
            }
            return .sent(SendResponse(queueID: header.queueID, entryIndex: index, firstQueueOffset: SendResponse.scheduled, count: header.count, duplicate: false))
        }
        let first = queues[ref]!.maxOffset
        var order = Array(found.enumerated())
        if config.plantedBugs.contains(.reverseBatch) { order.reverse() }
        // Appended in place (`queues[ref]!` is a modify access): a copy out and back would copy
        // the whole queue on every send.
        for (slot, f) in order { queues[ref]!.append(entryIndex: index, position: f.position, slot: UInt16(slot), tagHash: f.hash) }
        return .sent(SendResponse(queueID: header.queueID, entryIndex: index, firstQueueOffset: first, count: header.count, duplicate: false))
    }

    /// Indexes released messages in their queues. A message no longer pending (released before,
    /// recalled, or its topic deleted) is skipped: a release never delivers twice.
    func applyRelease(_ ids: [MessageID]) -> ApplyOutcome {
        for id in ids {
            let pending = config.plantedBugs.contains(.releaseTwice) ? (timers.pending[id] ?? timers.released[id]) : timers.pending[id]
            guard let t = pending else { continue }
            timers.release(id)
            indexLate(t)
        }
        return .done
    }

    /// Indexes a message stored earlier at the end of its queue now (a released delayed message,
    /// a committed half message). Nothing when its topic is gone.
    func indexLate(_ t: PendingTimer) {
        guard let offset = queues[t.queue]?.maxOffset else { return }
        lateOffsets[t.id] = offset
        queues[t.queue]!.append(entryIndex: t.id.entryIndex, position: t.position, slot: t.id.slot, tagHash: t.tagHash)
    }

    private func forgetLeastRecentProducer() {
        var oldest: (id: UInt64, used: UInt64)?
        for (id, windows) in producers {
            let used = windows.values.map(\.lastUsed).max() ?? 0
            if oldest == nil || (used, id) < (oldest!.used, oldest!.id) { oldest = (id, used) }
        }
        if let o = oldest { producers[o.id] = nil }
    }

    // MARK: Checks the leader makes before proposing

    /// nil when a send may be proposed as is; else the error to answer with.
    public func validate(_ header: SendHeader) -> ErrorBody? {
        guard header.count > 0, header.count <= config.maxBatchMessages else {
            return ErrorBody(code: ErrorCode.badRequest, message: "a send carries 1 to \(config.maxBatchMessages) messages, not \(header.count)")
        }
        guard let n = topics[header.topic] else {
            return ErrorBody(code: ErrorCode.topicNotFound, message: "topic \(header.topic) does not exist")
        }
        guard header.queueID < n else {
            return ErrorBody(code: ErrorCode.queueNotFound, message: "topic \(header.topic) has \(n) queues; queue \(header.queueID) does not exist")
        }
        return nil
    }

    /// The send that gives `message` back for `group`: a copy to `%RETRY%<group>` delayed by
    /// `delayMillis`, or to `%DLQ%<group>` once it was retried `maxReconsumeTimes` times.
    public static func sendBack(_ message: ReceivedMessage, group: String, delayMillis: UInt64, maxReconsumeTimes: UInt32) -> SendRequest {
        var m = message.message
        let times = UInt32(m.properties[RetryProperty.reconsumeTimes] ?? "0") ?? 0
        let origin = m.properties[RetryProperty.originMessageID] ?? message.id.description
        if m.properties[RetryProperty.originTopic] == nil { m.properties[RetryProperty.originTopic] = message.topic }
        m.properties[RetryProperty.originMessageID] = origin
        m.properties[RetryProperty.reconsumeTimes] = String(times + 1)
        m.properties[RetryProperty.retryKey] = "\(origin)/\(times + 1)"
        m.properties["TIMER_DELAY_MS"] = nil
        m.properties["DELAY"] = nil
        m.properties["TIMER_DELIVER_MS"] = nil
        m.properties["SHARDING_KEY"] = nil
        let dead = times + 1 > maxReconsumeTimes
        if !dead { m.properties["TIMER_DELAY_MS"] = String(delayMillis) }
        return SendRequest(topic: (dead ? "%DLQ%" : "%RETRY%") + group, queueID: 0, producerGroup: message.producerGroup, messages: [m])
    }

    public static func validateTopicName(_ name: String) -> ErrorBody? {
        let ok = !name.isEmpty && name.utf8.count <= 127 && name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D || c == 0x25 || c == 0x2E
        }
        return ok ? nil : ErrorBody(code: ErrorCode.badRequest, message: "topic name \"\(name)\" must be 1 to 127 characters of A-Z a-z 0-9 _ - . %")
    }

    // MARK: Reads (any replica, from what it applied)

    public func maxOffset(_ q: QueueRef) -> UInt64? { queues[q]?.maxOffset }

    /// The queue's first kept offset and one past its last.
    public func bounds(_ q: QueueRef) -> (min: UInt64, max: UInt64)? { queues[q].map { ($0.baseOffset, $0.maxOffset) } }

    public func topicInfo(_ name: String) -> TopicInfo? {
        guard let n = topics[name] else { return nil }
        return TopicInfo(name: name, queues: (0..<n).map { id in
            let q = queues[QueueRef(topic: name, queueID: id)]!
            return TopicInfo.Queue(queueID: id, minOffset: q.baseOffset, maxOffset: q.maxOffset)
        })
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
        guard let q = queues[ref] else {
            return .failure(topics[request.topic] == nil
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
        while offset < q.maxOffset, out.count < Int(request.maxMessages), scanned < config.maxScanPerPull {
            let k = Int(offset - q.baseOffset)
            scanned += 1
            if filter.matches(hash: q.tagHashes[k]) {
                let wrong = config.plantedBugs.contains(.readWrongSlot) && k + 1 < q.positions.count && q.entryIndexes[k + 1] == q.entryIndexes[k]
                let m = try readMessage(entryIndex: q.entryIndexes[k], position: q.positions[wrong ? k + 1 : k])
                if filter.matches(tag: m.1.tag) && (sql?.matches(properties: m.1.properties, tag: m.1.tag) ?? true) {
                    if !out.isEmpty && bytes + m.1.body.count > Int(request.maxBytes) { break }
                    bytes += m.1.body.count
                    out.append(ReceivedMessage(id: MessageID(entryIndex: q.entryIndexes[k], slot: q.slots[k]), topic: request.topic, queueID: request.queueID, queueOffset: offset, storeTimestamp: m.0.timestamp, producerGroup: m.0.group, message: m.1))
                }
            }
            offset += 1
        }
        return .success(PullResponse(nextOffset: offset, minOffset: q.baseOffset, maxOffset: q.maxOffset, messages: out))
    }

    /// The message with this id, when it is applied here and still indexed in its queue.
    public func message(_ id: MessageID) throws(StorageError) -> ReceivedMessage? {
        guard id.entryIndex <= appliedIndex else { return nil }
        let body: [UInt8]
        do {
            body = try source.entryBody(at: id.entryIndex)
        } catch where error.code == .invalidArgument {
            return nil  // compacted away
        }
        var r = WireReader(body)
        guard (try? r.u64()) != nil, let header = try? SendHeader(from: &r), id.slot < header.count else { return nil }
        let ref = QueueRef(topic: header.topic, queueID: header.queueID)
        guard let q = queues[ref] else { return nil }
        // Released delayed messages are found by their recorded offset; the others ascend by id
        // along the queue (released ones interleaved): binary search, stepping over those.
        var found: Int?
        if let offset = lateOffsets[id] {
            if offset >= q.baseOffset && offset < q.maxOffset { found = Int(offset - q.baseOffset) }
        } else {
            func released(_ k: Int) -> Bool {
                lateOffsets[MessageID(entryIndex: q.entryIndexes[k], slot: q.slots[k])] == q.baseOffset + UInt64(k)
            }
            var lo = 0, hi = q.entryIndexes.count
            while lo < hi {
                let mid = (lo + hi) / 2
                var probe = mid
                while probe < hi && released(probe) { probe += 1 }
                if probe == hi {
                    hi = mid
                    continue
                }
                let key = (q.entryIndexes[probe], q.slots[probe])
                if key == (id.entryIndex, id.slot) {
                    found = probe
                    break
                }
                if key < (id.entryIndex, id.slot) { lo = probe + 1 } else { hi = mid }
            }
        }
        guard let lo = found, q.entryIndexes[lo] == id.entryIndex, q.slots[lo] == id.slot else { return nil }
        let m = try readMessage(entryIndex: id.entryIndex, position: q.positions[lo])
        return ReceivedMessage(id: id, topic: header.topic, queueID: header.queueID, queueOffset: q.baseOffset + UInt64(lo), storeTimestamp: m.0.timestamp, producerGroup: m.0.group, message: m.1)
    }

    /// The most recent messages of `topic` with `key`, oldest first.
    public func messages(topic: String, key: String, max: Int) throws(StorageError) -> [ReceivedMessage] {
        var out: [ReceivedMessage] = []
        for id in (keyIndex[topic]?[key] ?? []).suffix(max) {
            if let m = try message(id) { out.append(m) }
        }
        return out
    }

    /// The first offset of `queue` whose message was stored at or after `timestamp` (the queue's
    /// end when none was). Binary search over store timestamps, which ascend along a queue
    /// because the leader's clock as applied is made monotonic.
    public func offset(_ queue: QueueRef, atOrAfter timestamp: UInt64) throws(StorageError) -> UInt64? {
        guard let q = queues[queue] else { return nil }
        var lo = 0, hi = q.entryIndexes.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let body = try source.entryBody(at: q.entryIndexes[mid])
            let stamp = body.count >= 8 ? body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } : 0
            if stamp < timestamp { lo = mid + 1 } else { hi = mid }
        }
        return q.baseOffset + UInt64(lo)
    }

    func readMessage(entryIndex: UInt64, position: UInt32) throws(StorageError) -> ((timestamp: UInt64, group: String), WireMessage) {
        let body: [UInt8]
        if let c = cachedEntry, c.index == entryIndex {
            body = c.body
        } else {
            body = try source.entryBody(at: entryIndex)
            cachedEntry = (entryIndex, body)
        }
        do {
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
