// Inbound connections and their limits (docs/operations.md, "Limits"). A connection is
// unclassified until its first frame: a client request makes it a client (counted against
// --max-connections), a peer hello a peer (never counted, so a flood of clients cannot lock the
// members out). Unclassified connections are few and short-lived: at most
// `maxUnclassified`, the oldest closed first, and each must deliver its first frame within
// `firstFrameMillis`; every connection must finish a frame it began within `frameMillis`.
import Foundation
import NIOCore

/// The limits on connections, with their defaults.
public struct ConnectionLimits: Sendable, Equatable {
    /// Client connections at once; one more is refused with BUSY at its first request.
    public var maxClients = 1_000
    /// Requests of one connection received and not yet answered; more are answered BUSY.
    public var maxOutstanding = 4_096
    /// Connections that have not sent a complete frame yet; the oldest beyond it is closed.
    public var maxUnclassified = 256
    /// A new connection's first frame must arrive within this.
    public var firstFrameMillis: Int64 = 10_000
    /// A frame begun must be complete within this (a slow sender holding a header open).
    public var frameMillis: Int64 = 60_000
    /// Above this many bytes waiting to be written to a connection, the node stops reading from
    /// it until they drain to a quarter (a client that sends without reading its answers).
    public var writeBufferBytes = 4 << 20
    public init() {}
}

/// Open client and peer connections by id, for the node's replies, and what the limits count.
final class Connections: @unchecked Sendable {
    enum Kind { case unclassified, client, peer, evicted }
    struct Entry {
        var channel: Channel
        var kind = Kind.unclassified
        var outstanding = 0
    }
    private let lock = NSLock()
    private var entries: [UInt64: Entry] = [:]
    private var next: UInt64 = 1
    /// Ids of connections not yet classified, oldest first (some classified or gone since;
    /// skipped when met), and how many of them are still unclassified.
    private var waiting: [UInt64] = []
    private var waitingHead = 0
    private var waitingCount = 0
    private(set) var clients = 0
    let limits: ConnectionLimits

    init(limits: ConnectionLimits = ConnectionLimits()) { self.limits = limits }

    /// Registers a new connection; returns its id and the unclassified connections to close
    /// because there are too many (the oldest).
    func add(_ c: Channel) -> (UInt64, evicted: [Channel]) {
        lock.lock()
        defer { lock.unlock() }
        let id = next
        next += 1
        entries[id] = Entry(channel: c)
        waiting.append(id)
        waitingCount += 1
        var evicted: [Channel] = []
        while waitingCount > limits.maxUnclassified, waitingHead < waiting.count {
            let oldest = waiting[waitingHead]
            waitingHead += 1
            guard let e = entries[oldest], e.kind == .unclassified else { continue }
            entries[oldest]!.kind = .evicted
            waitingCount -= 1
            evicted.append(e.channel)
        }
        if waitingHead > 1_024 && waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
        return (id, evicted)
    }

    func remove(_ id: UInt64) {
        lock.lock()
        switch entries[id]?.kind {
        case .client: clients -= 1
        case .unclassified: waitingCount -= 1
        default: break
        }
        entries[id] = nil
        lock.unlock()
    }

    /// The connection's first client request: false when the node has its most clients.
    func becomeClient(_ id: UInt64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let e = entries[id] else { return false }
        if e.kind == .client { return true }
        guard clients < limits.maxClients, e.kind == .unclassified else { return false }
        entries[id]!.kind = .client
        clients += 1
        waitingCount -= 1
        return true
    }

    /// An authenticated peer (or, with `--insecure-peers`, one that delivered a Raft frame).
    func becomePeer(_ id: UInt64) {
        lock.lock()
        if entries[id]?.kind == .unclassified {
            entries[id]!.kind = .peer
            waitingCount -= 1
        }
        lock.unlock()
    }

    /// Counts one more request outstanding; false (not counted) when the connection has its most.
    func startRequest(_ id: UInt64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let e = entries[id], e.outstanding < limits.maxOutstanding else { return false }
        entries[id]!.outstanding += 1
        return true
    }

    /// `count` answers written to the connection: its channel, when it is still open.
    func answered(_ id: UInt64, count: Int) -> Channel? {
        lock.lock()
        defer { lock.unlock() }
        guard let e = entries[id] else { return nil }
        entries[id]!.outstanding = max(0, e.outstanding - count)
        return e.channel
    }

    var all: [Channel] {
        lock.lock()
        defer { lock.unlock() }
        return entries.values.map(\.channel)
    }
}

/// Sits between TLS and the frame decoder: notes when bytes of a frame not yet delivered
/// arrive, so the inbound handler can close a connection that holds a frame open too long.
final class ByteWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let inbound: InboundHandler
    init(inbound: InboundHandler) { self.inbound = inbound }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if inbound.partialSince == nil { inbound.partialSince = .now() }
        context.fireChannelRead(data)
    }
}

extension TernServer {
    /// Raises the soft limit on open files to the hard one: each connection is a descriptor,
    /// and so is every log segment and queue file. Says so when the limit is below what the
    /// connection limits need.
    func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, 1 << 20)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        let needed = UInt64(config.limits.maxClients + config.limits.maxUnclassified + config.peers.count * 2 + 1_024)
        if UInt64(limit.rlim_cur) < needed {
            logger.warning(
                "open files limit \(limit.rlim_cur) is below the \(needed) that --max-connections \(config.limits.maxClients) and the log's files may need (ulimit -n)"
            )
        }
    }
}
