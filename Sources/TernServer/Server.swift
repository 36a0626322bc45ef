// `tern serve`: the shell around one `Node`. Threads:
//  - NIO's event loop: accepts client and peer connections, decodes frames, writes replies;
//  - the node thread: owns the node and its storage device. It takes everything that arrived
//    (requests, peer messages, closed connections), feeds it to the node as one batch, sends
//    what the node returns, ticks Raft by the monotonic clock, and while a write batch is on its
//    way to disk blocks on its completion, so requests arriving meanwhile form the next batch
//    (group commit without a timer).
// Clients and peers use the same listening port; a frame's opcode tells them apart.
import Foundation
import Logging
import NIOCore
import NIOPosix
import TernNode
import TernProtocol
import TernRaft
import TernStorage
import CTernIO

public struct ServerConfig: Sendable {
    public var id: NodeID
    /// host:port for clients and peers.
    public var listen: String
    /// Every member's endpoint, this node's included.
    public var peers: [NodeID: String]
    public var dataDirectory: String
    public var io: IOBackendChoice = .auto
    /// One Raft tick (milliseconds). Election timeout = `electionTicks` ticks plus up to as many again.
    public var tickMillis: UInt64 = 50
    public var electionTicks = 10
    public var heartbeatTicks = 2
    public var autoCreateTopics = false
    public var maxMessageBytes = 4 << 20
    /// Where this node dials each peer, when not at its `peers` endpoint (a chaos test's proxies).
    public var dial: [NodeID: String] = [:]
    /// Deliberate bugs, for showing that the chaos checker catches them. Never in production.
    public var plantedBugs: PlantedBugs = []
    /// Installs the storage fault hook reading this control file (chaos tests only).
    public var faultFile: String?
    /// Transaction checks: first after, then every, at most (then rollback).
    public var transactionCheckFirstMillis: UInt64 = 6_000
    public var transactionCheckIntervalMillis: UInt64 = 30_000
    public var transactionMaxChecks: UInt32 = 15
    public var segmentBytes = 256 << 20
    public var lostDisk = false
    /// Cut a corrupt log at the damage instead of refusing to open.
    public var repairCorruption = false

    public init(id: NodeID, listen: String, peers: [NodeID: String], dataDirectory: String) {
        self.id = id
        self.listen = listen
        self.peers = peers
        self.dataDirectory = dataDirectory
    }
}

/// Splits "host:port".
public func parseEndpoint(_ text: String) -> (host: String, port: Int)? {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), port > 0, port < 65536 else { return nil }
    let host = String(text[..<colon])
    return host.isEmpty ? nil : (host, port)
}

enum Input {
    case request(ClientRef, Frame)
    case peer(Message)
    case closed(UInt64)
    case stop
}

/// What the event loop hands the node thread. The node thread sleeps in `poll` on the inbox's
/// eventfd and on the storage device's completion descriptor at once, so a disk completion,
/// a request and a peer's message each wake it directly, and it never blocks on the disk while
/// messages wait.
final class Inbox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Input] = []
    /// Set while the node thread is about to sleep or sleeping: only then does a push write to
    /// the eventfd (one syscall per wake-up, not per message).
    private var sleeping = false
    private let wakeup = tern_eventfd_create()

    deinit { if wakeup >= 0 { close(wakeup) } }

    func push(_ input: Input) {
        lock.lock()
        items.append(input)
        let wake = sleeping
        sleeping = false
        lock.unlock()
        if wake { tern_eventfd_signal(wakeup) }
    }

    /// Everything queued, and whether `device` (a completion descriptor, or -1) became readable.
    /// Waits up to `timeoutMillis` when nothing is queued.
    func take(timeoutMillis: UInt64, device: Int32) -> (inputs: [Input], disk: Bool) {
        lock.lock()
        if items.isEmpty && timeoutMillis > 0 {
            sleeping = true
            lock.unlock()
            let ready = tern_wait_readable(wakeup, device, Int32(min(timeoutMillis, 60_000)))
            if ready & 1 != 0 { tern_eventfd_drain(wakeup) }
            if ready & 2 != 0 { tern_eventfd_drain(device) }
            lock.lock()
            sleeping = false
            let out = items
            items = []
            lock.unlock()
            return (out, ready & 2 != 0)
        }
        let out = items
        items = []
        lock.unlock()
        // Not sleeping: look at the device without waiting.
        var disk = false
        if device >= 0, tern_wait_readable(-1, device, 0) & 2 != 0 {
            tern_eventfd_drain(device)
            disk = true
        }
        return (out, disk)
    }
}

