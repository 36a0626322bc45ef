// The flags of `tern serve`, shared by the production command and the chaos harness's node
// (which adds its test-only flags beside them): parsing, the config file, and running a server
// until SIGTERM or SIGINT. Flags given on the command line win over the config file, for every
// setting; a value in either that does not parse is refused, naming the flag or the file line.
import ArgumentParser
import Foundation
import Logging
import TernClient
import TernNameServer
import TernOps
import TernProtocol
import TernRaft
import TernRocketMQ
import TernServer
import TernStorage

extension IOBackendChoice: ExpressibleByArgument {
    public init?(argument text: String) {
        switch text {
        case "auto": self = .auto
        case "uring": self = .uring
        case "posix": self = .posix
        default: return nil
        }
    }
}

public struct ServeOptions: ParsableArguments {
    @Option(help: "This node's id; must appear in --peers (a new group) or be new (--join).") public var id: String?
    @Option(help: "host:port to listen on, for clients and peers.") public var listen: String?
    @Option(help: "A new group's members as id=host:port, comma separated (once the group runs, its configuration decides).")
    public var peers: String?
    @Option(help: "host:port of a current member: start empty and wait to be added (tern admin member add).") public var join: String?
    @Option(help: "Data directory.") public var data: String?
    @Option(help: "Storage backend: auto (io_uring, else POSIX, said in the log), uring or posix.") public var io: IOBackendChoice?
    @Option(help: "Raft tick in milliseconds (election timeout: 10 to 20 ticks; heartbeat: 2).") public var tickMs: UInt64?
    @Flag(help: "Create a topic (4 queues) on its first send.") public var autoCreateTopics = false
    @Option(help: "Largest message body in bytes.") public var maxMessageBytes: Int?
    @Option(help: "Commitlog segment size in MiB.") public var segmentMb: Int?
    @Option(help: "Take a broker snapshot every this many log entries (0: never; default 100000).") public var snapshotEntries: UInt64?
    @Option(help: "... and every this many bytes of entries applied: bytes or with a unit (0: never; default 64MiB).") public var snapshotBytes: String?
    @Option(help: "Log segments whose newest message is older than this many hours are deleted (default 72).") public var retentionHours: Double?
    @Option(help: "The oldest log segments are deleted while the log is larger than this: bytes, or with a unit (256MiB, 2GiB).")
    public var retentionBytes: String?
    @Option(help: "Disk use (percent) above which retention deletes the oldest segments early (default 75).") public var diskSoftLimit: String?
    @Option(help: "Disk use (percent) above which the leader refuses sends, STORAGE_FULL (default 90).") public var diskHardLimit: String?
    @Option(help: "An undecided transaction is first checked this long after it was stored (ms; default 6000).") public var transactionCheckFirstMs: UInt64?
    @Option(help: "... then checked again every this long (ms; default 30000).") public var transactionCheckIntervalMs: UInt64?
    @Option(help: "... at most this many times, then rolled back (default 15).") public var transactionMaxChecks: UInt32?
    @Option(help: "A config file of `name = value` lines (the long flag names without dashes).") public var config: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default info).") public var logLevel: String?
    @Option(help: "The cluster secret file every member holds (docs/security.md); needed by a group of more than one member.")
    public var peerSecret: String?
    @Flag(help: "Accept Raft traffic from unauthenticated connections (never on a network others can reach).") public var insecurePeers = false
    @Option(help: "Certificate chain (PEM) served to clients, who then connect over TLS (docs/security.md); with --tls-key.") public var tlsCert: String?
    @Option(help: "The private key (PEM, unencrypted) of --tls-cert.") public var tlsKey: String?
    @Flag(help: "Check every client request against the replicated accounts (docs/security.md).") public var acl = false
    @Option(help: "host:port for the RocketMQ 5 gRPC front (the official RocketMQ clients; docs/rocketmq.md). Off unless given.")
    public var grpcListen: String?
    @Option(
        help:
            "host:port for the HTTP listener: Prometheus metrics at /metrics, /health and /ready, the admin API under /api and the web console at / (docs/operations.md). Off unless given; keep it on loopback unless --acl (and --tls-cert) guard it."
    )
    public var httpListen: String?
    @Option(help: "PEM file of the CA that signed the nodes' --tls-cert, which the gRPC front trusts to reach the group (default: the system's CAs).")
    public var tlsCa: String?
    @Option(help: "Credentials file (access-key = ..., secret-key = ...) of an account with every right on this node; with --acl.")
    public var aclAdmin: String?
    @Option(help: "Client connections at once; one more is refused with BUSY (default 1000; peers are not counted).") public var maxConnections: Int?
    @Option(help: "Requests of one connection waiting for their answers; more are answered BUSY (default 4096).") public var maxRequestsPerConnection: Int?
    @Option(help: "This group's name among the broker groups behind the name servers (default g1; docs/architecture.md).")
    public var brokerGroup: String?
    @Option(help: "Name servers (host:port, comma separated) the group's leader registers with (tern nameserver; default: none).")
    public var nameservers: String?
    @Flag(help: "This node's disk was replaced (empty): rejoin without voting until safe (docs/raft.md).") public var lostDisk = false
    @Flag(help: "Open a log that recovery calls corrupt by cutting it at the damage (what is cut must come back from the peers; docs/storage.md).") public
        var repair = false

    public init() {}

    /// The server's configuration and the log level, from the flags and the config file.
    public func resolve() throws -> (ServerConfig, Logger.Level) {
        let file = try config.map { try ConfigFile(path: $0) } ?? ConfigFile()
        guard let id = id ?? file.string("id") else { throw ValidationError("--id is required") }
        guard let listen = listen ?? file.string("listen") else { throw ValidationError("--listen is required") }
        let joinAt = join ?? file.string("join")
        let peerText = peers ?? file.string("peers")
        guard let data = data ?? file.string("data") else { throw ValidationError("--data is required") }
        guard parseEndpoint(listen) != nil else { throw ValidationError("--listen \(listen) is not host:port") }
        var members: [NodeID: String] = [:]
        switch (peerText, joinAt) {
        case (nil, nil): throw ValidationError("--peers (a new group's members) or --join (a member of a running group) is required")
        case (.some, .some): throw ValidationError("--peers and --join exclude each other")
        case (let text?, nil):
            members = try parseMembers(text, flag: "--peers")
            guard let own = members[NodeID(id)] else { throw ValidationError("--peers does not name this node (\(id))") }
            // --listen is the address in --peers, or a wildcard on its port (a pod binds 0.0.0.0
            // while its peers dial its stable name).
            let (listenHost, listenPort) = parseEndpoint(listen)!
            let wildcard = ["0.0.0.0", "::", "[::]"].contains(listenHost) && parseEndpoint(own)?.port == listenPort
            guard own == listen || wildcard else {
                throw ValidationError("--peers gives \(id) as \(own), but --listen is \(listen) (give the same address, or a wildcard host on its port)")
            }
        case (nil, let at?):
            guard parseEndpoint(at) != nil else { throw ValidationError("--join \(at) is not host:port") }
        }

        var cfg = ServerConfig(id: NodeID(id), listen: listen, peers: members, dataDirectory: data)
        if let v = try io ?? file.value("io", as: IOBackendChoice.init(argument:), expected: "auto, uring or posix") { cfg.io = v }
        if let t = try tickMs ?? file.value("tick-ms", as: { UInt64($0) }, expected: "a number of milliseconds") {
            guard t >= 1 && t <= 10_000 else { throw ValidationError("tick-ms must be 1 to 10000 (got \(t))") }
            cfg.tickMillis = t
        }
        cfg.autoCreateTopics = try autoCreateTopics || (file.value("auto-create-topics", as: Bool.init, expected: "true or false") ?? false)
        if let m = try maxMessageBytes ?? file.value("max-message-bytes", as: { Int($0) }, expected: "a number of bytes") {
            guard m >= 1 && m <= 64 << 20 else { throw ValidationError("max-message-bytes must be 1 to 67108864 (got \(m))") }
            cfg.maxMessageBytes = m
        }
        if let m = try segmentMb ?? file.value("segment-mb", as: { Int($0) }, expected: "a number of MiB") {
            guard m >= 8 && m <= 4096 else { throw ValidationError("segment-mb must be 8 to 4096 (got \(m))") }
            cfg.segmentBytes = m << 20
        }
        if let v = try snapshotEntries ?? file.value("snapshot-entries", as: { UInt64($0) }, expected: "a whole number of entries") {
            guard v == 0 || v >= 100 else { throw ValidationError("snapshot-entries must be 0 (never) or at least 100 (got \(v))") }
            cfg.snapshotEveryEntries = v
        }
        if let text = snapshotBytes ?? file.string("snapshot-bytes") {
            guard let v = parseByteSize(text), v == 0 || v >= 1 << 20 else {
                throw ValidationError("snapshot-bytes must be 0 (never) or a size of at least 1MiB, such as 256MiB (got \(text))")
            }
            cfg.snapshotEveryBytes = v
        }
        if let v = try retentionHours ?? file.value("retention-hours", as: { Double($0) }, expected: "a number of hours") {
            guard v > 0 && v <= 24 * 365 * 10 else { throw ValidationError("retention-hours must be above 0 and at most 87600 (got \(v))") }
            cfg.retentionHours = v
        }
        if let text = retentionBytes ?? file.string("retention-bytes") {
            guard let v = parseByteSize(text), v >= 1 << 20 else {
                throw ValidationError("retention-bytes must be a size of at least 1MiB: bytes, or a number with KiB, MiB, GiB or TiB (got \(text))")
            }
            cfg.retentionBytes = v
        }
        for (flag, value) in [
            ("disk-soft-limit", diskSoftLimit ?? file.string("disk-soft-limit")), ("disk-hard-limit", diskHardLimit ?? file.string("disk-hard-limit")),
        ] {
            guard let text = value else { continue }
            guard let p = Double(text.hasSuffix("%") ? String(text.dropLast()) : text), p > 0, p <= 100 else {
                throw ValidationError("\(flag) must be a percentage above 0 and at most 100, such as 75 or 75% (got \(text))")
            }
            if flag == "disk-soft-limit" { cfg.diskSoftLimit = p / 100 } else { cfg.diskHardLimit = p / 100 }
        }
        guard cfg.diskSoftLimit < cfg.diskHardLimit else {
            throw ValidationError("disk-soft-limit (\(Int(cfg.diskSoftLimit * 100))%) must be below disk-hard-limit (\(Int(cfg.diskHardLimit * 100))%)")
        }
        if let v = try transactionCheckFirstMs ?? file.value("transaction-check-first-ms", as: { UInt64($0) }, expected: "a number of milliseconds") {
            guard v >= 100 else { throw ValidationError("transaction-check-first-ms must be at least 100 (got \(v))") }
            cfg.transactionCheckFirstMillis = v
        }
        if let v = try transactionCheckIntervalMs ?? file.value("transaction-check-interval-ms", as: { UInt64($0) }, expected: "a number of milliseconds") {
            guard v >= 100 else { throw ValidationError("transaction-check-interval-ms must be at least 100 (got \(v))") }
            cfg.transactionCheckIntervalMillis = v
        }
        if let v = try transactionMaxChecks ?? file.value("transaction-max-checks", as: { UInt32($0) }, expected: "a whole number") {
            guard v >= 1 && v <= 1000 else { throw ValidationError("transaction-max-checks must be 1 to 1000 (got \(v))") }
            cfg.transactionMaxChecks = v
        }
        cfg.peerSecretPath = peerSecret ?? file.string("peer-secret")
        cfg.insecurePeers = try insecurePeers || (file.value("insecure-peers", as: Bool.init, expected: "true or false") ?? false)
        if cfg.peerSecretPath != nil && cfg.insecurePeers { throw ValidationError("--peer-secret and --insecure-peers exclude each other") }
        cfg.tlsCertPath = tlsCert ?? file.string("tls-cert")
        cfg.tlsKeyPath = tlsKey ?? file.string("tls-key")
        if (cfg.tlsCertPath == nil) != (cfg.tlsKeyPath == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        cfg.acl = try acl || (file.value("acl", as: Bool.init, expected: "true or false") ?? false)
        cfg.aclAdminPath = aclAdmin ?? file.string("acl-admin")
        if cfg.aclAdminPath != nil && !cfg.acl { throw ValidationError("--acl-admin is for a node started with --acl") }
        cfg.grpcTLSCAPath = tlsCa ?? file.string("tls-ca")
        if cfg.grpcTLSCAPath != nil && cfg.tlsCertPath == nil { throw ValidationError("--tls-ca is for a node started with --tls-cert") }
        if let v = try maxConnections ?? file.value("max-connections", as: { Int($0) }, expected: "a whole number") {
            guard v >= 1 && v <= 1_000_000 else { throw ValidationError("max-connections must be 1 to 1000000 (got \(v))") }
            cfg.limits.maxClients = v
        }
        if let v = try maxRequestsPerConnection ?? file.value("max-requests-per-connection", as: { Int($0) }, expected: "a whole number") {
            guard v >= 1 && v <= 1_000_000 else { throw ValidationError("max-requests-per-connection must be 1 to 1000000 (got \(v))") }
            cfg.limits.maxOutstanding = v
        }
        if let g = grpcListen ?? file.string("grpc-listen") {
            guard let (host, port) = parseEndpoint(g) else { throw ValidationError("--grpc-listen \(g) is not host:port") }
            guard g != listen else { throw ValidationError("--grpc-listen and --listen cannot share \(g)") }
            cfg.grpcListen = g
            // Clients are told a reachable address: the gRPC host, or, when it is a wildcard, this
            // node's own host as the group knows it.
            func wildcard(_ h: String) -> Bool { h == "0.0.0.0" || h == "::" || h == "[::]" }
            let own = parseEndpoint(members[NodeID(id)] ?? listen)!.host
            guard !wildcard(host) || !wildcard(own) else {
                throw ValidationError("--grpc-listen \(g) and this node's address \(own) are both wildcards: give a host clients can reach")
            }
            cfg.grpcEndpoint = wildcard(host) ? "\(own):\(port)" : g
        }
        if let h = httpListen ?? file.string("http-listen") {
            guard parseEndpoint(h) != nil else { throw ValidationError("--http-listen \(h) is not host:port") }
            guard h != listen, h != cfg.grpcListen else { throw ValidationError("--http-listen \(h) is already this node's --listen or --grpc-listen") }
            cfg.httpListen = h
        }
        if let g = brokerGroup ?? file.string("broker-group") {
            if let problem = BrokerGroupName.problem(g) { throw ValidationError("--broker-group: \(problem)") }
            cfg.brokerGroup = g
        }
        if let text = nameservers ?? file.string("nameservers") {
            cfg.nameservers = try parseNameServers(text, flag: "--nameservers")
        }
        cfg.lostDisk = lostDisk
        cfg.join = joinAt
        cfg.repairCorruption = repair
        let levelText = logLevel ?? file.string("log-level") ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else {
            throw ValidationError("log level \(levelText) is unknown (trace, debug, info, notice, warning, error, critical)")
        }
        return (cfg, level)
    }
}

