// The broker's log entries. Everything broker state depends on is one of these, so a replica
// that applies the same log has the same topics, queues, offsets and dedupe windows.
import TernProtocol

/// Entry types of the broker (Raft's own start below 16).
public enum BrokerEntryType {
    /// Topic create / delete: `AdminCommand`.
    /// Types below this are Raft's own (docs/raft.md); the broker applies none of them.
    public static let firstBrokerType: UInt8 = 16
    /// Raft's configuration entry (RaftEntryType.membership): the broker keeps the last one
    /// applied, for snapshots (the node decodes it).
    public static let raftMembership: UInt8 = 2
    public static let admin: UInt8 = 16
    /// Messages for one queue: store timestamp u64, then a send request body as the client sent it.
    public static let messages: UInt8 = 17
    /// Consume offsets of one or more groups: `OffsetCommit`.
    public static let offsets: UInt8 = 18
    /// Consume offsets set as given, backwards too (an operator's reset): `OffsetCommit`.
    public static let offsetReset: UInt8 = 19
    /// Delayed messages the leader found due: `MessageIDList`.
    public static let release: UInt8 = 20
    /// Delayed messages recalled before their time: `MessageIDList`.
    public static let recall: UInt8 = 21
    /// Commit or rollback of half messages: `TransactionEnd`.
    public static let transactionEnd: UInt8 = 22
    /// The leader asks about undecided half messages: `TransactionCheck`.
    public static let transactionCheck: UInt8 = 23
    /// Messages handed out to a receive/ack group, invisible until a time: `ReceiveEntry`.
    public static let receive: UInt8 = 24
    /// An acknowledgement or a changed invisible time of one delivery: `ReceiptEntry`.
    public static let receipt: UInt8 = 25
    /// Retention: the first log index kept and each queue's new minimum offset: `TrimEntry`.
    public static let trim: UInt8 = 26
    /// Delayed messages the leader found due, each with a copy of the message: `ReleaseCopies`
    /// (Copies.swift). Type 20 (ids only) is still applied, from logs written before.
    public static let releaseCopies: UInt8 = 27
    /// An account created, replaced or deleted: `AclCommand`.
    public static let acl: UInt8 = 28
    /// Tracing on or off for a topic: `TraceTopicRequest` (Trace.swift).
    public static let traceTopic: UInt8 = 29
}

/// Layout: group, decision u8, message id, and for a commit, optionally, a copy item of the half
/// message (Copies.swift) as a blob, from which its queue delivers it. With the leader's clock
/// (written while tracing is on; Trace.swift): decision with bit 0x80 set, the copy blob (empty
/// for none), then `at` u64.
public struct TransactionEnd: Equatable, Sendable {
    public var group: String
    public var id: MessageID
    public var decision: TransactionDecision
    public var copy: [UInt8]?
    /// Where the copy item starts in the encoded entry (set by `decode`).
    public var copyPosition: UInt32 = 0
    /// The leader's clock, when it stamped one (tracing on).
    public var at: UInt64?
    public init(group: String, id: MessageID, decision: TransactionDecision, copy: [UInt8]? = nil, at: UInt64? = nil) {
        self.group = group
        self.id = id
        self.decision = decision
        self.copy = copy
        self.at = at
    }
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.string(group)
        w.u8(decision.rawValue | (at == nil ? 0 : 0x80))
        w.messageID(id)
        if let at {
            w.blob(copy ?? [])
            w.u64(at)
        } else if let copy {
            w.blob(copy)
        }
        return w.bytes
    }
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> TransactionEnd {
        var r = WireReader(bytes)
        let group = try r.string("group")
        let d = try r.u8("decision")
        guard let decision = TransactionDecision(rawValue: d & 0x7F) else { throw WireError("transaction decision \(d) is unknown") }
        let id = try r.messageID()
        var end = TransactionEnd(group: group, id: id, decision: decision)
        if d & 0x80 != 0 || !r.atEnd {
            let (start, count) = try r.skipBlob("copy item")
            if count > 0 || d & 0x80 == 0 {
                end.copy = Array(bytes[start..<(start + count)])
                end.copyPosition = UInt32(start)
            }
        }
        if d & 0x80 != 0 { end.at = try r.u64("at") }
        try r.finish("transaction end")
        return end
    }
}

