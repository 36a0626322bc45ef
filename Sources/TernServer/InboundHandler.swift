// One inbound connection: client requests go to the node; peer frames pass the connection's
// `PeerGate` (the handshake, then each Raft frame's tag and sender) first.
import Logging
import NIOCore
import NIOSSL
import TernNode
import TernProtocol
import TernProtocolNIO

/// Decoded frames of one connection to the node; a bad frame gets an error response and the
/// connection is closed.
final class InboundHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Frame
    typealias OutboundOut = ByteBuffer
    unowned let server: TernServer
    let connections: Connections
    let logger: Logger
    var id: UInt64 = 0
    var gate: PeerGate
    /// Refused: answered with an error and closing; nothing more read from it is looked at.
    var closing = false
    /// A plain connection to a node that serves clients over TLS: peer frames only.
    var clientsRefused = false
    /// The client handshake (access control), when the connection authenticates.
    var clientAuth = ClientAuthGate()
    /// When bytes of a frame not yet delivered began to arrive (set by `ByteWatcher`).
    var partialSince: NIODeadline?
    var opened = NIODeadline.now()
    var framesSeen = 0
    var watchdog: RepeatedTask?
    var closingSince: NIODeadline?

    init(server: TernServer, connections: Connections, logger: Logger) {
        self.server = server
        self.connections = connections
        self.logger = logger
        gate = PeerGate(id: server.config.id, secrets: server.peerSecrets)
    }

    func channelActive(context: ChannelHandlerContext) {
        let (id, evicted) = connections.add(context.channel)
        self.id = id
        for c in evicted {
            logger.warning(
                "closing \(c.remoteAddress?.description ?? "?"): more than \(connections.limits.maxUnclassified) connections have not sent a frame yet")
            c.close(promise: nil)
        }
        opened = .now()
        let limits = connections.limits
        let channel = context.channel
        let from = context.remoteAddress?.description ?? "?"
        watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] task in
            let now = NIODeadline.now()
            if closing {
                // Refused, and its answer not taken in 5 s: close without waiting for the write.
                if let since = closingSince, now - since > .seconds(5) {
                    task.cancel()
                    channel.close(promise: nil)
                }
                closingSince = closingSince ?? now
                return
            }
            var why: String?
            // With --insecure-peers a member's idle link looks like an idle connection: only
            // the cap on unclassified connections applies to it.
            if framesSeen == 0 && server.peerSecrets != nil && now - opened > .milliseconds(limits.firstFrameMillis) {
                why = "no frame within \(limits.firstFrameMillis / 1000) s of connecting"
            } else if let since = partialSince, channel.isWritable, now - since > .milliseconds(limits.frameMillis) {
                why = "a frame begun \(limits.frameMillis / 1000) s ago is still not complete"
            }
            guard let why else { return }
            closing = true
            task.cancel()
            logger.warning("closing \(from): \(why)")
            channel.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        watchdog?.cancel()
        connections.remove(id)
        server.enqueue(.closed(id))
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        partialSince = nil
        framesSeen += 1
        if frame.flags.contains(.response) || closing { return }
        guard (Opcode.raft.rawValue...Opcode.peerProof.rawValue).contains(frame.opcode) else {
            if clientsRefused {
                closing = true
                logger.notice("closing \(context.remoteAddress?.description ?? "?"): a client request without TLS")
                let why = "this node serves clients over TLS only: connect with --tls (and --tls-ca FILE when a private CA signed its certificate)"
                refuse(context: context, Self.unauthenticated(frame, why))
                return
            }
            guard connections.becomeClient(id) else {
                closing = true
                let why = "this node serves \(connections.limits.maxClients) client connections already (--max-connections); retry later or at another node"
                logger.warning("closing \(context.remoteAddress?.description ?? "?"): \(why)")
                refuse(
                    context: context,
                    Frame(opcode: frame.opcode, flags: [.response, .error], requestID: frame.requestID, body: ErrorBody(code: .busy, message: why).encode()))
                return
            }
            if frame.opcode == Opcode.authHello.rawValue || frame.opcode == Opcode.authProof.rawValue {
                authenticate(context: context, frame)
                return
            }
            if clientAuth.isChallenged {
                closing = true
                refuse(context: context, Self.unauthenticated(frame, "a request in the middle of authentication"))
                return
            }
            guard context.channel.isWritable, connections.startRequest(id) else {
                let why =
                    context.channel.isWritable
                    ? "\(connections.limits.maxOutstanding) requests on this connection are waiting for their answers (--max-requests-per-connection); wait for some"
                    : "answers to this connection are waiting to be read; read them first"
                var buffer = context.channel.allocator.buffer(capacity: 128)
                buffer.writeFrame(
                    Frame(opcode: frame.opcode, flags: [.response, .error], requestID: frame.requestID, body: ErrorBody(code: .busy, message: why).encode()))
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
                return
            }
            server.enqueue(.request(ClientRef(connection: id, requestID: frame.requestID), frame))
            return
        }
        // Peer frames: only a connection that proved it holds the cluster secret reaches Raft.
        let from = context.remoteAddress?.description ?? "?"
        switch gate.accept(frame) {
        case .deliver(let message):
            if server.peerSecrets == nil { connections.becomePeer(id) }  // --insecure-peers
            server.enqueue(.peer(message))
        case .reply(let answer):
            if frame.opcode == Opcode.peerProof.rawValue {
                logger.info("peer \(gate.authenticatedPeer?.description ?? "?") authenticated from \(from)")
                if let peer = gate.authenticatedPeer, !gate.announcedEndpoint.isEmpty { server.enqueue(.peerEndpoint(peer, gate.announcedEndpoint)) }
                // Counted as a peer only now: a hello alone proves nothing.
                if gate.authenticatedPeer != nil { connections.becomePeer(id) }
            }
            if frame.opcode == Opcode.peerHello.rawValue {
                // A handshake that does not finish in time ends the connection.
                let channel = context.channel
                context.eventLoop.scheduleTask(in: PeerLink.handshakeTimeout) { [self] in
                    guard gate.authenticatedPeer == nil, !closing else { return }
                    closing = true
                    logger.warning("closing \(from): the peer handshake did not finish within 5 s")
                    channel.close(promise: nil)
                }
            }
            var buffer = context.channel.allocator.buffer(capacity: 128)
            buffer.writeFrame(answer)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        case .refuse(let answer, let why):
            closing = true
            logger.warning("closing \(from): \(why)")
            refuse(context: context, answer)
        case .drop(let why):
            logger.warning("dropping a frame from \(from): \(why)")
        case .ignore:
            break
        }
    }

    /// A client that does not read its answers: stop reading its requests until they drain.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        context.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenFailure { _ in }
        if context.channel.isWritable { context.read() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? FrameError {
            closing = true
            logger.warning("closing \(context.remoteAddress?.description ?? "?"): \(e)")
            refuse(context: context, ErrorBody.badFrameResponse(e))
        } else {
            if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError {
                logger.notice("closing \(context.remoteAddress?.description ?? "?"): TLS: \(error)")
            }
            context.close(promise: nil)
        }
    }

    /// One step of the client handshake.
    private func authenticate(context: ChannelHandlerContext, _ frame: Frame) {
        let from = context.remoteAddress?.description ?? "?"
        let answer: [UInt8]
        switch clientAuth.accept(Opcode(rawValue: frame.opcode)!, frame.body, secretOf: server.secret(of:)) {
        case .reply(let body):
            answer = body
        case .authenticated(let principal):
            logger.info("client \(from) authenticated as \(principal)")
            server.enqueue(.authenticated(id, principal))
            answer = []
        case .refuse(let why):
            closing = true
            logger.warning("closing \(from): \(why)")
            refuse(context: context, Self.unauthenticated(frame, why))
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeFrame(Frame(opcode: frame.opcode, flags: [.response], requestID: frame.requestID, body: answer))
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    static func unauthenticated(_ frame: Frame, _ why: String) -> Frame {
        Frame(opcode: frame.opcode, flags: [.response, .error], requestID: frame.requestID, body: ErrorBody(code: .unauthenticated, message: why).encode())
    }

    private func refuse(context: ChannelHandlerContext, _ frame: Frame) {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeFrame(frame)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
    }
}
