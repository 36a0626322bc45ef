// What clients moved through this node, per topic, since it started: plain counters that the
// shell reads for its metrics (docs/operations.md). Counting is all this does: no clock, no
// I/O, and nothing in the node reads them back.
import TernProtocol

/// One topic's traffic through this node.
public struct TopicTraffic: Sendable, Equatable {
    /// Send requests this node accepted for proposal, and their bytes.
    public var sendRequests: UInt64 = 0
    public var sendBytes: UInt64 = 0
    /// Messages handed to consumers (pulls and receives) and the bytes of those answers.
    public var deliveredMessages: UInt64 = 0
    public var deliveredBytes: UInt64 = 0
    public init() {}

    public mutating func add(_ other: TopicTraffic) {
        sendRequests += other.sendRequests
        sendBytes += other.sendBytes
        deliveredMessages += other.deliveredMessages
        deliveredBytes += other.deliveredBytes
    }
}

/// Per-topic traffic, for at most `maxTopics` topics; the traffic of any further topic is
/// counted in `other`, so that the counters stay bounded however many topics come and go.
public struct Traffic: Sendable {
    public static let maxTopics = 10_000
    public private(set) var byTopic: [String: TopicTraffic] = [:]
    public private(set) var other = TopicTraffic()
    public init() {}

    mutating func count(_ topic: String, _ change: (inout TopicTraffic) -> Void) {
        if byTopic[topic] != nil || byTopic.count < Self.maxTopics {
            change(&byTopic[topic, default: TopicTraffic()])
        } else {
            change(&other)
        }
    }

    mutating func sent(_ topic: String, bytes: Int) {
        count(topic) {
            $0.sendRequests += 1
            $0.sendBytes += UInt64(bytes)
        }
    }

    mutating func delivered(_ topic: String, messages: Int, bytes: Int) {
        guard messages > 0 else { return }
        count(topic) {
            $0.deliveredMessages += UInt64(messages)
            $0.deliveredBytes += UInt64(bytes)
        }
    }
}
