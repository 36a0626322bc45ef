// Fault-injecting TCP relays for `tern chaos`: one per directed peer link (node A dials node B
// through the relay of A->B). Cutting a link closes its connections and holds new ones open
// without relaying a byte, so the dialling node sees silence, as behind a partition, and every
// frame that crosses is whole (a heal closes the held connections; the peer redials).
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

final class LinkProxy: @unchecked Sendable {
    let name: String
    let targetPort: Int
    private(set) var port = 0
    private let lock = NIOLock()
    private var cut = false
    private var open: [ObjectIdentifier: Channel] = [:]
    private var server: Channel?

    init(name: String, targetPort: Int) {
        self.name = name
        self.targetPort = targetPort
    }

    var isCut: Bool { lock.withLock { cut } }

    func start(group: EventLoopGroup) throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { self.accepted(channel) }
            }
        let ch = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
        server = ch
        port = ch.localAddress?.port ?? 0
    }

    private func track(_ ch: Channel) {
        lock.withLock { open[ObjectIdentifier(ch)] = ch }
        ch.closeFuture.whenComplete { [self] _ in lock.withLock { _ = open.removeValue(forKey: ObjectIdentifier(ch)) } }
    }

    private func accepted(_ inbound: Channel) {
        track(inbound)
        if isCut {
            // Held: read and drop, never relay.
            try? inbound.pipeline.syncOperations.addHandler(Sink())
            inbound.setOption(.autoRead, value: true).whenComplete { _ in }
            return
        }
        let inboundRelay = Relay()
        try? inbound.pipeline.syncOperations.addHandler(inboundRelay)
        ClientBootstrap(group: inbound.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { outbound in
                outbound.eventLoop.makeCompletedFuture {
                    let r = Relay()
                    r.peer = inbound
                    try outbound.pipeline.syncOperations.addHandler(r)
                }
            }
            .connect(host: "127.0.0.1", port: targetPort)
            .whenComplete { [self] result in
                switch result {
                case .success(let outbound):
                    track(outbound)
                    inboundRelay.peer = outbound
                    if isCut {
                        outbound.close(promise: nil)
                        inbound.close(promise: nil)
                        return
                    }
                    inbound.setOption(.autoRead, value: true).whenComplete { _ in inbound.read() }
                case .failure:
                    inbound.close(promise: nil)
                }
            }
    }

    /// Cuts the link (true) or heals it (false); either way every connection through it closes.
    func set(cut value: Bool) {
        let channels = lock.withLock { () -> [Channel] in
            cut = value
            return Array(open.values)
        }
        for ch in channels { ch.close(promise: nil) }
    }

    func stop() {
        set(cut: true)
        try? server?.close().wait()
    }
}

/// Forwards what it reads to its peer channel; closes the peer when its side closes.
private final class Relay: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var peer: Channel?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        peer?.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }
    func channelInactive(context: ChannelHandlerContext) {
        peer?.close(promise: nil)
        context.fireChannelInactive()
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// Reads and drops everything.
private final class Sink: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