/// The leader's clock when it found the checks due, and the half messages. Layout: now u64,
/// count u32, ids.
public struct TransactionCheck: Equatable, Sendable {
    public var now: UInt64
    public var ids: [MessageID]
    public init(now: UInt64, ids: [MessageID]) {
        self.now = now
        self.ids = ids
    }
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.u64(now)
        w.u32(UInt32(ids.count))
        for id in ids { w.messageID(id) }
        return w.bytes
    }
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> TransactionCheck {
        var r = WireReader(bytes)
        let now = try r.u64("now")
        var ids: [MessageID] = []
        for _ in 0..<(try r.u32("count")) { ids.append(try r.messageID()) }
        try r.finish("transaction check")
        return TransactionCheck(now: now, ids: ids)
    }
}

/// What a receive hands out, as the leader chose it: for each queue, the offsets and where the
/// group's next fresh offset moves (offsets passed over did not match the filter).
/// Layout: group, topic, now u64, until u64, queue count u32, then per queue: queue u32,
/// next u64, count u32, offsets u64...
public struct ReceiveEntry: Equatable, Sendable {
    public struct Queue: Equatable, Sendable {
        public var queueID: UInt32
        public var next: UInt64
        public var offsets: [UInt64]
    }
    public var group: String
    public var topic: String
    public var now: UInt64
    public var until: UInt64
    public var queues: [Queue]
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.string(group)
        w.string(topic)
        w.u64(now)
        w.u64(until)
        w.u32(UInt32(queues.count))
        for q in queues {
            w.u32(q.queueID)
            w.u64(q.next)
            w.u32(UInt32(q.offsets.count))
            for o in q.offsets { w.u64(o) }
        }
        return w.bytes
    }
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> ReceiveEntry {
        var r = WireReader(bytes)
        let group = try r.string("group")
        let topic = try r.string("topic")
        let now = try r.u64("now")
        let until = try r.u64("until")
        var queues: [Queue] = []
        for _ in 0..<(try r.u32("queues")) {
            let id = try r.u32("queue")
            let next = try r.u64("next")
            var offsets: [UInt64] = []
            for _ in 0..<(try r.u32("count")) { offsets.append(try r.u64("offset")) }
            queues.append(Queue(queueID: id, next: next, offsets: offsets))
        }
        try r.finish("receive entry")
        return ReceiveEntry(group: group, topic: topic, now: now, until: until, queues: queues)
    }
}

/// Acknowledge one delivery (`until` nil) or make it invisible until `until`.
/// Layout: group, handle, op u8 (1 ack, 2 change), until u64.
public struct ReceiptEntry: Equatable, Sendable {
    public var group: String
    public var handle: ReceiptHandle
    public var until: UInt64?
    /// The leader's clock, when it stamped one (tracing on; then a trailing u64).
    public var at: UInt64?
    public init(group: String, handle: ReceiptHandle, until: UInt64?, at: UInt64? = nil) {
        self.group = group
        self.handle = handle
        self.until = until
        self.at = at
    }
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.string(group)
        handle.encode(into: &w)
        w.u8(until == nil ? 1 : 2)
        w.u64(until ?? 0)
        if let at { w.u64(at) }
        return w.bytes
    }
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> ReceiptEntry {
        var r = WireReader(bytes)
        let group = try r.string("group")
        let handle = try ReceiptHandle(from: &r)
        let op = try r.u8("op")
        let until = try r.u64("until")
        let at = r.atEnd ? nil : try r.u64("at")
        try r.finish("receipt entry")
        guard op == 1 || op == 2 else { throw WireError("receipt op \(op) is unknown") }
        return ReceiptEntry(group: group, handle: handle, until: op == 1 ? nil : until, at: at)
    }
}

/// A topic or group change. Layout: op u8 (1 create, 2 delete, 3 update, 4 create group), name,
/// queues u32 (for a group: its flags, bit 0 fifo); a create of a typed topic adds its type u8.
public enum AdminCommand: Equatable, Sendable {
    case createTopic(name: String, queues: UInt32, type: TopicType = .mixed)
    /// A consumer group's settings (a group used before it is created has the defaults).
    case createGroup(name: String, fifo: Bool)
    case deleteTopic(name: String)
    /// More queues for an existing topic (never fewer: messages in a queue stay where they are).
    case updateTopic(name: String, queues: UInt32)

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .createTopic(let name, let queues, let type):
            w.u8(1)
            w.string(name)
            w.u32(queues)
            if type != .mixed { w.u8(type.rawValue) }
        case .createGroup(let name, let fifo):
            w.u8(4)
            w.string(name)
            w.u32(fifo ? 1 : 0)
        case .deleteTopic(let name):
            w.u8(2)
            w.string(name)
            w.u32(0)
        case .updateTopic(let name, let queues):
            w.u8(3)
            w.string(name)
            w.u32(queues)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> AdminCommand {
        var r = WireReader(bytes)
        let op = try r.u8("admin op")
        let name = try r.string("topic")
        let queues = try r.u32("queues")
        var type = TopicType.mixed
        if op == 1 && !r.atEnd { type = try TopicType.decode(r.u8("topic type")) }
        try r.finish("admin command")
        switch op {
        case 1: return .createTopic(name: name, queues: queues, type: type)
        case 4:
            guard queues <= 1 else { throw WireError("group flags \(queues) are unknown") }
            return .createGroup(name: name, fifo: queues == 1)
        case 2: return .deleteTopic(name: name)
        case 3: return .updateTopic(name: name, queues: queues)
        default: throw WireError("admin op \(op) is unknown")
        }
    }
}

