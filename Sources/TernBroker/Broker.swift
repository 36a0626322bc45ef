// The broker state machine. It changes only by `apply`, in log order, so every replica that
// applied the same prefix has the same topics, consume queues, offsets and dedupe windows. It
// reads message bodies back from the log through `EntrySource` (a consume queue holds where a
// message is, not the message). No clock, no I/O of its own, no iteration over unordered
// collections where order could leak into state or output.
//
// This file holds the broker's types and state and the checks the leader makes before proposing;
// applying entries is in BrokerApply.swift, reads of the applied state in BrokerReads.swift.
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
    /// A check counts only when a producer of its group is polling the leader for checks; a half
    /// message whose producers stay away is rolled back once `transactionGiveUpMillis` passed.
    public var transactionCheckFirstMillis: UInt64 = 6_000
    public var transactionCheckIntervalMillis: UInt64 = 30_000
    public var transactionMaxChecks: UInt32 = 15
    /// The age at which an undecided half message is rolled back whether or not its checks could
    /// be asked: `transactionGiveUpOverrideMillis`, else twice the whole check schedule (15 min
    /// 12 s by default).
    public var transactionGiveUpMillis: UInt64 {
        transactionGiveUpOverrideMillis ?? 2 * (transactionCheckFirstMillis + UInt64(transactionMaxChecks) * transactionCheckIntervalMillis)
    }
    public var transactionGiveUpOverrideMillis: UInt64?
    /// Transaction outcomes remembered (for repeated or late decisions), at most.
    public var decidedTransactions = 100_000
    /// Invisible (received, unacknowledged) messages per group and queue, at most; a receive
    /// hands out no more new messages of a queue at the limit.
    public var maxInvisiblePerQueue = 10_000
    /// Traced messages kept, at most (the newest; docs/operations.md, "Tracing a message").
    public var traceCapacity = 100_000
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
    /// Snapshots leave out the dedupe windows.
    public static let snapshotDropsDedupe = BrokerPlantedBugs(rawValue: 1 << 7)
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
    /// Not retained: the node that owns this broker is its source, and a strong reference here
    /// made a cycle that leaked every node (the simulator's sweeps grew by gigabytes).
    unowned let source: any EntrySource
    /// Topic name -> queue count.
    public internal(set) var topics: [String: UInt32] = [:]
    /// Typed topics (`tern admin topic create --type`); a topic not here is mixed.
    public internal(set) var topicTypes: [String: TopicType] = [:]
    /// Consumer groups created with settings (`tern admin group create`): name -> fifo.
    public internal(set) var groupSettings: [String: Bool] = [:]
    /// Each queue's files (BrokerQueues.swift); the rows are on disk, in `queueFiles`. The key
    /// index's buckets are queues of the reserved topic `#keys` (KeyIndex.swift).
    var queues: [QueueRef: QueueFileKey] = [:]
    public let queueFiles: ConsumeQueueFiles
    /// Group -> queue -> next offset to consume.
    public internal(set) var offsets: [String: [QueueRef: UInt64]] = [:]
    var producers: [UInt64: [QueueRef: DedupeWindow]] = [:]
    /// Give-backs applied, per retry or dead-letter topic: retry key -> stored (bounded FIFO of
    /// 100,000 per topic).
    var sendBacks: [String: (keys: [String: SendResponse], order: [String], head: Int)] = [:]
    /// Delayed messages loaded into memory and not yet released (DelaySchedule.swift).
    public internal(set) var timers = TimerIndex()
    /// The delay schedule on disk: minute of due time -> its bucket in the timer log.
    var delayBuckets: [UInt64: DelayBucket] = [:]
    var firstDelayBucket: UInt64?
    /// The latest minute loaded into memory: later delays into it or before go to memory.
    var delayLoadedThrough: UInt64?
    /// Delayed messages on disk recalled before their bucket was loaded.
    var delayRecalled: Set<MessageID> = []
    /// Undecided half messages: id -> producer group, checks so far, store time (ms).
    public internal(set) var halfMessages: [MessageID: (group: String, checks: UInt32, storedAt: UInt64)] = [:]
    /// Undecided half messages by when they are next checked.
    public internal(set) var checkTimers = TimerIndex()
    /// Decided transactions (bounded FIFO, `decidedTransactions`).
    var decided: [MessageID: TransactionDecision] = [:]
    var decidedOrder: [MessageID] = []
    var decidedHead = 0
    /// Receive/ack groups: group -> queue -> next fresh offset and the invisible deliveries.
    var receiveGroups: [String: [QueueRef: ReceiveQueue]] = [:]
    /// Message traces and the topics traced (Trace.swift).
    var traces = TraceStore()
    /// The time trace steps of the entry being applied are recorded at: the entry's own clock
    /// when it carries one, else the highest store timestamp applied.
    var traceClock: UInt64 = 0
    /// Accounts for access control, by access key (docs/security.md).
    public internal(set) var accounts: [String: Account] = [:] { didSet { accountsVersion &+= 1 } }
    /// Counts changes of `accounts` (not state: for the shell to notice a change).
    public private(set) var accountsVersion: UInt64 = 0
    /// The last Raft configuration entry applied (its index and body), carried in snapshots.
    public internal(set) var membership: (index: UInt64, body: [UInt8])?
    public internal(set) var appliedIndex: UInt64 = 0
    /// Entries before this index are gone by retention (Retention.swift).
    public internal(set) var trimIndex: UInt64 = 0
    /// Bytes of every entry body applied so far (snapshots are taken by it, at the same points
    /// on every replica).
    public internal(set) var appliedBytes: UInt64 = 0
    /// Highest store timestamp applied: the broker's notion of "now" for the log.
    public internal(set) var lastStoreTimestamp: UInt64 = 0
    var cachedEntry: (index: UInt64, body: [UInt8])?
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

    public init(config: BrokerConfig, source: any EntrySource, queueFiles: ConsumeQueueFiles) {
        self.config = config
        self.source = source
        self.queueFiles = queueFiles
        timers.keepReleased = config.plantedBugs.contains(.releaseTwice)
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
        // A dead letter sent back (`tern admin dlq resend`) counts its retries anew: its
        // resend generation keeps those keys apart from the ones its earlier retries used.
        let generation = m.properties[RetryProperty.resends].map { "r\($0)/" } ?? ""
        m.properties[RetryProperty.retryKey] = "\(origin)/\(generation)\(times + 1)"
        m.properties["TIMER_DELAY_MS"] = nil
        m.properties["DELAY"] = nil
        m.properties["TIMER_DELIVER_MS"] = nil
        m.properties["SHARDING_KEY"] = nil
        let dead = times + 1 > maxReconsumeTimes
        if !dead { m.properties["TIMER_DELAY_MS"] = String(delayMillis) }
        return SendRequest(topic: (dead ? "%DLQ%" : "%RETRY%") + group, queueID: 0, producerGroup: message.producerGroup, messages: [m])
    }

    public static func validateTopicName(_ name: String) -> ErrorBody? {
        let ok =
            !name.isEmpty && name.utf8.count <= 127
            && name.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D || c == 0x25 || c == 0x2E
            }
        return ok ? nil : ErrorBody(code: ErrorCode.badRequest, message: "topic name \"\(name)\" must be 1 to 127 characters of A-Z a-z 0-9 _ - . %")
    }
}
