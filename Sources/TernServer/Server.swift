// `tern serve`: the shell around one `Node`, all of it on one NIO event loop thread: it accepts
// client and peer connections, decodes frames, feeds the node, writes what the node returns,
// ticks Raft from the monotonic clock (every tick that fell due, also after a pause), and learns
// of finished disk batches from the storage device's completion eventfd, which the loop watches
// like a socket. What arrives during one turn of the loop (from every connection) is fed to the
// node as one batch after the turn's reads: one Raft proposal for all its writes. While a disk
// batch is in flight, appends are staged and leave as the next batch when it completes (group
// commit without a timer). One thread, no hand-offs: a request, a peer's message and a disk
// completion each cost one wake-up of this thread, and replies leave from the thread that read
// the request (docs/architecture.md).
// Clients and peers use the same listening port; a frame's opcode tells them apart, and a peer's
// Raft frames are taken only once its connection proved it holds the cluster secret
// (PeerAuth.swift, docs/security.md).
import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernNode
import TernProtocol
import TernProtocolNIO
import TernRaft
import TernStorage

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
    /// `--grpc-listen`: where this node's RocketMQ 5 gRPC front (run beside the server by the
    /// launcher) listens and is reached (nil: none); the server only reports it in its status.
    public var grpcListen: String?
    /// The CA the front trusts to reach the group over TLS (nil: the system's CAs).
    public var grpcTLSCAPath: String?
    public var grpcEndpoint: String?
    /// `--http-listen`: where this node's HTTP listener (metrics, health, admin API, console)
    /// listens; nil: none. Started beside the server by the launcher (the TernOps target).
    public var httpListen: String?
    /// `--broker-group` and `--nameservers` (docs/architecture.md, "Many groups"; TernLauncher registers).
    public var brokerGroup = "g1"
    public var nameservers: [String] = []
    // Test hooks, reachable only through `@_spi(Testing) import TernServer` (the chaos
    // harness's `tern-chaos serve`); the production `tern serve` cannot set them.
    /// Where this node dials each peer, when not at its endpoint (a chaos test's relays), by the
    /// peer's id or by its endpoint (as `NodeID("host:port")`: a member replaced by a new id at
    /// the same address keeps its relay).
    @_spi(Testing) public var dial: [NodeID: String] = [:]
    /// Deliberate bugs, for showing that the chaos checker catches them.
    @_spi(Testing) public var plantedBugs: PlantedBugs = []
    /// Installs the storage fault hook reading this control file.
    @_spi(Testing) public var faultFile: String?
    /// Transaction checks: first after, then every, at most (then rollback).
    public var transactionCheckFirstMillis: UInt64 = 6_000
    public var transactionCheckIntervalMillis: UInt64 = 30_000
    public var transactionMaxChecks: UInt32 = 15
    public var segmentBytes = 256 << 20
    public var lostDisk = false
    /// `--join HOST:PORT`: a new node that waits to be added (it has no founding configuration;
    /// `peers` is empty). The address of a current member, asked for the group's members at start.
    public var join: String?
    /// Cut a corrupt log at the damage instead of refusing to open.
    public var repairCorruption = false
    /// A broker snapshot at every multiple of this many entries (0: none; docs/operations.md).
    public var snapshotEveryEntries: UInt64 = 100_000
    /// ... and every this many bytes of entries applied (0: none).
    public var snapshotEveryBytes: UInt64 = 64 << 20
    /// Retention (docs/operations.md): log segments older than this go; the oldest go while the
    /// log is larger than `retentionBytes` (nil: no size limit).
    public var retentionHours: Double = 72
    public var retentionBytes: UInt64?
    /// Disk use above which retention deletes early, and above which sends are refused.
    public var diskSoftLimit = 0.75
    public var diskHardLimit = 0.90
    /// The cluster secret file (docs/security.md). A group of more than one member needs it
    /// unless `insecurePeers` says otherwise.
    public var peerSecretPath: String?
    /// Accept Raft traffic from any connection, unauthenticated (said in the log).
    public var insecurePeers = false
    /// The certificate chain and private key (PEM) served to clients over TLS; clients connect
    /// without TLS when these are nil (docs/security.md).
    public var tlsCertPath: String?
    public var tlsKeyPath: String?
    /// Check every client request against the replicated accounts (docs/security.md).
    public var acl = false
    /// A credentials file whose account has every right on this node (makes the first accounts).
    public var aclAdminPath: String?
    /// Connections, outstanding requests per connection, slow senders (docs/operations.md).
    public var limits = ConnectionLimits()
    /// Where the loop's latencies and batch sizes are recorded (swift-metrics); nil: not measured.
    public var metrics: (any MetricsFactory)?

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
    case authenticated(UInt64, Principal)
    /// A peer authenticated and announced where it listens.
    case peerEndpoint(NodeID, String)
}