/// Open client and peer connections by id, for the node thread's replies.
final class Connections: @unchecked Sendable {
    private let lock = NSLock()
    private var channels: [UInt64: Channel] = [:]
    private var next: UInt64 = 1

    func add(_ c: Channel) -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        let id = next
        next += 1
        channels[id] = c
        return id
    }

    func remove(_ id: UInt64) {
        lock.lock()
        channels[id] = nil
        lock.unlock()
    }

    func get(_ id: UInt64) -> Channel? {
        lock.lock()
        defer { lock.unlock() }
        return channels[id]
    }

    var all: [Channel] {
        lock.lock()
        defer { lock.unlock() }
        return Array(channels.values)
    }
}

public final class TernServer: @unchecked Sendable {
    public let config: ServerConfig
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let inbox = Inbox()
    let connections = Connections()
    var links: [NodeID: PeerLink] = [:]
    var serverChannel: Channel?
    private var nodeThread: Thread?
    private let finished = NSCondition()
    private var done = false
    private var exitError: Error?

    public init(config: ServerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// Opens storage, recovers, binds, and starts the node thread. Throws when any of it fails.
    public func start() throws {
        guard let (host, port) = parseEndpoint(config.listen) else { throw ServerError("--listen \(config.listen) is not host:port") }
        let members = config.peers.keys.sorted()
        guard members.contains(config.id) else { throw ServerError("--peers does not name this node (\(config.id))") }
        var raft = RaftConfig(id: config.id, members: members)
        raft.electionTimeoutTicks = config.electionTicks
        raft.electionJitterTicks = config.electionTicks
        raft.heartbeatIntervalTicks = config.heartbeatTicks
        raft.plantedBugs = config.plantedBugs
        if !config.plantedBugs.isEmpty { logger.warning("PLANTED BUGS ON: this node is deliberately broken (a checker test)") }
        var nodeConfig = NodeConfig(raft: raft, endpoints: config.peers)
        nodeConfig.broker.autoCreateTopics = config.autoCreateTopics
        nodeConfig.broker.maxMessageBytes = config.maxMessageBytes
        nodeConfig.broker.transactionCheckFirstMillis = config.transactionCheckFirstMillis
        nodeConfig.broker.transactionCheckIntervalMillis = config.transactionCheckIntervalMillis
        nodeConfig.broker.transactionMaxChecks = config.transactionMaxChecks

        let log = logger
        var device = try makeStorageDevice(config.io, log: { log.notice("\($0)") })
        if let path = config.faultFile {
            device = FaultHookDevice(device, controlPath: path)
            logger.warning("storage fault hook installed: \(path) (for chaos tests)")
        }
        logger.info("storage: \(device.backendName) at \(config.dataDirectory)")
        var options = CommitlogOptions()
        options.segmentSizeBytes = config.segmentBytes
        options.repairCorruption = config.repairCorruption
        options.maxEntryBodyBytes = max(options.maxEntryBodyBytes, config.maxMessageBytes + (1 << 20))
        let seed = UInt64(truncatingIfNeeded: DispatchTime.now().uptimeNanoseconds) ^ UInt64(truncatingIfNeeded: config.id.name.hashValue)
        let started = monotonicMillis()
        let node = try Node(config: nodeConfig, device: device, directory: config.dataDirectory, logOptions: options, seed: seed, lostDisk: config.lostDisk)
        for line in node.replica.log.recoveryReport { logger.info("recovery: \(line)") }
        // The broker state is rebuilt by applying the log again, as the commit index (which a
        // leader tells) reaches each entry.
        // Join the group only once segment files are ready, so the first append does not stall
        // behind zero-filling a segment (docs/storage.md).
        device.waitForBackgroundWork()
        logger.info("opened log \(node.replica.log.firstIndex)...\(node.replica.log.lastIndex) in \(monotonicMillis() - started) ms")

        for (peer, endpoint) in config.peers where peer != config.id {
            links[peer] = PeerLink(peer: peer, endpoint: config.dial[peer] ?? endpoint, group: group, logger: logger)
        }
        let inbox = self.inbox
        let connections = self.connections
        let codec = FrameCodec(maxBodyBytes: UInt32(config.maxMessageBytes + (4 << 20)))
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(codec: codec)))
                    try channel.pipeline.syncOperations.addHandler(InboundHandler(inbox: inbox, connections: connections, logger: log))
                }
            }
        serverChannel = try bootstrap.bind(host: host, port: port).wait()
        logger.info("\(config.id) listening on \(config.listen); members \(members.map { "\($0)=\(config.peers[$0]!)" }.joined(separator: ","))")
        for link in links.values { link.start() }

        let owned = Owned(node: node, device: device)
        let thread = Thread { [self] in
            do {
                try self.runNode(owned.node, device: owned.device)
            } catch {
                self.logger.critical("node stopped: \(error)")
                self.exitError = error
            }
            self.finished.lock()
            self.done = true
            self.finished.broadcast()
            self.finished.unlock()
        }
        thread.name = "tern-node"
        thread.stackSize = 8 << 20
        nodeThread = thread
        thread.start()
    }

    /// Asks the node thread to finish: in-flight disk batches complete, the log closes.
    public func stop() {
        inbox.push(.stop)
    }

    /// Blocks until the node thread ended, then closes sockets. Throws what stopped the node.
    public func wait() throws {
        finished.lock()
        while !done { finished.wait() }
        finished.unlock()
        for link in links.values { link.stop() }
        try? serverChannel?.close().wait()
        for c in connections.all { c.close(promise: nil) }
        try? group.syncShutdownGracefully()
        if let e = exitError { throw e }
    }

    // MARK: The node thread

    private func runNode(_ node: Node, device: any StorageDevice) throws {
        let tick = config.tickMillis
        var nextTick = monotonicMillis() + tick
        var stopping = false
        let log = node.replica.log
        var seen = (role: node.role, term: node.replica.raft.term, leader: node.replica.raft.leader)
        // With a completion descriptor the thread waits for the disk and for messages at once;
        // without one (-1) it waits in `pump` while a batch is in flight, as group commit needs.
        let completions = device.completionDescriptor
        while !stopping {
            let r = node.replica.raft
            if (r.role, r.term, r.leader) != seen {
                seen = (r.role, r.term, r.leader)
                logger.notice("term \(r.term): \(r.role)\(r.role == .leader ? "" : ", leader \(r.leader?.name ?? "unknown")")")
            }
            let blockInPump = completions < 0 && log.isFlushing
            let waitMillis: UInt64 = blockInPump ? 0 : max(nextTick.subtractingClamped(monotonicMillis()), 1)
            let (batch, diskReady) = inbox.take(timeoutMillis: waitMillis, device: completions)
            let now = wallMillis()
            var requests: [(ClientRef, Frame)] = []
            var messages: [Message] = []
            for input in batch {
                switch input {
                case .request(let c, let f): requests.append((c, f))
                case .peer(let m): messages.append(m)
                case .closed(let c): node.connectionClosed(c)
                case .stop: stopping = true
                }
            }
            if !messages.isEmpty { send(try node.receive(messages, now: now)) }
            if !requests.isEmpty { send(try node.handle(requests, now: now)) }
            let mono = monotonicMillis()
            if mono >= nextTick {
                send(try node.tick(now: now))
                nextTick = mono >= nextTick + 10 * tick ? mono + tick : nextTick + tick
            }
            if blockInPump {
                _ = try log.pump(wait: true)
                send(try node.diskCompleted(now: wallMillis()))
            } else if diskReady && log.isFlushing {
                send(try node.diskCompleted(now: wallMillis()))
            }
        }
        logger.info("stopping: waiting for \(device.batchesInFlight) disk batches")
        while log.isFlushing { _ = try log.pump(wait: true) }
        try log.close()
        device.shutdown()
        logger.info("stopped; log closed at index \(log.lastIndex)")
    }

    private func send(_ out: NodeOutput) {
        if !out.messages.isEmpty {
            var byPeer: [NodeID: ByteBuffer] = [:]
            for m in out.messages {
                byPeer[m.to, default: ByteBuffer()].writeFrame(Frame(opcode: Opcode.raft.rawValue, requestID: 0, body: PeerCodec.encode(m)))
            }
            for (peer, buffer) in byPeer { links[peer]?.send(buffer) }
        }
        if !out.replies.isEmpty {
            var byConnection: [UInt64: ByteBuffer] = [:]
            for r in out.replies {
                let frame: Frame
                switch r.result {
                case .success(let body): frame = Frame(opcode: r.opcode, flags: .response, requestID: r.to.requestID, body: body)
                case .failure(let e): frame = Frame(opcode: r.opcode, flags: [.response, .error], requestID: r.to.requestID, body: e.encode())
                }
                byConnection[r.to.connection, default: ByteBuffer()].writeFrame(frame)
            }
            for (id, buffer) in byConnection { connections.get(id)?.writeAndFlush(buffer, promise: nil) }
        }
    }
}

