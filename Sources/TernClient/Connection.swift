// One TCP connection to one node: requests multiplexed by request id, answered in any order.
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import TernProtocol
import TernProtocolNIO

/// Why a call failed: the broker's error answer, or no answer at all.
///
/// ```swift
/// do {
///     try await producer.send(Message(topic: "missing", body: []))
/// } catch ClientError.broker(let e) where e.code == ErrorCode.topicNotFound {
///     print("create the topic first: \(e.message)")
/// } catch {
///     print("not acknowledged: \(error)")   // may or may not be stored; an idempotent resend is safe
/// }
/// ```
public enum ClientError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The broker answered with an error.
    case broker(ErrorBody)
    case connectionFailed(endpoint: String, reason: String)
    case connectionClosed(endpoint: String)
    case timedOut(String)
    case badResponse(String)
    case invalidArgument(String)
    /// The TLS handshake failed in a way a retry will not mend (a certificate not trusted, or not
    /// naming the node).
    case tls(endpoint: String, reason: String)

    public var description: String {
        switch self {
        case .broker(let e): return e.message
        case .connectionFailed(let endpoint, let reason): return "cannot connect to \(endpoint): \(reason)"
        case .connectionClosed(let endpoint): return "connection to \(endpoint) closed"
        case .timedOut(let what): return "timed out: \(what)"
        case .badResponse(let what): return "bad response: \(what)"
        case .invalidArgument(let what): return what
        case .tls(let endpoint, let reason): return "TLS to \(endpoint): \(reason)"
        }
    }

    /// The broker's error code, when the broker answered.
    public var code: ErrorCode? {
        if case .broker(let e) = self { return e.code }
        return nil
    }
}

/// The client's TLS context, built once per cluster client.
struct TLSContext: Sendable {
    let context: NIOSSLContext
    /// The trust is a CA file of the user's, not the system's.
    let customCA: Bool
}

/// A request waiting for its answer.
struct Waiting {
    let promise: EventLoopPromise<Frame>
    let deadline: NIODeadline
    let op: Opcode
    let timeoutMillis: Int64
}

/// What the callers and the event loop share about one connection.
struct ConnectionState {
    var next: UInt64 = 1
    var waiting: [UInt64: Waiting] = [:]
    /// Frames written by callers and not yet handed to the channel; one event-loop task hands
    /// over everything gathered meanwhile (one wake-up and one write per burst, not per call).
    var outbox = ByteBuffer()
    var flushScheduled = false
}

final class Connection: Sendable {
    let endpoint: String
    let channel: Channel
    private let state: NIOLockedValueBox<ConnectionState>
    /// Fails calls whose time ran out; one sweep per connection instead of a timer per call.
    static let sweepMillis: Int64 = 50

    private init(endpoint: String, channel: Channel, state: NIOLockedValueBox<ConnectionState>) {
        self.endpoint = endpoint
        self.channel = channel
        self.state = state
    }