/// "id=host:port,..." as a member map; a malformed item or a repeated id is refused.
public func parseMembers(_ text: String, flag: String) throws -> [NodeID: String] {
    var members: [NodeID: String] = [:]
    for item in text.split(separator: ",") {
        let kv = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard kv.count == 2, !kv[0].isEmpty, parseEndpoint(kv[1]) != nil else { throw ValidationError("\(flag): \(item) is not id=host:port") }
        guard members[NodeID(kv[0])] == nil else { throw ValidationError("\(flag) names \(kv[0]) twice") }
        members[NodeID(kv[0])] = kv[1]
    }
    return members
}

/// Name server endpoints, separated by commas or semicolons (RocketMQ's NAMESRV_ADDR form).
public func parseNameServers(_ text: String, flag: String) throws -> [String] {
    let list = text.split(whereSeparator: { $0 == "," || $0 == ";" }).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !list.isEmpty else { throw ValidationError("\(flag) lists no name server") }
    for e in list where parseEndpoint(e) == nil { throw ValidationError("\(flag): \(e) is not host:port") }
    guard Set(list).count == list.count else { throw ValidationError("\(flag) names a name server twice") }
    return list
}

/// A `name = value` file (one per line, `#` starts a comment). Unknown names, repeated names and
/// values that do not parse are refused with the file's path and the line number.
public struct ConfigFile: Sendable {
    public static let known: Set<String> = [
        "id", "listen", "peers", "join", "data", "io", "tick-ms", "auto-create-topics", "max-message-bytes", "segment-mb", "log-level", "snapshot-entries",
        "snapshot-bytes", "retention-hours", "retention-bytes",
        "disk-soft-limit", "disk-hard-limit",
        "transaction-check-first-ms", "transaction-check-interval-ms", "transaction-max-checks", "peer-secret", "insecure-peers", "broker-group", "nameservers",
        "tls-cert", "tls-key", "acl", "acl-admin", "max-connections", "max-requests-per-connection", "grpc-listen", "tls-ca",
        "http-listen",
    ]
    let path: String
    var entries: [String: (value: String, line: Int)] = [:]

