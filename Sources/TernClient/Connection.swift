// One TCP connection to one node: requests multiplexed by request id, answered in any order.
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernProtocol

/// Why a call failed: the broker's error answer, or no answer at all.
///
/// ```swift
/// do {
///     try await producer.send(Message(topic: "missing", body: []))
/// } catch ClientError.broker(let e) where e.code == BrokerError.topicNotFound {
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

    public var description: String {
        switch self {
        case .broker(let e): return e.message
        case .connectionFailed(let endpoint, let reason): return "cannot connect to \(endpoint): \(reason)"
        case .connectionClosed(let endpoint): return "connection to \(endpoint) closed"
        case .timedOut(let what): return "timed out: \(what)"
        case .badResponse(let what): return "bad response: \(what)"
        case .invalidArgument(let what): return what
        }
    }

    /// The broker's error code, when the broker answered.
    public var code: UInt16? {
        if case .broker(let e) = self { return e.code }
        return nil
    }
}

final class Connection: Sendable {
    let endpoint: String
    let channel: Channel
    private let state: NIOLockedValueBox<(next: UInt64, waiting: [UInt64: EventLoopPromise<Frame>])>

    private init(endpoint: String, channel: Channel, state: NIOLockedValueBox<(next: UInt64, waiting: [UInt64: EventLoopPromise<Frame>])>) {
        self.endpoint = endpoint
        self.channel = channel
        self.state = state
    }

    static func connect(to endpoint: String, group: EventLoopGroup, timeoutMillis: Int64 = 1000) async throws -> Connection {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else {
            throw ClientError.invalidArgument("endpoint \(endpoint) is not host:port")
        }
        let host = String(endpoint[..<colon])
        let state = NIOLockedValueBox<(next: UInt64, waiting: [UInt64: EventLoopPromise<Frame>])>((1, [:]))
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.milliseconds(timeoutMillis))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ResponseHandler(endpoint: endpoint, state: state))
                }
            }
        do {
            let channel = try await bootstrap.connect(host: host, port: port).get()
            return Connection(endpoint: endpoint, channel: channel, state: state)
        } catch {
            throw ClientError.connectionFailed(endpoint: endpoint, reason: "\(error)")
        }
    }

    var isActive: Bool { channel.isActive }

    /// Sends a request; returns the response body, or throws the broker's error.
    func call(_ op: Opcode, _ body: [UInt8], timeoutMillis: Int64) async throws -> [UInt8] {
        let promise = channel.eventLoop.makePromise(of: Frame.self)
        let id = state.withLockedValue { s -> UInt64 in
            let id = s.next
            s.next += 1
            s.waiting[id] = promise
            return id
        }
        var buffer = channel.allocator.buffer(capacity: FrameCodec.headerBytes + body.count)
        buffer.writeFrame(Frame(opcode: op.rawValue, requestID: id, body: body))
        let endpoint = self.endpoint
        let timeout = channel.eventLoop.scheduleTask(in: .milliseconds(timeoutMillis)) { [state] in
            if let p = state.withLockedValue({ $0.waiting.removeValue(forKey: id) }) {
                p.fail(ClientError.timedOut("\(op) to \(endpoint) after \(timeoutMillis) ms"))
            }
        }
        channel.writeAndFlush(buffer).whenFailure { [state] error in
            if let p = state.withLockedValue({ $0.waiting.removeValue(forKey: id) }) {
                p.fail(ClientError.connectionClosed(endpoint: endpoint))
            }
        }
        let frame: Frame
        do {
            frame = try await promise.futureResult.get()
        } catch {
            timeout.cancel()
            throw error
        }
        timeout.cancel()
        if frame.flags.contains(.error) {
            guard let e = ErrorBody.decode(frame.body) else { throw ClientError.badResponse("undecodable error body from \(endpoint)") }
            throw ClientError.broker(e)
        }
        return frame.body
    }

    func close() { channel.close(promise: nil) }
}

final class ResponseHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = Frame
    let endpoint: String
    let state: NIOLockedValueBox<(next: UInt64, waiting: [UInt64: EventLoopPromise<Frame>])>

    init(endpoint: String, state: NIOLockedValueBox<(next: UInt64, waiting: [UInt64: EventLoopPromise<Frame>])>) {
        self.endpoint = endpoint
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if let p = state.withLockedValue({ $0.waiting.removeValue(forKey: frame.requestID) }) { p.succeed(frame) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let waiting = state.withLockedValue { s -> [EventLoopPromise<Frame>] in
            let all = Array(s.waiting.values)
            s.waiting = [:]
            return all
        }
        for p in waiting { p.fail(ClientError.connectionClosed(endpoint: endpoint)) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