/// Offsets of several groups in one entry: the leader coalesces the commits that arrived
/// together. Layout: group count u32, then per group: name, count u32, (topic, queue u32, offset u64)...
public struct OffsetCommit: Equatable, Sendable {
    public var groups: [String: [QueueRef: UInt64]]
    /// The leader's clock, when it stamped one (tracing on; then a trailing u64).
    public var at: UInt64?
    public init(groups: [String: [QueueRef: UInt64]] = [:], at: UInt64? = nil) {
        self.groups = groups
        self.at = at
    }

    public mutating func merge(group: String, offsets: [QueueRef: UInt64]) {
        for (q, o) in offsets { groups[group, default: [:]][q] = max(groups[group]?[q] ?? 0, o) }
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.u32(UInt32(groups.count))
        for g in groups.keys.sorted() {
            w.string(g)
            let map = groups[g]!
            w.u32(UInt32(map.count))
            for q in map.keys.sorted() {
                w.string(q.topic)
                w.u32(q.queueID)
                w.u64(map[q]!)
            }
        }
        if let at { w.u64(at) }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> OffsetCommit {
        var r = WireReader(bytes)
        var groups: [String: [QueueRef: UInt64]] = [:]
        for _ in 0..<(try r.u32("groups")) {
            let g = try r.string("group")
            var map: [QueueRef: UInt64] = [:]
            for _ in 0..<(try r.u32("count")) {
                map[QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue"))] = try r.u64("offset")
            }
            groups[g] = map
        }
        let at = r.atEnd ? nil : try r.u64("at")
        try r.finish("offset commit")
        return OffsetCommit(groups: groups, at: at)
    }
}

/// FNV-1a, 32 bits: the tag hash kept in consume queues. Stable across processes (unlike `Hasher`).
public func tagHash(_ tag: String) -> UInt32 {
    var h: UInt32 = 0x811C_9DC5
    for b in tag.utf8 {
        h ^= UInt32(b)
        h &*= 0x0100_0193
    }
    return h
}

/// A parsed tag filter: nil tags means everything ("", "*").
public struct TagFilter: Sendable, Equatable {
    public let tags: [String]?
    public let hashes: Set<UInt32>

    public init(_ expression: String) {
        let trimmed = expression.trimmingSpaces
        if trimmed.isEmpty || trimmed == "*" {
            tags = nil
            hashes = []
        } else {
            let list = trimmed.split(separator: "|", omittingEmptySubsequences: true).map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
            tags = list
            hashes = Set(list.map(tagHash))
        }
    }

    public func matches(hash: UInt32) -> Bool { tags == nil || hashes.contains(hash) }
    public func matches(tag: String) -> Bool { tags?.contains(tag) ?? true }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

/// Message ids in an entry. Layout: count u32, then (entry index u64, slot u16) each.
public struct MessageIDList: Equatable, Sendable {
    public var ids: [MessageID]
    public init(ids: [MessageID]) { self.ids = ids }
    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: 4 + ids.count * 10)
        w.u32(UInt32(ids.count))
        for id in ids { w.messageID(id) }
        return w.bytes
    }
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> MessageIDList {
        var r = WireReader(bytes)
        var ids: [MessageID] = []
        for _ in 0..<(try r.u32("count")) { ids.append(try r.messageID()) }
        try r.finish("message id list")
        return MessageIDList(ids: ids)
    }
}

/// A committed entry that does not decode: corruption or a bug, never skipped. The node turns it
/// into a storage corruption error and stops.
public struct CorruptEntry: Error, Sendable, CustomStringConvertible {
    public var index: UInt64
    public var type: UInt8
    public var reason: String
    public init(index: UInt64, type: UInt8, reason: String) {
        self.index = index
        self.type = type
        self.reason = reason
    }
    public var description: String { "committed entry \(index) (type \(type)) does not decode: \(reason)" }
}