    public init() { path = "" }

    public init(path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read config file \(path)") }
        try self.init(path: path, text: text)
    }

    public init(path: String, text: String) throws {
        self.path = path
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            if line.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("\(path):\(n + 1): expected name = value") }
            guard ConfigFile.known.contains(parts[0]) else { throw ValidationError("\(path):\(n + 1): unknown setting \(parts[0])") }
            if let earlier = entries[parts[0]] { throw ValidationError("\(path):\(n + 1): \(parts[0]) is set already on line \(earlier.line)") }
            entries[parts[0]] = (parts[1], n + 1)
        }
    }

    public func string(_ name: String) -> String? { entries[name]?.value }

    /// The setting parsed by `parse`; nil when the file does not set it; an error naming the
    /// line when it does not parse.
    public func value<T>(_ name: String, as parse: (String) -> T?, expected: String) throws -> T? {
        guard let (text, line) = entries[name] else { return nil }
        guard let v = parse(text) else { throw ValidationError("\(path):\(line): \(name) = \(text): expected \(expected)") }
        return v
    }
}

/// Runs a server until SIGTERM or SIGINT stops it (after its disk writes in flight complete).
/// Exit status 2 when it cannot start, 1 when it stopped on an error.
public func runServer(_ cfg: ServerConfig, level: Logger.Level) throws {
    LoggingSystem.bootstrap { label in LineLogHandler(label: label, logLevel: level) }
    let logger = Logger(label: "tern.\(cfg.id)")
    var cfg = cfg
    let metrics = cfg.httpListen == nil ? nil : OpsServer.makeMetrics()
    cfg.metrics = metrics?.factory
    let server = TernServer(config: cfg, logger: logger)
    signal(SIGPIPE, SIG_IGN)
    let signals = StopSignals([SIGTERM, SIGINT]) { sig in
        logger.notice("signal \(sig): stopping")
        server.stop()
    }
    defer { signals.cancel() }
    do {
        try server.start()
    } catch {
        logger.critical("cannot start: \(error)")
        throw ExitCode(2)
    }
    // The gRPC front, when asked for: a node that cannot open it stops rather than run without.
    var front: RocketMQFront?
    if let listen = cfg.grpcListen, let advertise = cfg.grpcEndpoint {
        do {
            var fc = FrontConfig(listen: listen, advertise: advertise, nodeEndpoints: groupEndpoints(cfg))
            fc.settings.maxBodyBytes = cfg.maxMessageBytes
            // With name servers the front serves every broker group behind them.
            fc.nameservers = cfg.nameservers
            fc.brokerGroup = cfg.brokerGroup
            // The node's TLS and access control hold for the front too: it serves gRPC over TLS
            // with the node's certificate, reaches the group over TLS, and (with --acl) checks
            // each call's signature against the replicated accounts.
            if let cert = cfg.tlsCertPath, let key = cfg.tlsKeyPath {
                fc.tls = (cert, key)
                fc.settings.routeOwnAddressOnly = true
                fc.cluster.tls = ClientTLS(caFile: cfg.grpcTLSCAPath)
            }
            if cfg.acl {
                if cfg.tlsCertPath == nil {
                    logger.warning(
                        "gRPC front with access control but without TLS: a signed call seen on the wire can be replayed as its account (docs/security.md)")
                }
                fc.access = FrontAccess(secretOf: { [server] in server.accountSecret($0) })
                if let admin = cfg.aclAdminPath { fc.cluster.credentials = try Credentials(file: admin) }
            }
            let f = try RocketMQFront(config: fc, logger: Logger(label: "tern.\(cfg.id).grpc"))
            front = f
            let port = try blockingAwait { try await f.start() }
            logger.notice("RocketMQ 5 gRPC front listening on \(hostOf(listen)):\(port), advertised as \(advertise)")
        } catch {
            logger.critical("cannot start the gRPC front: \(error)")
            server.stop()
            try? server.wait()
            throw ExitCode(2)
        }
    }
    defer {
        if let front { _ = try? blockingAwait { await front.stop() } }
    }
    var ops: OpsServer?
    if let listen = cfg.httpListen, let metrics {
        do {
            ops = try startOps(cfg, listen: listen, server: server, metrics: metrics, logger: logger)
        } catch {
            logger.critical("cannot start the HTTP listener: \(error)")
            server.stop()
            try? server.wait()
            throw ExitCode(2)
        }
    }
    defer {
        if let ops { _ = try? blockingAwait { await ops.stop() } }
    }
    var registrar: Registrar?
    if !cfg.nameservers.isEmpty {
        do {
            // Registrations are signed with the registration key derived from the cluster secret
            // the peers use (unsigned only with --insecure-peers, whose name servers run with
            // --insecure): name servers hold that key, not the secret. The file is read again when
            // it changes (a rotation), and the first secret's key signs, as the first secret is
            // the one peers prove.
            let file = try cfg.peerSecretPath.map { try PeerSecretSource(path: $0, logger: logger) }
            let key = file.map { f in { @Sendable in Array(RegistrationKey.derive(from: f.current.secrets[0]).utf8) } }
            let r = try Registrar(server: server, nameservers: cfg.nameservers, key: key, logger: logger)
            r.start()
            registrar = r
        } catch {
            logger.critical("cannot register with the name servers: \(error)")
            server.stop()
            try? server.wait()
            throw ExitCode(2)
        }
    }
    defer {
        if let registrar { _ = try? blockingAwait { await registrar.stop() } }
    }
    do {
        try server.wait()
    } catch {
        throw ExitCode(1)
    }
}

