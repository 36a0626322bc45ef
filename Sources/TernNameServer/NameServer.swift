// `tern nameserver`: a stateless route directory (docs/architecture.md, "Many groups"). Every
// broker group's leader registers its members and topics here every few seconds; clients ask it
// which groups hold a topic's queues. Instances never talk to each other and keep nothing on
// disk: a client asks any of them, and keeps using the routes it has while none answers.
import Crypto
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernProtocol
import TernProtocolNIO
import TernServer

public struct NameServerConfig: Sendable {
    /// host:port to listen on (RocketMQ's name servers use port 9876).
    public var listen: String
    /// How registrations are checked.
    public var check: RegistrationCheck
    /// A group is dropped when no registration came for this long.
    public var expiryMillis: UInt64 = 40_000
    /// How often expired groups are looked for.
    public var scanMillis: Int64 = 1_000
    /// For this long after it starts, the name server's routes are marked incomplete: a group
    /// registers every 10 s, so one restarted a moment ago may not know every group yet.
    public var warmupMillis: UInt64 = 15_000
    /// Connections at once; one more is closed at once. A connection that sends nothing for
    /// `idleSeconds` (a stalled frame included) is closed.
    public var maxConnections = 1024
    public var idleSeconds: Int64 = 60
    public init(listen: String, check: RegistrationCheck) {
        self.listen = listen
        self.check = check
    }
}

/// What a registration must be signed with.
public enum RegistrationCheck: Sendable, Equatable {
    /// Nothing: unsigned registrations are taken (`--insecure`, never on a network others reach).
    case unsigned
    /// The keys of a registration key file (`--registration-key`), read again when it changes.
    case keyFile(String)
    /// The keys derived from the groups' peer-secret file (`--peer-secret`), read again when it
    /// changes.
    case peerSecret(String)
    /// These keys.
    case keys(PeerSecrets)

    /// The keys as of each call (nil: unsigned taken); throws when a file cannot be used.
    public func source(logger: Logger) throws -> (@Sendable () -> PeerSecrets)? {
        switch self {
        case .unsigned: return nil
        case .keys(let k): return { k }
        case .keyFile(let path):
            let file = try PeerSecretSource(path: path, what: "registration key file", logger: logger)
            return { file.current }
        case .peerSecret(let path):
            let file = try PeerSecretSource(path: path, logger: logger)
            return { RegistrationKey.derive(from: file.current) }
        }
    }
}

/// Registration keys (docs/security.md, "Name servers"): leaders sign registrations with a key
/// derived from the cluster secret, so a name server holds that key only, never the secret peers
/// authenticate with: one taken over can forge routes, not a member's Raft traffic.
public enum RegistrationKey {
    static let info = Array("tern-registration-key-v1".utf8)

    /// The registration key of one cluster secret: HKDF-SHA256 of it, as 64 hex digits (the
    /// digits' bytes are the HMAC key, as a peer secret's are).
    public static func derive(from secret: [UInt8]) -> String {
        let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: secret), info: info, outputByteCount: 32)
        return key.withUnsafeBytes { Array($0) }.map { String(format: "%02x", $0) }.joined()
    }

    /// The keys of every secret of a peer-secret file, in its order (during a rotation a name
    /// server takes registrations signed under either).
    public static func derive(from secrets: PeerSecrets) -> PeerSecrets {
        guard let keys = try? PeerSecrets(secrets: secrets.secrets.map { Array(derive(from: $0).utf8) }) else {
            preconditionFailure("64 hex digits a key always pass the length check")
        }
        return keys
    }

    /// A registration key file, as `tern nameserver key` writes it: a comment, then one key a line.
    public static func file(for secrets: PeerSecrets) -> String {
        "# tern name server registration key (tern nameserver key); derived from the cluster secret, which it does not reveal\n"
            + derive(from: secrets).secrets.map { String(decoding: $0, as: UTF8.self) + "\n" }.joined()
    }
}

extension GroupRegistration {
    /// Signs the registration with the registration key (`RegistrationKey.derive`).
    public mutating func sign(secret: [UInt8]) {
        mac = Array(HMAC<SHA256>.authenticationCode(for: signedBytes, using: SymmetricKey(data: secret)))
    }