public final class TernServer: @unchecked Sendable {
    public let config: ServerConfig
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    /// The one loop everything runs on.
    let loop: EventLoop
    let connections: Connections
    var links: [NodeID: PeerLink] = [:]
    /// Peers' endpoints announced in their handshakes (loop only): a node not yet in its own
    /// configuration answers them there. The configuration links to its members.
    var announced: [NodeID: String] = [:]
    /// The configuration the links were last made for (loop only).
    var linkedMembership: Membership?
    var linkedLeader: NodeID?
    /// The cluster secret; nil when peers are not authenticated (a group of one, or
    /// `--insecure-peers`). Set in `start`, before any connection.
    private(set) var peerSecrets: PeerSecretSource?
    /// The `--acl-admin` account. Set in `start`, before any connection.
    private(set) var rootAccount: RootAccount?
    var serverChannel: Channel?
    private let finished = NSCondition()
    private var done = false
    private var exitError: Error?

    // Touched only on `loop`, after `start`.
    /// Touched only on `loop` (inbound connections run on it too).
    var node: Node!
    var device: (any StorageDevice)!
    private var pending: [Input] = []
    private var turnScheduled = false
    var stopping = false
    private var tickTask: RepeatedTask?
    private var completionChannel: Channel?
    /// The device has no completion descriptor: each step waits for its disk batch.
    private var waitsForDisk = false
    private var seen: (role: Role, term: UInt64, leader: NodeID?)?
    /// Ticks are counted on the monotonic clock from here; `ticksDelivered` of them reached the node.
    private var tickOrigin: UInt64 = 0
    private var ticksDelivered: UInt64 = 0
    private var nextDiskMeasure: UInt64 = 0
    /// The accounts' secrets as of the last step (and the root account's), for the RocketMQ
    /// front, which checks its clients' signatures off the loop.
    private let publishedSecrets = NIOLockedValueBox<[String: [UInt8]]>([:])
    private let publishedAdmins = NIOLockedValueBox<Set<String>>([])
    /// Which broker (an install or restore replaces it) and which of its account versions.
    private var publishedVersion: (broker: ObjectIdentifier, version: UInt64)?
    let meter: LoopMeter?

    public init(config: ServerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        connections = Connections(limits: config.limits)
        meter = config.metrics.map { LoopMeter(factory: $0) }
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
    }