/// The HTTP listener beside the node: the node's TLS and access control hold for it too.
private func startOps(_ cfg: ServerConfig, listen: String, server: TernServer, metrics: OpsMetricsHandle, logger: Logger) throws -> OpsServer {
    var oc = OpsConfig(listen: listen, nodeEndpoints: groupEndpoints(cfg))
    oc.nameservers = cfg.nameservers
    if let cert = cfg.tlsCertPath, let key = cfg.tlsKeyPath {
        oc.tls = (cert, key)
        oc.cluster.tls = ClientTLS(caFile: cfg.grpcTLSCAPath)
    }
    if cfg.acl {
        oc.secretOf = { [server] in server.accountSecret($0) }
        oc.isAdmin = { [server] in server.accountIsAdmin($0) }
        if cfg.tlsCertPath == nil {
            logger.warning("HTTP listener with access control but without TLS: passwords cross the wire in the clear (basic authentication)")
        }
    } else if let host = parseEndpoint(listen)?.host, !["127.0.0.1", "::1", "[::1]", "localhost"].contains(host) {
        logger.warning("HTTP listener on \(listen) without access control: anyone who reaches it reads the group's topics, groups and messages")
    }
    let ops = try OpsServer(config: oc, server: server, metrics: metrics, logger: Logger(label: "tern.\(cfg.id).http"))
    let port = try blockingAwait { try await ops.start() }
    logger.notice("HTTP listener on \(hostOf(listen)):\(port)\(cfg.tlsCertPath == nil ? "" : " (HTTPS)"): console at /, metrics at /metrics")
    return ops
}