/// Hands the node and its device to the node thread, which alone uses them from then on.
struct Owned: @unchecked Sendable {
    let node: Node
    let device: any StorageDevice
}

public struct ServerError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

extension UInt64 {
    func subtractingClamped(_ other: UInt64) -> UInt64 { self > other ? self - other : 0 }
}

func monotonicMillis() -> UInt64 { DispatchTime.now().uptimeNanoseconds / 1_000_000 }
func wallMillis() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

/// Decoded frames of one connection into the inbox; a bad frame gets an error response and the
/// connection is closed.
final class InboundHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Frame
    typealias OutboundOut = ByteBuffer
    let inbox: Inbox
    let connections: Connections
    let logger: Logger
    var id: UInt64 = 0

    init(inbox: Inbox, connections: Connections, logger: Logger) {
        self.inbox = inbox
        self.connections = connections
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        id = connections.add(context.channel)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connections.remove(id)
        inbox.push(.closed(id))
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.flags.contains(.response) { return }
        if frame.opcode == Opcode.raft.rawValue {
            do {
                inbox.push(.peer(try PeerCodec.decode(frame.body)))
            } catch {
                logger.warning("dropping a malformed Raft message from \(context.remoteAddress?.description ?? "?"): \(error)")
                refuse(context: context, Frame(opcode: frame.opcode, flags: [.response, .error], requestID: frame.requestID, body: ErrorBody(code: ErrorBody.badBody, message: "\(error)").encode()))
            }
            return
        }
        inbox.push(.request(ClientRef(connection: id, requestID: frame.requestID), frame))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? FrameError {
            logger.warning("closing \(context.remoteAddress?.description ?? "?"): \(e)")
            refuse(context: context, ErrorBody.badFrameResponse(e))
        } else {
            context.close(promise: nil)
        }
    }

    private func refuse(context: ChannelHandlerContext, _ frame: Frame) {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeFrame(frame)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
    }
}