    /// Connects, and when `tls` is given, completes the TLS handshake before returning.
    static func connect(to endpoint: String, group: EventLoopGroup, tls: TLSContext? = nil, timeoutMillis: Int64 = 1000) async throws -> Connection {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else {
            throw ClientError.invalidArgument("endpoint \(endpoint) is not host:port")
        }
        let host = String(endpoint[..<colon])
        let state = NIOLockedValueBox(ConnectionState())
        // One handshake per channel the bootstrap tries (it may try several addresses of a name
        // at once); the winner's is awaited, and every watcher fails its own when torn down.
        let handshakes = NIOLockedValueBox<[ObjectIdentifier: EventLoopPromise<Void>]>([:])
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(timeoutMillis))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let done = channel.eventLoop.makePromise(of: Void.self)
                        handshakes.withLockedValue { $0[ObjectIdentifier(channel)] = done }
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: ClientTLS.serverName(host)))
                        try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(done: done, endpoint: endpoint, usesCustomCA: tls.customCA))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ResponseHandler(endpoint: endpoint, state: state))
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            let failure = ClientError.connectionFailed(endpoint: endpoint, reason: "\(error)")
            for p in handshakes.withLockedValue({ Array($0.values) }) { p.fail(failure) }
            throw failure
        }
        if tls != nil {
            guard let done = handshakes.withLockedValue({ $0[ObjectIdentifier(channel)] }) else {
                preconditionFailure("a TLS channel without its handshake watcher")
            }
            let timer = channel.eventLoop.scheduleTask(in: .milliseconds(timeoutMillis * 5)) {
                done.fail(ClientError.timedOut("TLS handshake with \(endpoint) after \(timeoutMillis * 5) ms"))
            }
            defer { timer.cancel() }
            do {
                try await done.futureResult.get()
            } catch {
                channel.close(promise: nil)
                throw error as? ClientError ?? HandshakeWatcher.classify(error, endpoint: endpoint, customCA: tls?.customCA ?? false)
            }
        }
        let sweep = channel.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(sweepMillis), delay: .milliseconds(sweepMillis)) { _ in
            let now = NIODeadline.now()
            let expired = state.withLockedValue { s -> [Waiting] in
                let ids = s.waiting.compactMap { $0.value.deadline <= now ? $0.key : nil }
                return ids.compactMap { s.waiting.removeValue(forKey: $0) }
            }
            for w in expired { w.promise.fail(ClientError.timedOut("\(w.op) to \(endpoint) after \(w.timeoutMillis) ms")) }
        }
        channel.closeFuture.whenComplete { _ in sweep.cancel() }
        return Connection(endpoint: endpoint, channel: channel, state: state)
    }

    var isActive: Bool { channel.isActive }

    /// Sends a request; returns the response body, or throws the broker's error.
    func call(_ op: Opcode, _ body: [UInt8], timeoutMillis: Int64) async throws -> [UInt8] {
        let limit = Int(FrameCodec().maxBodyBytes)
        guard body.count <= limit else {
            throw ClientError.invalidArgument("a \(op) request of \(body.count) bytes exceeds the frame limit of \(limit)")
        }
        let promise = channel.eventLoop.makePromise(of: Frame.self)
        let waiting = Waiting(promise: promise, deadline: .now() + .milliseconds(timeoutMillis), op: op, timeoutMillis: timeoutMillis)
        let schedule = state.withLockedValue { s -> Bool in
            let id = s.next
            s.next += 1
            s.waiting[id] = waiting
            s.outbox.writeFrame(Frame(opcode: op.rawValue, requestID: id, body: body))
            defer { s.flushScheduled = true }
            return !s.flushScheduled
        }
        if schedule { channel.eventLoop.execute { [self] in flushOutbox() } }
        let frame = try await promise.futureResult.get()
        if frame.flags.contains(.error) {
            guard let e = ErrorBody.decode(frame.body) else { throw ClientError.badResponse("undecodable error body from \(endpoint)") }
            throw ClientError.broker(e)
        }
        return frame.body
    }

    /// On the event loop: hands every frame gathered since the last flush to the channel. A
    /// failed write fails every call still waiting (the connection is going down).
    private func flushOutbox() {
        let buffer = state.withLockedValue { s -> ByteBuffer in
            s.flushScheduled = false
            defer { s.outbox.clear() }
            return s.outbox
        }
        guard buffer.readableBytes > 0 else { return }
        let endpoint = self.endpoint
        channel.writeAndFlush(buffer).whenFailure { [state] _ in
            let all = state.withLockedValue { s -> [Waiting] in
                defer { s.waiting = [:] }
                return Array(s.waiting.values)
            }
            for w in all { w.promise.fail(ClientError.connectionClosed(endpoint: endpoint)) }
        }
    }

    func close() { channel.close(promise: nil) }
}

final class ResponseHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = Frame
    let endpoint: String
    let state: NIOLockedValueBox<ConnectionState>

    init(endpoint: String, state: NIOLockedValueBox<ConnectionState>) {
        self.endpoint = endpoint
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if let w = state.withLockedValue({ $0.waiting.removeValue(forKey: frame.requestID) }) { w.promise.succeed(frame) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let waiting = state.withLockedValue { s -> [Waiting] in
            let all = Array(s.waiting.values)
            s.waiting = [:]
            return all
        }
        for w in waiting { w.promise.fail(ClientError.connectionClosed(endpoint: endpoint)) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