    /// Opens storage, recovers, puts the node on the event loop and binds. Throws when any of it fails.
    public func start() throws {
        guard let (host, port) = parseEndpoint(config.listen) else { throw ServerError("--listen \(config.listen) is not host:port") }
        let members = config.peers.keys.sorted()
        if config.join != nil {
            guard members.isEmpty else { throw ServerError("--join and --peers exclude each other: a joining node learns its group's members") }
            if config.insecurePeers {
                throw ServerError(
                    "--join needs peer authentication (--peer-secret): a joining node learns its peers' addresses from their authenticated handshakes")
            }
        } else {
            guard members.contains(config.id) else { throw ServerError("--peers does not name this node (\(config.id))") }
        }
        peerSecrets = try peerAuthentication(members: members)
        raiseOpenFileLimit()
        let tls: ServerTLS?
        switch (config.tlsCertPath, config.tlsKeyPath) {
        case (let cert?, let key?): tls = try ServerTLS(certPath: cert, keyPath: key, logger: logger)
        case (nil, nil): tls = nil
        default: throw ServerError("--tls-cert and --tls-key go together")
        }
        rootAccount = try config.aclAdminPath.map { try RootAccount.load(path: $0) }
        if config.acl {
            logger.notice(
                "access control on: every client request is checked against the replicated accounts\(rootAccount.map { "; \($0.accessKey) (--acl-admin) has every right" } ?? "")"
            )
            if tls == nil {
                logger.warning("access control without client TLS (--tls-cert): secrets never cross the wire, but a connection can be taken over on the path")
            }
        } else if rootAccount != nil {
            throw ServerError("--acl-admin is for a node started with --acl")
        }
        var raft = RaftConfig(id: config.id, members: members)
        raft.electionTimeoutTicks = config.electionTicks
        raft.electionJitterTicks = config.electionTicks
        raft.heartbeatIntervalTicks = config.heartbeatTicks
        raft.plantedBugs = config.plantedBugs
        if !config.plantedBugs.isEmpty { logger.warning("PLANTED BUGS ON: this node is deliberately broken (a checker test)") }
        var nodeConfig = NodeConfig(raft: raft, endpoints: config.peers)
        nodeConfig.broker.autoCreateTopics = config.autoCreateTopics
        nodeConfig.broker.maxMessageBytes = config.maxMessageBytes
        nodeConfig.grpcEndpoint = config.grpcEndpoint ?? ""
        nodeConfig.brokerGroup = config.brokerGroup
        nodeConfig.broker.transactionCheckFirstMillis = config.transactionCheckFirstMillis
        nodeConfig.broker.transactionCheckIntervalMillis = config.transactionCheckIntervalMillis
        nodeConfig.broker.transactionMaxChecks = config.transactionMaxChecks
        nodeConfig.snapshotEveryEntries = config.snapshotEveryEntries
        nodeConfig.snapshotEveryBytes = config.snapshotEveryBytes
        nodeConfig.retentionMillis = UInt64(config.retentionHours * 3_600_000)
        nodeConfig.retentionBytes = config.retentionBytes
        nodeConfig.diskSoftLimit = config.diskSoftLimit
        nodeConfig.diskHardLimit = config.diskHardLimit
        nodeConfig.aclEnabled = config.acl

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
        // Election timeouts and a new replica's incarnation (docs/raft.md) come from this seed.
        let seed = UInt64.random(in: 1...UInt64.max)
        let started = monotonicMillis()
        let node = try Node(config: nodeConfig, device: device, directory: config.dataDirectory, logOptions: options, seed: seed, lostDisk: config.lostDisk)
        for line in node.replica.log.recoveryReport { logger.info("recovery: \(line)") }
        for line in node.startReport { logger.info("start: \(line)") }
        // The broker state after the snapshot loaded (or all of it, with none) is rebuilt by
        // applying the log, as the commit index (which a leader tells) reaches each entry.
        // Join the group only once segment files are ready, so the first append does not stall
        // behind zero-filling a segment (docs/storage.md).
        device.waitForBackgroundWork()
        logger.info(
            "opened log \(node.replica.log.firstIndex)...\(node.replica.log.lastIndex), applied \(node.replica.raft.appliedIndex) from the snapshot, in \(monotonicMillis() - started) ms"
        )

        // The node goes onto the loop (with its tick and disk completions) before any socket can
        // deliver to it.
        let owned = Owned(node: node, device: device)
        try loop.submit { [self] in
            self.node = owned.node
            self.device = owned.device
            self.waitsForDisk = owned.device.completionDescriptor < 0
            self.seen = (owned.node.replica.raft.role, owned.node.replica.raft.term, owned.node.replica.raft.leader)
            if self.config.acl { self.publishSecrets() }
            self.tickOrigin = monotonicMillis()
            self.tickTask = loop.scheduleRepeatedTask(initialDelay: .milliseconds(Int64(config.tickMillis)), delay: .milliseconds(Int64(config.tickMillis))) {
                [self] _ in
                self.deliverDueTicks()
            }
        }.wait()
        // The device's completion eventfd, watched by the loop like a socket (a duplicate: the
        // channel owns and closes its descriptor; the device keeps its own).
        let completions = device.completionDescriptor
        if completions >= 0 {
            do {
                let watched = dup(completions)
                guard watched >= 0 else { throw ServerError("dup of the completion eventfd failed: errno \(errno)") }
                completionChannel = try NIOPipeBootstrap(group: loop)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(CompletionHandler(server: self))
                        }
                    }
                    .takingOwnershipOfDescriptor(input: watched).wait()
            } catch {
                throw abandonStart("cannot watch the disk's completions: \(error)")
            }
        } else {
            logger.warning("storage device \(device.backendName) has no completion descriptor: the loop waits for each disk batch")
        }

        let connections = self.connections
        let codec = FrameCodec(maxBodyBytes: UInt32(config.maxMessageBytes + (4 << 20)))
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(
                .writeBufferWaterMark, value: .init(low: config.limits.writeBufferBytes / 4, high: config.limits.writeBufferBytes)
            )
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let inbound = InboundHandler(server: self, connections: connections, logger: log)
                    try channel.pipeline.syncOperations.addHandler(TLSSniffer(tls: tls, inbound: inbound, logger: log))
                    try channel.pipeline.syncOperations.addHandler(ByteWatcher(inbound: inbound))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(codec: codec)))
                    try channel.pipeline.syncOperations.addHandler(inbound)
                }
            }
        do {
            serverChannel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            throw abandonStart("cannot listen on \(config.listen): \(error)")
        }
        try loop.submit { [self] in
            let m = self.node.replica.raft.membership
            logger.info(
                "\(config.id) listening on \(config.listen)\(tls == nil ? "" : " (clients over TLS)"); members \(m.members.map { "\($0.id)=\($0.endpoint)\($0.isLearner ? " (learner)" : "")" }.joined(separator: ","))"
            )
            if m.member(config.id) == nil {
                logger.notice(
                    "\(config.id) is not a member of its configuration yet: it waits to be added (tern admin member add \(config.id) --endpoint \(config.listen))"
                )
            }
            syncLinks()
        }.wait()
        if let join = config.join { describeGroup(at: join) }
    }

    /// A start that failed after the node went onto the loop: stops it (closing its log) and
    /// returns the error to throw.
    private func abandonStart(_ why: String) -> ServerError {
        stop()
        try? wait()
        return ServerError(why)
    }

    /// Asks the server to finish: in-flight disk batches complete, the log closes.
    public func stop() {
        loop.execute { [self] in finish(nil) }
    }

    /// Blocks until the node finished, then closes sockets. Throws what stopped the node.
    public func wait() throws {
        finished.lock()
        while !done { finished.wait() }
        finished.unlock()
        for link in links.values { link.stop() }
        try? completionChannel?.close().wait()
        try? serverChannel?.close().wait()
        for c in connections.all { c.close(promise: nil) }
        try? group.syncShutdownGracefully()
        if let e = exitError { throw e }
    }

    // MARK: On the loop

    /// An input from a connection; the node sees it, with everything else that arrived in this
    /// turn of the loop, once the turn's reads are done.
    func enqueue(_ input: Input) {
        guard !stopping else { return }
        pending.append(input)
        if !turnScheduled {
            turnScheduled = true
            loop.execute { [self] in turn() }
        }
    }

    /// Gives the node every tick that fell due on the monotonic clock since the last delivery,
    /// as one step. The timer calls it, and so does every input before the node sees it: after
    /// a pause (SIGSTOP, a stall) the missed ticks reach Raft before any request or peer message
    /// that queued meanwhile, so a leader paused past its lease knows it is gone before it
    /// answers a read (docs/raft.md, "Time"; TickCatchUpTests).
    func deliverDueTicks() {
        guard !stopping, node != nil else { return }
        let due = (monotonicMillis() - tickOrigin) / config.tickMillis
        guard due > ticksDelivered else { return }
        let count = due - ticksDelivered
        ticksDelivered = due
        measureDisk()
        if count > UInt64(config.electionTicks) {
            logger.notice("\(count) ticks (\(count * config.tickMillis) ms) fell due at once: the process was paused or stalled")
        }
        step { () throws(StorageError) in try self.node.tick(now: wallMillis(), ticks: Int(count)) }
    }

    /// Tells the node how full its disk is and how large its data directory is, every 2 s.
    private func measureDisk() {
        let t = monotonicMillis()
        guard t >= nextDiskMeasure else { return }
        nextDiskMeasure = t + 2_000
        var fs = statvfs()
        if statvfs(config.dataDirectory, &fs) == 0, fs.f_blocks > 0 {
            // What this process can still write: the free blocks for root (which may use the
            // blocks reserved for it), the available ones otherwise.
            let free = geteuid() == 0 ? fs.f_bfree : fs.f_bavail
            let used = Double(fs.f_blocks - min(free, fs.f_blocks)) / Double(fs.f_blocks)
            if used > node.config.diskHardLimit && node.diskUsedFraction <= node.config.diskHardLimit {
                logger.warning("disk \(Int(used * 100))% used, above the hard limit \(Int(node.config.diskHardLimit * 100))%: sends are refused")
            } else if used <= node.config.diskHardLimit && node.diskUsedFraction > node.config.diskHardLimit {
                logger.notice("disk \(Int(used * 100))% used, below the hard limit again: sends are accepted")
            }
            node.diskUsedFraction = used
        }
        node.diskBytes = directoryBytes(config.dataDirectory)
    }

    private func turn() {
        turnScheduled = false
        guard !stopping else { return }
        deliverDueTicks()
        let inputs = pending
        pending = []
        var requests: [(ClientRef, Frame)] = []
        var messages: [Message] = []
        for input in inputs {
            switch input {
            case .request(let c, let f): requests.append((c, f))
            case .peer(let m): messages.append(m)
            case .closed(let c): node.connectionClosed(c)
            case .authenticated(let c, let p): node.authenticated(c, as: p)
            case .peerEndpoint(let peer, let endpoint):
                if announced[peer] != endpoint {
                    announced[peer] = endpoint
                    syncLinks()
                }
            }
        }
        let now = wallMillis()
        if !messages.isEmpty { step { () throws(StorageError) in try self.node.receive(messages, now: now) } }
        if !requests.isEmpty { step { () throws(StorageError) in try self.node.handle(requests, now: now) } }
    }

    /// The device's eventfd fired: batches may have finished.
    func diskReady() {
        guard !stopping, node.replica.log.isFlushing else { return }
        deliverDueTicks()
        step { () throws(StorageError) in try self.node.diskCompleted(now: wallMillis()) }
    }

    /// Runs one input of the node and sends what it returns. A storage error stops the node.
    private func step(_ body: () throws(StorageError) -> NodeOutput) {
        guard !stopping else { return }
        do {
            send(try body())
            if waitsForDisk {
                // No completion descriptor: wait for the batch here, as group commit needs.
                let log = node.replica.log
                while log.isFlushing && !stopping {
                    _ = try log.pump(wait: true)
                    send(try node.diskCompleted(now: wallMillis()))
                }
            }
        } catch {
            logger.critical("node stopped: \(error)")
            finish(error)
            return
        }
        if config.acl, publishedVersion.map({ $0.broker != ObjectIdentifier(node.broker) || $0.version != node.broker.accountsVersion }) ?? true {
            publishSecrets()
        }
        meter?.observe(node, batchesInFlight: device.batchesInFlight)
        let r = node.replica.raft
        if let s = seen, (r.role, r.term, r.leader) != s {
            seen = (r.role, r.term, r.leader)
            logger.notice("term \(r.term): \(r.role)\(r.role == .leader ? "" : ", leader \(r.leader?.name ?? "unknown")")")
        }
    }

    /// The secret of account `accessKey` (a replicated account's, or the `--acl-admin` one's),
    /// as of the node's last step; nil when there is no such account or access control is off.
    /// Safe from any thread: the RocketMQ front checks its clients' signatures with it.
    public func accountSecret(_ accessKey: String) -> [UInt8]? {
        publishedSecrets.withLockedValue { $0[accessKey] }
    }

    /// Whether account `accessKey` has the admin right, as of the node's last step (the HTTP
    /// listener's metrics need it). Safe from any thread.
    public func accountIsAdmin(_ accessKey: String) -> Bool {
        publishedAdmins.withLockedValue { $0.contains(accessKey) }
    }

    /// On the loop: copies the accounts' secrets for `accountSecret`.
    private func publishSecrets() {
        var all: [String: [UInt8]] = [:]
        var admins: Set<String> = []
        for (key, account) in node.broker.accounts {
            all[key] = account.secret
            if account.admin { admins.insert(key) }
        }
        if let root = rootAccount {
            all[root.accessKey] = root.secret
            admins.insert(root.accessKey)
        }
        publishedSecrets.withLockedValue { $0 = all }
        publishedAdmins.withLockedValue { $0 = admins }
        publishedVersion = (ObjectIdentifier(node.broker), node.broker.accountsVersion)
    }

    /// Stops feeding the node. Without an error, lets the disk batches in flight complete and
    /// closes the log (a storage error leaves the log as it is: recovery reads the disk).
    private func finish(_ error: Error?) {
        guard !stopping else { return }
        stopping = true
        tickTask?.cancel()
        if error == nil, let node {
            let log = node.replica.log
            logger.info("stopping: waiting for \(device.batchesInFlight) disk batches")
            do {
                while log.isFlushing { _ = try log.pump(wait: true) }
                try log.close()
                logger.info("stopped; log closed at index \(log.lastIndex)")
            } catch {
                logger.critical("stopping: \(error)")
                exitError = error
            }
            device.shutdown()
        } else {
            exitError = error
        }
        finished.lock()
        done = true
        finished.broadcast()
        finished.unlock()
    }

    private func send(_ out: NodeOutput) {
        for n in out.notices { logger.warning("\(n)") }
        if node.replica.raft.membership != linkedMembership || node.replica.raft.leader != linkedLeader { syncLinks() }
        if !out.messages.isEmpty {
            var byPeer: [NodeID: [Message]] = [:]
            for m in out.messages { byPeer[m.to, default: []].append(m) }
            for (peer, messages) in byPeer { links[peer]?.send(messages) }
        }
        if !out.replies.isEmpty {
            var byConnection: [UInt64: (buffer: ByteBuffer, count: Int)] = [:]
            for r in out.replies {
                let frame: Frame
                switch r.result {
                case .success(let body): frame = Frame(opcode: r.opcode, flags: .response, requestID: r.to.requestID, body: body)
                case .failure(let e): frame = Frame(opcode: r.opcode, flags: [.response, .error], requestID: r.to.requestID, body: e.encode())
                }
                byConnection[r.to.connection, default: (ByteBuffer(), 0)].buffer.writeFrame(frame)
                byConnection[r.to.connection]!.count += 1
            }
            for (id, batch) in byConnection { connections.answered(id, count: batch.count)?.writeAndFlush(batch.buffer, promise: nil) }
        }
    }
}

/// Hands the node and its device to the event loop, which alone uses them from then on.
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

/// Reads of the device's completion eventfd (the read resets it), each followed by a look at the
/// device: the loop reaps what finished.
final class CompletionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    unowned let server: TernServer

    init(server: TernServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func channelReadComplete(context: ChannelHandlerContext) {
        server.diskReady()
    }
}

/// Bytes of the regular files under `path` (what they occupy on disk).
func directoryBytes(_ path: String) -> UInt64 {
    guard let e = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total: UInt64 = 0
    while let name = e.nextObject() as? String {
        var st = stat()
        if lstat(path + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { total += UInt64(st.st_blocks) * 512 }
    }
    return total
}
