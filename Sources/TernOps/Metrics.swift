// The node's metrics in Prometheus's text format (docs/operations.md, "Metrics"). Latencies and
// batch sizes are recorded by the server as they happen (LoopMeter); everything else is read
// from the node on its loop when Prometheus scrapes, so that metrics cost the append path
// nothing. All of it goes through swift-metrics into one swift-prometheus registry per node.
// The number of series is bounded: per-topic and per-group series exist for the first
// `maxTopics` topics and `maxGroups` groups this process saw (a name keeps its series once it
// has one); the rest are summed under "other".
import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import Prometheus
import TernBroker
import TernNode
import TernProtocol
import TernServer

/// What one scrape reads off the node, on its loop.
struct NodeReading: Sendable {
    var role = ""
    var term: UInt64 = 0
    var commitIndex: UInt64 = 0
    var appliedIndex: UInt64 = 0
    var lastIndex: UInt64 = 0
    var durableIndex: UInt64 = 0
    var firstIndex: UInt64 = 0
    var trimIndex: UInt64 = 0
    var snapshotIndex: UInt64 = 0
    var snapshotWrittenAt: UInt64 = 0
    var now: UInt64 = 0
    var elections: UInt64 = 0
    var leaderships: UInt64 = 0
    var heldPulls = 0
    var heldReceives = 0
    var shell: ShellState
    var diskUsed = 0.0
    var dataBytes: UInt64 = 0
    var bytesWritten = 0
    var batches = 0
    var traffic: [String: TopicTraffic] = [:]
    var otherTraffic = TopicTraffic()
    var stored: [String: UInt64] = [:]
    /// Per group, its lag on each queue (empty while the broker state is not readable).
    var lag: [String: [(queue: QueueRef, lag: UInt64)]] = [:]

    /// An empty reading (tests fill it in).
    init(shell: ShellState) { self.shell = shell }

    /// On the loop.
    init(node: Node, shell: ShellState) {
        self.shell = shell
        let raft = node.replica.raft
        let log = node.replica.log
        role = raft.role.rawValue
        term = raft.term
        commitIndex = raft.commitIndex
        appliedIndex = raft.appliedIndex
        lastIndex = log.lastIndex
        durableIndex = log.durableIndex
        firstIndex = log.firstIndex
        trimIndex = node.broker.trimIndex
        snapshotIndex = node.lastSnapshotIndex
        snapshotWrittenAt = node.lastSnapshotWrittenAt
        now = node.now
        elections = raft.electionsStarted
        leaderships = raft.leadershipsWon
        (heldPulls, heldReceives) = node.heldPolls
        diskUsed = node.diskUsedFraction
        dataBytes = node.diskBytes
        bytesWritten = log.stats.bytesWritten
        batches = log.stats.batches
        traffic = node.traffic.byTopic
        otherTraffic = node.traffic.other
        let broker: Broker = node.broker
        for (topic, queues) in broker.topics {
            var total: UInt64 = 0
            for q in 0..<queues { total += broker.maxOffset(QueueRef(topic: topic, queueID: q)) ?? 0 }
            stored[topic] = total
        }
        guard node.brokerReadable else { return }
        // As `tern admin group describe` counts it: the topics the group consumed, and on the
        // leader (which alone knows the members) the topics its members subscribe to.
        for group in Set(broker.groupNames()).union(node.groups.groupNames()).sorted() {
            var subscribed: Set<String> = []
            for id in node.groups.members(of: group) {
                for q in node.groups.assignment(group: group, clientID: id, queuesOf: { broker.topics[$0] }) { subscribed.insert(q.topic) }
            }
            guard let rows = try? broker.progress(group: group, alsoTopics: subscribed, storeTimes: false) else { continue }
            lag[group] = rows.map { ($0.queue, $0.lag) }
        }
    }
}

/// A node's metrics registry and the series made in it so far.
final class OpsMetrics: Sendable {
    static let maxTopics = 100
    static let maxGroups = 50
    static let maxLagSeries = 2_000
    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    private let state = NIOLockedValueBox(Labels())

    struct Labels {
        var topics: Set<String> = []
        var groups: Set<String> = []
        /// The last cumulative value added to each counter, by its label and dimensions.
        var counted: [String: UInt64] = [:]
        /// The gauges set by the previous scrape whose series may have gone (a group, a group's
        /// queue, a topic).
        var lagSeries: Set<[String]> = []
        var groupSeries: Set<String> = []
        var storedSeries: Set<String> = []
    }

