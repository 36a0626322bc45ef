// The broker's log entries. Everything broker state depends on is one of these, so a replica
// that applies the same log has the same topics, queues, offsets and dedupe windows.
import TernProtocol

/// Entry types of the broker (Raft's own start below 16).
public enum BrokerEntryType {
    /// Topic create / delete: `AdminCommand`.
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
}

/// A topic change. Layout: op u8 (1 create, 2 delete, 3 update), name, queues u32.
public enum AdminCommand: Equatable, Sendable {
    case createTopic(name: String, queues: UInt32)
    case deleteTopic(name: String)
    /// More queues for an existing topic (never fewer: messages in a queue stay where they are).
    case updateTopic(name: String, queues: UInt32)

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .createTopic(let name, let queues):
            w.u8(1)
            w.string(name)
            w.u32(queues)
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
        try r.finish("admin command")
        switch op {
        case 1: return .createTopic(name: name, queues: queues)
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
    public init(groups: [String: [QueueRef: UInt64]] = [:]) { self.groups = groups }

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
        try r.finish("offset commit")
        return OffsetCommit(groups: groups)
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
        for id in ids {
            w.u64(id.entryIndex)
            w.u16(id.slot)
        }
        return w.bytes
    }
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> MessageIDList {
        var r = WireReader(bytes)
        var ids: [MessageID] = []
        for _ in 0..<(try r.u32("count")) { ids.append(MessageID(entryIndex: try r.u64("index"), slot: try r.u16("slot"))) }
        try r.finish("message id list")
        return MessageIDList(ids: ids)
    }
}
