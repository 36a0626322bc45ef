// What side services (the HTTP listener's metrics and health) read of the node: on its loop,
// with what the shell knows beside it.
import NIOCore
import TernNode

extension TernServer {
    /// Runs `body` on the node's loop with the node and what the shell knows beside it (for the
    /// metrics and health endpoints); fails when the node is not running.
    public func inspect<T: Sendable>(_ body: @escaping @Sendable (Node, ShellState) -> T) -> EventLoopFuture<T> {
        loop.submit { [self] in
            guard let node, !stopping else { throw ServerError("the node is not running") }
            let commits = meter?.commits ?? (count: 0, nanos: 0)
            return body(
                node,
                ShellState(
                    clientConnections: connections.clients, batchesInFlight: device.batchesInFlight, ioBackend: device.backendName, commitsTimed: commits.count,
                    commitNanos: commits.nanos))
        }
    }
}

/// What the shell knows about its node beside the node itself.
public struct ShellState: Sendable {
    public var clientConnections: Int
    public var batchesInFlight: Int
    public var ioBackend: String
    /// Leader commits timed since start (with metrics on), and their total latency.
    public var commitsTimed: UInt64
    public var commitNanos: UInt64
    public init(clientConnections: Int, batchesInFlight: Int, ioBackend: String, commitsTimed: UInt64 = 0, commitNanos: UInt64 = 0) {
        self.clientConnections = clientConnections
        self.batchesInFlight = batchesInFlight
        self.ioBackend = ioBackend
        self.commitsTimed = commitsTimed
        self.commitNanos = commitNanos
    }
}
