// The outbound connection to one peer, for this node's Raft messages to it (its messages to us
// arrive on a connection it opened). With a cluster secret, the link first runs the initiator's
// side of the peer handshake (PeerAuth.swift) and then seals every Raft frame with the session's
// tag; without one (`--insecure-peers`) it sends plain frames at once. Reconnects with exponential
// back-off (50 ms doubling to 250 ms) while the server runs. A message sent while the link is down
// or still authenticating, or while its socket buffer is full, is dropped: Raft retransmits what
// matters. Everything here runs on the server's one event loop but `stop`.
import Foundation
import Logging
import NIOCore
import NIOPosix
import TernProtocol
import TernProtocolNIO
import TernRaft

final class PeerLink: @unchecked Sendable {
    let id: NodeID
    let peer: NodeID
    let endpoint: String
    let secrets: PeerSecretSource?
    let group: EventLoopGroup
    let logger: Logger
    private let lock = NSLock()
    /// The connection Raft frames go out on, once it is ready (authenticated, with a secret).
    private var channel: Channel?
    private var session: PeerSession?
    /// The connection whose handshake is under way, closed too by `stop`.
    private var handshaking: Channel?
    private var stopped = false
    private var backoffMillis: Int64 = 50
    private var wasConnected = false
    /// The last handshake failure logged, so that a peer refusing every 250 ms logs once.
    private var lastProblem: String?
    /// A handshake that has not finished within this long is abandoned and retried.
    static let handshakeTimeout = TimeAmount.seconds(5)

    /// This node's own endpoint, announced in the handshake.
    let advertise: String

    init(id: NodeID, peer: NodeID, endpoint: String, advertise: String, secrets: PeerSecretSource?, group: EventLoopGroup, logger: Logger) {
        self.id = id
        self.advertise = advertise
        self.peer = peer
        self.endpoint = endpoint
        self.secrets = secrets
        self.group = group
        self.logger = logger
    }

    func start() { connect() }

    func stop() {
        lock.lock()
        stopped = true
        let c = channel
        let h = handshaking
        channel = nil
        handshaking = nil
        lock.unlock()
        c?.close(promise: nil)
        h?.close(promise: nil)
    }

    func send(_ messages: [Message]) {
        lock.lock()
        guard let c = channel, c.isWritable else {
            lock.unlock()
            return
        }
        var buffer = c.allocator.buffer(capacity: 256)
        for m in messages {
            var body = PeerCodec.encode(m)
            if session != nil { body = session!.seal(body) }
            buffer.writeFrame(Frame(opcode: Opcode.raft.rawValue, requestID: 0, body: body))
        }
        lock.unlock()
        // Only the loop sends, so frames leave in the order their sequence numbers were taken.
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
            .channelInitializer { [self] channel in
                // The peer answers on this connection only during the handshake, or to refuse.
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(codec: FrameCodec())))
                    try channel.pipeline.syncOperations.addHandler(PeerLinkHandler(link: self))
                }
            }
        bootstrap.connect(host: host, port: port).whenComplete { [self] result in
            switch result {
            case .success(let c):
                lock.lock()
                let isStopped = stopped
                lock.unlock()
                if isStopped {
                    c.close(promise: nil)
                    return
                }
                c.closeFuture.whenComplete { [self] _ in
                    lock.lock()
                    if channel === c {
                        channel = nil
                        session = nil
                    }
                    if handshaking === c { handshaking = nil }
                    lock.unlock()
                    if wasConnected { logger.info("lost peer \(peer) at \(endpoint); reconnecting") }
                    wasConnected = false
                    retry()
                }
                if let secrets {
                    hello(on: c, secrets: secrets)
                } else {
                    ready(c, session: nil)
                }
            case .failure:
                retry()
            }
        }
    }

    // MARK: The initiator's handshake

    private var pendingHello: (channel: ObjectIdentifier, hello: PeerHello)?
    private var pendingSession: PeerSession?

    private func hello(on c: Channel, secrets: PeerSecretSource) {
        let hello = PeerHello(from: id, to: peer, nonce: PeerHandshake.nonce(), endpoint: advertise)
        lock.lock()
        let isStopped = stopped
        if !isStopped { handshaking = c }
        lock.unlock()
        if isStopped {
            c.close(promise: nil)
            return
        }
        pendingHello = (ObjectIdentifier(c), hello)
        pendingSession = nil
        write(Frame(opcode: Opcode.peerHello.rawValue, requestID: 1, body: hello.encoded()), on: c)
        c.eventLoop.scheduleTask(in: PeerLink.handshakeTimeout) { [self] in
            lock.lock()
            let done = channel === c
            lock.unlock()
            if !done && c.isActive {
                problem("no answer to the peer handshake within 5 s")
                c.close(promise: nil)
            }
        }
    }

    /// A frame the peer sent on the link's connection.
    func received(_ frame: Frame, on c: Channel) {
        if frame.flags.contains(.error) {
            let e = ErrorBody.decode(frame.body)
            problem("refused: \(e.map { "\($0.code): \($0.message)" } ?? "an undecodable error")", authentication: e?.code == .unauthenticated)
            c.close(promise: nil)
            return
        }
        guard let secrets, let pending = pendingHello, pending.channel == ObjectIdentifier(c) else {
            problem("an unexpected frame (opcode \(frame.opcode)) on the Raft connection")
            c.close(promise: nil)
            return
        }
        switch Opcode(rawValue: frame.opcode) {
        case .peerHello:
            guard let answer = try? PeerProof.decode(frame.body),
                let (proof, session) = PeerHandshake.verifyAnswer(answer, hello: pending.hello, secrets: secrets.current)
            else {
                problem("its answer to the handshake matches none of this node's peer secrets: not the same cluster secret", authentication: true)
                c.close(promise: nil)
                return
            }
            pendingSession = session
            write(Frame(opcode: Opcode.peerProof.rawValue, requestID: 2, body: proof.encoded()), on: c)
        case .peerProof where pendingSession != nil:
            let session = pendingSession
            pendingHello = nil
            pendingSession = nil
            ready(c, session: session)
        default:
            problem("an unexpected frame (opcode \(frame.opcode)) during the handshake")
            c.close(promise: nil)
        }
    }

    private func ready(_ c: Channel, session: PeerSession?) {
        lock.lock()
        let isStopped = stopped
        if !isStopped {
            channel = c
            self.session = session
            if handshaking === c { handshaking = nil }
            backoffMillis = 50
        }
        lock.unlock()
        if isStopped {
            c.close(promise: nil)
            return
        }
        if !wasConnected || lastProblem != nil {
            logger.info("connected to peer \(peer) at \(endpoint)\(session != nil ? ", authenticated" : "")")
        }
        wasConnected = true
        lastProblem = nil
    }

    /// A failed handshake; one that failed on the secret retries after 5 s, not 250 ms (the
    /// peer logs each refusal).
    private func problem(_ what: String, authentication: Bool = false) {
        if authentication {
            lock.lock()
            backoffMillis = 5_000
            lock.unlock()
        }
        guard what != lastProblem else { return }
        lastProblem = what
        logger.error("peer \(peer) at \(endpoint): \(what); retrying")
    }

    private func write(_ frame: Frame, on c: Channel) {
        var buffer = c.allocator.buffer(capacity: 128)
        buffer.writeFrame(frame)
        c.writeAndFlush(buffer, promise: nil)
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

/// Hands the frames a peer sends back on the link's connection to the link.
final class PeerLinkHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Frame
    let link: PeerLink

    init(link: PeerLink) { self.link = link }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        link.received(unwrapInboundIn(data), on: context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
