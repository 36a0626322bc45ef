// The outbound connection to one peer, for this node's Raft messages to it (its messages to us
// arrive on a connection it opened). Reconnects with exponential back-off (50 ms doubling to
// 250 ms) while the server runs. A message sent while the link is down, or while its socket buffer
// is full, is dropped: Raft retransmits what matters.
import Foundation
import Logging
import NIOCore
import NIOPosix
import TernProtocol
import TernRaft

final class PeerLink: @unchecked Sendable {
    let peer: NodeID
    let endpoint: String
    let group: EventLoopGroup
    let logger: Logger
    private let lock = NSLock()
    private var channel: Channel?
    private var stopped = false
    private var backoffMillis: Int64 = 50
    private var wasConnected = false

    init(peer: NodeID, endpoint: String, group: EventLoopGroup, logger: Logger) {
        self.peer = peer
        self.endpoint = endpoint
        self.group = group
        self.logger = logger
    }

    func start() { connect() }

    func stop() {
        lock.lock()
        stopped = true
        let c = channel
        channel = nil
        lock.unlock()
        c?.close(promise: nil)
    }

    func send(_ buffer: ByteBuffer) {
        lock.lock()
        let c = channel
        lock.unlock()
        guard let c, c.isWritable else { return }
        c.writeAndFlush(buffer, promise: nil)
    }

    private func connect() {
        guard let (host, port) = parseEndpoint(endpoint) else {
            logger.error("peer \(peer): endpoint \(endpoint) is not host:port")
            return
        }
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(500))
            .channelInitializer { channel in
                // Peers never answer on this connection except to refuse a bad frame.
                channel.eventLoop.makeSucceededVoidFuture()
            }
        bootstrap.connect(host: host, port: port).whenComplete { [self] result in
            switch result {
            case .success(let c):
                lock.lock()
                let isStopped = stopped
                if !isStopped {
                    channel = c
                    backoffMillis = 50
                }
                lock.unlock()
                if isStopped {
                    c.close(promise: nil)
                    return
                }
                if !wasConnected { logger.info("connected to peer \(peer) at \(endpoint)") }
                wasConnected = true
                c.closeFuture.whenComplete { [self] _ in
                    lock.lock()
                    if channel === c { channel = nil }
                    lock.unlock()
                    logger.info("lost peer \(peer) at \(endpoint); reconnecting")
                    wasConnected = false
                    retry()
                }
            case .failure:
                retry()
            }
        }
    }

    private func retry() {
        lock.lock()
        let isStopped = stopped
        let delay = backoffMillis
        backoffMillis = min(backoffMillis * 2, 250)
        lock.unlock()
        guard !isStopped else { return }
        group.next().scheduleTask(in: .milliseconds(delay)) { [self] in connect() }
    }
}
