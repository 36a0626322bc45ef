// The last three minutes of this node's throughput and commit latency, sampled every two
// seconds, so that the console's charts show the recent past as soon as the page opens
// (GET /api/history).
import Foundation
import NIOConcurrencyHelpers
import TernNode
import TernServer

struct HistoryPoint: Encodable, Sendable {
    /// Milliseconds since 1970 at the end of the interval.
    var at: UInt64
    var sendRequestsPerSecond: Double
    var deliveredPerSecond: Double
    /// Mean commit latency of the interval's leader commits (nil: none).
    var commitMillis: Double?
}

final class History: Sendable {
    static let points = 90
    static let intervalSeconds = 2.0
    private struct Totals {
        var sends: UInt64
        var delivered: UInt64
        var commits: UInt64
        var commitNanos: UInt64
        var at: Double
    }
    private let state = NIOLockedValueBox<(last: Totals?, points: [HistoryPoint])>((nil, []))

    var recent: [HistoryPoint] { state.withLockedValue { $0.points } }

    /// Samples until cancelled.
    func run(server: TernServer) async {
        while !Task.isCancelled {
            if let totals = try? await server.inspect({ node, shell in History.totals(node, shell) }).get() { add(totals) }
            try? await Task.sleep(for: .seconds(Self.intervalSeconds))
        }
    }

    private static func totals(_ node: Node, _ shell: ShellState) -> Totals {
        var t = TopicTraffic()
        for (_, traffic) in node.traffic.byTopic { t.add(traffic) }
        t.add(node.traffic.other)
        return Totals(
            sends: t.sendRequests, delivered: t.deliveredMessages, commits: shell.commitsTimed, commitNanos: shell.commitNanos,
            at: Date().timeIntervalSince1970)
    }

    private func add(_ now: Totals) {
        state.withLockedValue { s in
            defer { s.last = now }
            guard let last = s.last, now.at > last.at else { return }
            let dt = now.at - last.at
            let commits = now.commits &- last.commits
            s.points.append(
                HistoryPoint(
                    at: UInt64(now.at * 1000), sendRequestsPerSecond: Double(now.sends &- last.sends) / dt,
                    deliveredPerSecond: Double(now.delivered &- last.delivered) / dt,
                    commitMillis: commits == 0 ? nil : Double(now.commitNanos &- last.commitNanos) / Double(commits) / 1e6))
            if s.points.count > Self.points { s.points.removeFirst(s.points.count - Self.points) }
        }
    }
}
