import Foundation
import TernNode
import TernProtocol
import TernServer
import Testing

@testable import TernOps

@Suite("metrics exposition")
struct MetricsTests {
    static func reading() -> NodeReading {
        var r = NodeReading(shell: ShellState(clientConnections: 3, batchesInFlight: 1, ioBackend: "io_uring"))
        r.role = "leader"
        r.term = 7
        r.commitIndex = 120
        return r
    }

    /// The value of one series line (name plus labels exactly as rendered), or nil.
    static func value(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") { return Double(line.split(separator: " ").last!) }
        return nil
    }

    @Test("node gauges and the role as one series per role")
    func gauges() {
        let m = OpsMetrics()
        let text = String(decoding: m.render(Self.reading()), as: UTF8.self)
        #expect(Self.value(text, "tern_raft_term") == 7 && Self.value(text, "tern_raft_commit_index") == 120)
        #expect(Self.value(text, #"tern_raft_role{role="leader"}"#) == 1 && Self.value(text, #"tern_raft_role{role="follower"}"#) == 0)
        #expect(Self.value(text, "tern_client_connections") == 3)
        #expect(Self.value(text, #"tern_storage_backend_info{backend="io_uring"}"#) == 1)
        #expect(!text.contains("tern_snapshot_age_seconds"), "no snapshot written yet: no age")
    }

    @Test("counters follow the node's cumulative totals: each scrape adds only what is new")
    func counters() {
        let m = OpsMetrics()
        var r = Self.reading()
        var t = TopicTraffic()
        t.sendRequests = 10
        r.traffic = ["orders": t]
        _ = m.render(r)
        t.sendRequests = 25
        r.traffic = ["orders": t]
        let text = String(decoding: m.render(r), as: UTF8.self)
        #expect(Self.value(text, #"tern_topic_send_requests_total{topic="orders"}"#) == 25)
    }

    @Test("topics past the first 100 are summed under other, and a topic keeps its series once it has one")
    func boundedTopics() {
        let m = OpsMetrics()
        var r = Self.reading()
        var one = TopicTraffic()
        one.sendRequests = 1
        for i in 0..<(OpsMetrics.maxTopics + 20) { r.traffic[String(format: "t%03d", i)] = one }
        var text = String(decoding: m.render(r), as: UTF8.self)
        let series = text.split(separator: "\n").filter { $0.hasPrefix("tern_topic_send_requests_total{") }
        #expect(series.count == OpsMetrics.maxTopics + 1, "100 topics and other")
        #expect(Self.value(text, #"tern_topic_send_requests_total{topic="other"}"#) == 20)
        // A new topic sorting first does not take an existing topic's series.
        r.traffic["a-new-one"] = one
        text = String(decoding: m.render(r), as: UTF8.self)
        #expect(Self.value(text, #"tern_topic_send_requests_total{topic="t000"}"#) == 1)
        #expect(Self.value(text, #"tern_topic_send_requests_total{topic="a-new-one"}"#) == nil)
        #expect(Self.value(text, #"tern_topic_send_requests_total{topic="other"}"#) == 21)
    }

    @Test("lag per group and queue; groups past the first 50 under other; a queue gone loses its series")
    func lag() {
        let m = OpsMetrics()
        var r = Self.reading()
        r.lag = ["billing": [(QueueRef(topic: "orders", queueID: 0), 5), (QueueRef(topic: "orders", queueID: 1), 7)]]
        for i in 0..<(OpsMetrics.maxGroups + 2) { r.lag[String(format: "g%02d", i)] = [(QueueRef(topic: "x", queueID: 0), 1)] }
        var text = String(decoding: m.render(r), as: UTF8.self)
        #expect(Self.value(text, #"tern_consumer_group_lag_messages{group="billing"}"#) == 12)
        #expect(Self.value(text, #"tern_consumer_lag_messages{group="billing",topic="orders",queue="1"}"#) == 7)
        // billing and g00...g48 have their own series; g49...g51 are other.
        #expect(Self.value(text, #"tern_consumer_group_lag_messages{group="other"}"#) == 3)
        r.lag["billing"] = [(QueueRef(topic: "orders", queueID: 0), 2)]
        text = String(decoding: m.render(r), as: UTF8.self)
        #expect(Self.value(text, #"tern_consumer_lag_messages{group="billing",topic="orders",queue="0"}"#) == 2)
        #expect(!text.contains(#"tern_consumer_lag_messages{group="billing",topic="orders",queue="1"}"#))
    }

    @Test("secrets compare equal only when equal, whatever their lengths")
    func secretComparison() {
        #expect(constantTimeEqual(Array("secret".utf8), Array("secret".utf8)))
        #expect(!constantTimeEqual(Array("secret".utf8), Array("secreT".utf8)))
        #expect(!constantTimeEqual(Array("secret".utf8), Array("secret2".utf8)))
        #expect(!constantTimeEqual([], [0]))
        #expect(constantTimeEqual([], []))
    }
}