    init() {
        var f = PrometheusMetricsFactory(registry: registry)
        let fast: [Duration] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000].map { .microseconds($0) }
        f.durationHistogramBuckets = [
            "tern_raft_append_latency_seconds": fast, "tern_raft_commit_latency_seconds": fast, "tern_disk_batch_latency_seconds": fast,
        ]
        f.valueHistogramBuckets = [
            "tern_disk_batch_entries": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096],
            "tern_disk_batch_bytes": [512, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864],
        ]
        factory = f
    }

    func gauge(_ name: String, _ value: Double, _ dimensions: [(String, String)] = []) {
        Gauge(label: name, dimensions: dimensions, factory: factory).record(value)
    }

    func gauge(_ name: String, _ value: some BinaryInteger, _ dimensions: [(String, String)] = []) {
        gauge(name, Double(value), dimensions)
    }

    /// Brings a counter up to a cumulative value the node keeps.
    func counter(_ name: String, to total: UInt64, _ dimensions: [(String, String)] = [], labels: inout Labels) {
        let key = ([name] + dimensions.map { "\($0.0)=\($0.1)" }).joined(separator: "\u{1}")
        let before = labels.counted[key] ?? 0
        if total > before { Counter(label: name, dimensions: dimensions, factory: factory).increment(by: Int64(total - before)) }
        if labels.counted[key] == nil && total == 0 { Counter(label: name, dimensions: dimensions, factory: factory).increment(by: 0) }
        labels.counted[key] = max(before, total)
    }

    /// Updates every read-at-scrape series from `r`, then renders the registry.
    func render(_ r: NodeReading) -> [UInt8] {
        state.withLockedValue { labels in
            for role in ["follower", "preCandidate", "candidate", "leader"] { gauge("tern_raft_role", role == r.role ? 1 : 0, [("role", role)]) }
            gauge("tern_raft_term", r.term)
            gauge("tern_raft_commit_index", r.commitIndex)
            gauge("tern_raft_applied_index", r.appliedIndex)
            gauge("tern_raft_last_index", r.lastIndex)
            gauge("tern_raft_durable_index", r.durableIndex)
            counter("tern_raft_elections_total", to: r.elections, labels: &labels)
            counter("tern_raft_leaderships_won_total", to: r.leaderships, labels: &labels)
            counter("tern_disk_written_bytes_total", to: UInt64(r.bytesWritten), labels: &labels)
            counter("tern_disk_batches_total", to: UInt64(r.batches), labels: &labels)
            gauge("tern_disk_batches_in_flight", r.shell.batchesInFlight)
            gauge("tern_storage_backend_info", 1, [("backend", r.shell.ioBackend)])
            gauge("tern_disk_used_ratio", r.diskUsed)
            gauge("tern_data_bytes", r.dataBytes)
            gauge("tern_log_first_index", r.firstIndex)
            gauge("tern_retention_trim_index", r.trimIndex)
            gauge("tern_snapshot_index", r.snapshotIndex)
            gauge("tern_snapshot_entries_behind", r.appliedIndex > r.snapshotIndex ? r.appliedIndex - r.snapshotIndex : 0)
            if r.snapshotWrittenAt > 0 {
                gauge("tern_snapshot_age_seconds", Double(r.now > r.snapshotWrittenAt ? r.now - r.snapshotWrittenAt : 0) / 1000)
            }
            gauge("tern_long_polls_held", r.heldPulls, [("kind", "pull")])
            gauge("tern_long_polls_held", r.heldReceives, [("kind", "receive")])
            gauge("tern_client_connections", r.shell.clientConnections)
            renderTopics(r, labels: &labels)
            renderLag(r, labels: &labels)
        }
        return registry.emitToBuffer()
    }

    /// A name's own label value, or "other" once `limit` names have theirs.
    private static func label(_ name: String, in known: inout Set<String>, limit: Int) -> String {
        if known.contains(name) { return name }
        guard known.count < limit else { return "other" }
        known.insert(name)
        return name
    }

    private func renderTopics(_ r: NodeReading, labels: inout Labels) {
        var traffic: [String: TopicTraffic] = ["other": r.otherTraffic]
        for (topic, t) in r.traffic.sorted(by: { $0.key < $1.key }) {
            traffic[Self.label(topic, in: &labels.topics, limit: Self.maxTopics), default: TopicTraffic()].add(t)
        }
        for (topic, t) in traffic.sorted(by: { $0.key < $1.key }) {
            let d = [("topic", topic)]
            counter("tern_topic_send_requests_total", to: t.sendRequests, d, labels: &labels)
            counter("tern_topic_received_bytes_total", to: t.sendBytes, d, labels: &labels)
            counter("tern_topic_delivered_messages_total", to: t.deliveredMessages, d, labels: &labels)
            counter("tern_topic_delivered_bytes_total", to: t.deliveredBytes, d, labels: &labels)
        }
        var stored: [String: UInt64] = [:]
        for (topic, n) in r.stored.sorted(by: { $0.key < $1.key }) {
            stored[Self.label(topic, in: &labels.topics, limit: Self.maxTopics), default: 0] += n
        }
        for (topic, n) in stored { gauge("tern_topic_stored_messages", n, [("topic", topic)]) }
        for gone in labels.storedSeries.subtracting(stored.keys) {
            Gauge(label: "tern_topic_stored_messages", dimensions: [("topic", gone)], factory: factory).destroy()
        }
        labels.storedSeries = Set(stored.keys)
    }

    private func renderLag(_ r: NodeReading, labels: inout Labels) {
        var perGroup: [String: UInt64] = [:]
        var perQueue: [[String]: UInt64] = [:]
        for (group, rows) in r.lag.sorted(by: { $0.key < $1.key }) {
            let g = Self.label(group, in: &labels.groups, limit: Self.maxGroups)
            for row in rows {
                perGroup[g, default: 0] += row.lag
                let key = g == "other" || perQueue.count >= Self.maxLagSeries ? [g, "other", ""] : [g, row.queue.topic, String(row.queue.queueID)]
                perQueue[key, default: 0] += row.lag
            }
        }
        for (g, lag) in perGroup { gauge("tern_consumer_group_lag_messages", lag, [("group", g)]) }
        for gone in labels.groupSeries.subtracting(perGroup.keys) {
            Gauge(label: "tern_consumer_group_lag_messages", dimensions: [("group", gone)], factory: factory).destroy()
        }
        labels.groupSeries = Set(perGroup.keys)
        for (key, lag) in perQueue { gauge("tern_consumer_lag_messages", lag, [("group", key[0]), ("topic", key[1]), ("queue", key[2])]) }
        // A queue or group gone since the last scrape loses its series.
        for gone in labels.lagSeries.subtracting(perQueue.keys) {
            Gauge(label: "tern_consumer_lag_messages", dimensions: [("group", gone[0]), ("topic", gone[1]), ("queue", gone[2])], factory: factory).destroy()
        }
        labels.lagSeries = Set(perQueue.keys)
    }
}