/// The group's endpoints for a side service's client, this node's first, as its peers dial it
/// (its --peers address, not a wildcard --listen; TLS checks the name).
private func groupEndpoints(_ cfg: ServerConfig) -> [String] {
    let own = cfg.peers[cfg.id] ?? cfg.listen
    return [own] + cfg.peers.values.filter { $0 != own }.sorted()
}

private func hostOf(_ endpoint: String) -> String { parseEndpoint(endpoint)?.host ?? endpoint }

/// Runs async work from synchronous code (the node's main thread) and waits for its result.
func blockingAwait<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox<T>()
    Task {
        do { box.set(.success(try await work())) } catch { box.set(.failure(error)) }
        done.signal()
    }
    done.wait()
    return try box.get()
}

private final class ResultBox<T: Sendable>: @unchecked Sendable {
    // Written once by the task before it signals; read after the wait.
    private var result: Result<T, any Error>?
    func set(_ r: Result<T, any Error>) { result = r }
    func get() throws -> T { try result!.get() }
}

/// A size in bytes: a whole number, or one with a unit (KiB, MiB, GiB, TiB; also KB, MB, GB, TB
/// and K, M, G, T, all meaning powers of 1024). nil when it does not parse.
public func parseByteSize(_ text: String) -> UInt64? {
    let t = text.trimmingCharacters(in: .whitespaces)
    let units: [(String, UInt64)] = [
        ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10),
        ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1),
    ]
    for (suffix, factor) in units where t.uppercased().hasSuffix(suffix.uppercased()) {
        guard let n = UInt64(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)) else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: factor)
        return overflow ? nil : v
    }
    return UInt64(t)
}
