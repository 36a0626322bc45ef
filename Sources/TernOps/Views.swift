// The JSON shapes of the HTTP admin API (docs/operations.md, "HTTP admin API"), shared with the
// commands' `--json` output so that both show the same figures.
import Foundation
import TernProtocol

public struct GroupView: Encodable, Sendable {
    public struct Row: Encodable, Sendable {
        var topic: String
        var queue: UInt32
        var committed: UInt64?
        var minOffset, maxOffset, lag: UInt64
        var receiveNext: UInt64?
        var invisible: UInt32
        var lastConsumedStored: UInt64
    }
    public struct Member: Encodable, Sendable {
        var clientID: String
        var queues: [String]
    }
    var group: String
    var fifo: Bool
    var lag: UInt64
    var members: [Member]
    var queues: [Row]

    public init(_ g: GroupProgress) {
        group = g.group
        fifo = g.fifo
        lag = g.totalLag
        members = g.members.map { Member(clientID: $0.clientID, queues: $0.queues.map(\.description)) }
        queues = g.queues.map {
            Row(
                topic: $0.queue.topic, queue: $0.queue.queueID, committed: $0.committed, minOffset: $0.minOffset, maxOffset: $0.maxOffset, lag: $0.lag,
                receiveNext: $0.receiveNext, invisible: $0.invisible, lastConsumedStored: $0.lastConsumedStored)
        }
    }
}

struct StatusView: Encodable, Sendable {
    var id: String
    var role: String
    var term, commitIndex, appliedIndex, lastIndex, durableIndex, firstIndex, snapshotIndex, trimIndex, diskBytes: UInt64
    var leader: String
    var grpcEndpoint: String

    init(_ s: NodeStatus) {
        id = s.id
        role = s.role
        term = s.term
        commitIndex = s.commitIndex
        appliedIndex = s.appliedIndex
        lastIndex = s.lastIndex
        durableIndex = s.durableIndex
        firstIndex = s.firstIndex
        snapshotIndex = s.snapshotIndex
        trimIndex = s.trimIndex
        diskBytes = s.diskBytes
        leader = s.leader
        grpcEndpoint = s.grpcEndpoint
    }
}

struct ClusterView: Encodable, Sendable {
    var node: String
    var leader: String
    var members: [StatusView]
}

/// The broker groups behind the node's name servers (none: the node has no name servers).
struct BrokerGroupsView: Encodable, Sendable {
    struct Member: Encodable, Sendable {
        var id, endpoint: String
    }
    struct Group: Encodable, Sendable {
        var group, leader: String
        var term: UInt64
        var members: [Member]
        var topics: Int
        /// Since the name server heard from the group.
        var ageMillis: UInt64
        init(_ r: GroupRegistration, ageMillis: UInt64) {
            group = r.group
            leader = r.leader
            term = r.term
            members = r.members.map { Member(id: $0.id, endpoint: $0.endpoint) }
            topics = r.topics.count
            self.ageMillis = ageMillis
        }
    }
    var nameservers: [String]
    var groups: [Group]
}

struct TopicView: Encodable, Sendable {
    struct Queue: Encodable, Sendable {
        var queue: UInt32
        var minOffset, maxOffset: UInt64
    }
    var name: String
    var messages: UInt64
    var traced: Bool
    var queues: [Queue]

    init(_ t: TopicInfo) {
        name = t.name
        traced = t.traced
        queues = t.queues.map { Queue(queue: $0.queueID, minOffset: $0.minOffset, maxOffset: $0.maxOffset) }
        messages = t.queues.reduce(0) { $0 + $1.maxOffset - $1.minOffset }
    }
}

struct GroupSummary: Encodable, Sendable {
    var group: String
    var members: Int
    var lag: UInt64
}

struct MessageView: Encodable, Sendable {
    var id: String
    var topic: String
    var queue: UInt32
    var queueOffset: UInt64
    var storeTimestamp: UInt64
    var producerGroup: String
    var tag: String
    var keys: [String]
    var properties: [String: String]
    var bornTimestamp: UInt64
    var bodyBytes: Int
    /// The body as text when it is UTF-8 and short; nil otherwise.
    var bodyText: String?

    init(_ m: ReceivedMessage) {
        id = m.id.description
        topic = m.topic
        queue = m.queueID
        queueOffset = m.queueOffset
        storeTimestamp = m.storeTimestamp
        producerGroup = m.producerGroup
        tag = m.message.tag
        keys = m.message.keys
        properties = m.message.properties
        bornTimestamp = m.message.bornTimestamp
        bodyBytes = m.message.body.count
        bodyText = m.message.body.count <= 4096 ? String(validating: m.message.body, as: UTF8.self) : nil
    }
}

struct ErrorView: Encodable, Sendable {
    var error: String
    var code: Int?
}

/// A message's trace as JSON (`tern admin message trace --json`, /api/messages/ID/trace) and as
/// the CLI's text.
public struct TraceView: Encodable, Sendable {
    struct Step: Encodable, Sendable {
        var step: String
        var at: UInt64
        var time: String
        var entry: UInt64
        var group: String?
        var queue: String?
        var offset: UInt64?
        var attempt: UInt32?
        var until: UInt64?
        var copy: String?
    }
    var id: String
    var topic: String
    var leader: String
    var term: UInt64
    var steps: [Step]
    var dropped: UInt32

    public init(_ t: MessageTrace) {
        id = t.id.description
        topic = t.topic
        leader = t.leader
        term = t.term
        dropped = t.dropped
        steps = t.events.map { e in
            let timed: Set<TraceEvent.Kind> = [.delayed, .received, .invisibleChanged]
            // Steps at a queue position; the others name at most the queue a message is bound for.
            let placed: Set<TraceEvent.Kind> = [.stored, .released, .committed, .received, .acknowledged, .invisibleChanged, .consumed]
            return Step(
                step: e.kind.description, at: e.at, time: isoTime(e.at), entry: e.index, group: e.group.isEmpty ? nil : e.group,
                queue: e.queue.map { "\($0.topic):\($0.queueID)" }, offset: e.queue != nil && placed.contains(e.kind) ? e.offset : nil,
                attempt: e.attempt == 0 ? nil : e.attempt,
                until: timed.contains(e.kind) ? e.detail : nil, copy: e.copy?.description)
        }
    }

    /// One line per step, after a heading.
    public var text: String {
        var lines = ["message \(id) of topic \(topic)" + (leader.isEmpty ? "" : ", stored by \(leader) in term \(term)")]
        for s in steps {
            var what = s.step.padding(toLength: 18, withPad: " ", startingAt: 0)
            if let q = s.queue { what += s.offset.map { " \(q)@\($0)" } ?? " \(q)" }
            if let g = s.group { what += " group \(g)" }
            if let a = s.attempt { what += " attempt \(a)" }
            if let u = s.until { what += s.step == "delayed" ? " due \(isoTime(u))" : " invisible until \(isoTime(u))" }
            if let c = s.copy { what += " copy \(c)" }
            lines.append("  \(s.time)  \(what)  (entry \(s.entry))")
        }
        if dropped > 0 { lines.append("  (\(dropped) steps left out: a trace keeps its first 16 and its newest steps, 64 in all)") }
        return lines.joined(separator: "\n")
    }
}

func isoTime(_ millis: UInt64) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return f.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
}