    /// Whether the mac is right under one of `secrets` (compared in constant time).
    public func isSigned(by secrets: PeerSecrets) -> Bool {
        let bytes = signedBytes
        return secrets.secrets.contains { HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: bytes, using: SymmetricKey(data: $0)) }
    }
}

/// A running name server.
public final class NameServer: Sendable {
    public let config: NameServerConfig
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let registry: NIOLockedValueBox<NameRegistry>
    let startedAt = NameServer.nowMillis
    let connections = NIOLockedValueBox(0)
    private let channel = NIOLockedValueBox<Channel?>(nil)
    private let scan = NIOLockedValueBox<RepeatedTask?>(nil)
    /// The keys registrations are checked with now (set by `start`; nil: unsigned taken).
    private let keys = NIOLockedValueBox<(@Sendable () -> PeerSecrets)?>(nil)

    public init(config: NameServerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        registry = NIOLockedValueBox(NameRegistry(expiryMillis: config.expiryMillis))
    }

    static var nowMillis: UInt64 { NIODeadline.now().uptimeNanoseconds / 1_000_000 }

    /// Binds and starts answering; returns the port bound.
    public func start() throws -> Int {
        guard let (host, port) = parseEndpoint(config.listen) else { throw ServerError("--listen \(config.listen) is not host:port") }
        let source = try config.check.source(logger: logger)
        keys.withLockedValue { $0 = source }
        let server = self
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(server.config.idleSeconds)))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(NameServerHandler(server: server))
                }
            }
        let ch: Channel
        do {
            ch = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            throw ServerError("cannot listen on \(config.listen): \(error)")
        }
        channel.withLockedValue { $0 = ch }
        let task = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(config.scanMillis), delay: .milliseconds(config.scanMillis)) { _ in
            let gone = server.registry.withLockedValue { $0.expire(now: Self.nowMillis) }
            for g in gone { server.logger.notice("broker group \(g) expired: no registration for \(server.config.expiryMillis / 1000) s") }
        }
        scan.withLockedValue { $0 = task }
        return ch.localAddress?.port ?? port
    }

    /// Closes the listener and waits for the event loop to finish.
    public func stop() {
        scan.withLockedValue { $0?.cancel() }
        if let ch = channel.withLockedValue({ $0 }) { try? ch.close().wait() }
        try? group.syncShutdownGracefully()
    }

    /// Blocks until the listener closes.
    public func wait() throws {
        try channel.withLockedValue { $0 }?.closeFuture.wait()
    }

    /// Milliseconds since 1970 by this machine's clock (registrations' `sentAt` are checked against it).
    static var wallMillis: UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    /// Answers one request (the handler's work, on the event loop).
    func answer(_ op: Opcode?, _ body: [UInt8], from peer: String) -> Result<[UInt8], ErrorBody> {
        do {
            switch op {
            case .registerGroup:
                let r = try GroupRegistration.decode(body)
                if let problem = BrokerGroupName.problem(r.group) { return .failure(ErrorBody(code: ErrorCode.badRequest, message: problem)) }
                // Checked under the keys as of now (a key file is read again when it changes);
                // before `start` set them, nothing passes.
                let current = keys.withLockedValue { $0 }?()
                if config.check != .unsigned, !(current.map { r.isSigned(by: $0) } ?? false) {
                    logger.warning("refused a registration of group \(r.group) from \(peer): not signed with the registration key")
                    return .failure(
                        ErrorBody(
                            code: ErrorCode.unauthenticated,
                            message: "registration of \(r.group) is not signed with this name server's registration key (derived from the cluster secret)"))
                }
                // Sent within the expiry by this clock: a registration recorded and replayed later is
                // refused (the clocks of groups and name servers must agree within the expiry).
                let wall = Self.wallMillis
                guard r.sentAt + config.expiryMillis >= wall && r.sentAt <= wall + config.expiryMillis else {
                    logger.warning("refused a registration of group \(r.group) from \(peer): sent at \(r.sentAt), this clock reads \(wall)")
                    return .failure(
                        ErrorBody(
                            code: ErrorCode.badRequest,
                            message:
                                "registration of \(r.group) was sent at \(r.sentAt) ms, more than \(config.expiryMillis / 1000) s from this name server's clock (\(wall) ms)"
                        ))
                }
                let (outcome, known) = registry.withLockedValue { reg -> (NameRegistry.Outcome, Bool) in
                    let known = reg.entries[r.group] != nil
                    return (reg.register(r, now: Self.nowMillis), known)
                }
                if outcome == .full {
                    return .failure(
                        ErrorBody(code: ErrorCode.busy, message: "this name server holds \(registry.withLockedValue { $0.maxGroups }) groups already"))
                }
                if outcome == .accepted && !known {
                    logger.notice("broker group \(r.group) registered: leader \(r.leader) term \(r.term), \(r.members.count) members, \(r.topics.count) topics")
                }
                return .success(Empty().encoded())
            case .topicRoute:
                let name = try NameRequest.decode(body).name
                let now = Self.nowMillis
                var route = registry.withLockedValue { $0.route(name, now: now) }
                route.complete = now &- startedAt >= config.warmupMillis
                // Starting up, "none" is not an answer: an empty, incomplete route says so.
                if !name.isEmpty && route.groups.isEmpty && route.complete {
                    return .failure(ErrorBody(code: ErrorCode.topicNotFound, message: "no live broker group holds topic \(name)"))
                }
                return .success(route.encoded())
            case .listBrokerGroups:
                _ = try Empty.decode(body)
                let now = Self.nowMillis
                let live = registry.withLockedValue { $0.live(now: now) }
                return .success(BrokerGroupList(groups: live.map(\.registration), ageMillis: live.map { now &- $0.receivedAt }).encoded())
            case .some(let other):
                return .failure(
                    ErrorBody(
                        code: ErrorCode.badRequest,
                        message: "\(other) goes to a broker node; this is a name server (ask it for a topic's route, then the groups' nodes)"))
            case nil:
                return .failure(ErrorBody(code: ErrorCode.unknownOpcode, message: "unknown opcode"))
            }
        } catch {
            return .failure(ErrorBody(code: ErrorCode.badBody, message: error.description))
        }
    }
}

/// One connection: each request frame answered in order. Reading stops while the connection's
/// answers are not being taken (it cannot pile them up here); an idle one is closed.
final class NameServerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Frame
    typealias OutboundOut = ByteBuffer
    let server: NameServer
    private var counted = false

    init(server: NameServer) { self.server = server }

    func channelActive(context: ChannelHandlerContext) {
        let limit = server.config.maxConnections
        let admitted = server.connections.withLockedValue { n -> Bool in
            guard n < limit else { return false }
            n += 1
            return true
        }
        counted = admitted
        if !admitted {
            server.logger.warning("closing a connection from \(context.remoteAddress?.description ?? "?"): \(limit) connections already")
            context.close(promise: nil)
            return
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted {
            counted = false
            server.connections.withLockedValue { $0 -= 1 }
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.flags.contains(.response) { return }
        let peer = context.remoteAddress?.description ?? "?"
        var result = server.answer(Opcode(rawValue: frame.opcode), frame.body, from: peer)
        if case .success(let body) = result, body.count > Int(FrameCodec().maxBodyBytes) {
            result = .failure(
                ErrorBody(code: ErrorCode.badRequest, message: "the answer of \(body.count) bytes exceeds a frame; ask for one topic's route instead"))
        }
        let reply: Frame
        switch result {
        case .success(let body): reply = Frame(opcode: frame.opcode, flags: .response, requestID: frame.requestID, body: body)
        case .failure(let e): reply = Frame(opcode: frame.opcode, flags: [.response, .error], requestID: frame.requestID, body: e.encode())
        }
        var buffer = context.channel.allocator.buffer(capacity: FrameCodec.headerBytes + reply.body.count)
        buffer.writeFrame(reply)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        if !context.channel.isWritable { context.channel.setOption(.autoRead, value: false).whenFailure { _ in } }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { context.channel.setOption(.autoRead, value: true).whenFailure { _ in } }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? FrameError {
            var buffer = context.channel.allocator.buffer(capacity: 64)
            buffer.writeFrame(ErrorBody.badFrameResponse(e))
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        context.close(promise: nil)
    }
}
