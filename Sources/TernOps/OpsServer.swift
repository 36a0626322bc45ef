// A node's HTTP listener (`tern serve --http-listen`; docs/operations.md): Prometheus metrics at
// /metrics, health at /health and /ready, the JSON admin API under /api, and the web console at
// /. Hummingbird serves it on a thread of its own, never the node's. Metrics and health read the
// local node on its loop; the admin API asks the group over the native protocol, as any client
// does, so that answers that only the leader has (groups and their lag) come from the leader
// whichever node's console is open.
//
// With the node's TLS (`--tls-cert`) the listener serves HTTPS with the same certificate. With
// access control (`--acl`) every path but /health and /ready needs HTTP basic authentication
// with an account's access key and secret, and the API's requests then run as that account, so
// that the nodes check its rights (the admin right) as for any client; metrics and the history
// need an admin account too. Without access control, a request must name this listener's host
// or an IP address in its Host header (a web page elsewhere cannot reach a loopback listener
// through a name it rebinds to 127.0.0.1).
import CoreMetrics
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import TernClient
import TernProtocol
import TernServer

public struct OpsConfig: Sendable {
    /// host:port to listen on.
    public var listen: String
    /// The group's nodes, this one first.
    public var nodeEndpoints: [String]
    /// How the API's client reaches the group (TLS, and the account it speaks for when no
    /// caller's account does).
    public var cluster = TernCluster.Options()
    /// Serve HTTPS with this certificate chain and key (PEM).
    public var tls: (certPath: String, keyPath: String)?
    /// Access control: the secret of an account (nil: no such account); nil: no authentication.
    public var secretOf: (@Sendable (String) -> [UInt8]?)?
    /// Access control: whether an account has the admin right.
    public var isAdmin: @Sendable (String) -> Bool = { _ in false }
    /// The node's name servers (`--nameservers`): the console lists every broker group they know.
    public var nameservers: [String] = []

    public init(listen: String, nodeEndpoints: [String]) {
        self.listen = listen
        self.nodeEndpoints = nodeEndpoints
    }
}

public final class OpsServer: Sendable {
    let config: OpsConfig
    let server: TernServer
    let metrics: OpsMetrics
    let logger: Logger
    let loops: MultiThreadedEventLoopGroup
    let clusters: AccountClusters
    /// The node's name servers, when it has any (`/api/broker-groups`).
    let nameServers: NameServers?
    let history = History()
    private let running = NIOLockedValueBox<[Task<Void, Never>]>([])
    /// The last reading of the node, reused for a second: scrapes and consoles at any rate cost
    /// the node's loop at most one reading a second.
    private let lastReading = NIOLockedValueBox<(at: ContinuousClock.Instant, reading: NodeReading)?>(nil)
    /// The group summaries per account, reused for a second and a half (every open console asks
    /// every two seconds).
    private let lastGroups = NIOLockedValueBox<[String: (at: ContinuousClock.Instant, groups: [GroupSummary])]>([:])

    /// The factory the node's server records its latencies into; pass it as
    /// `ServerConfig.metrics` before the server starts.
    public static func makeMetrics() -> OpsMetricsHandle { OpsMetricsHandle(metrics: OpsMetrics()) }

    public init(config: OpsConfig, server: TernServer, metrics: OpsMetricsHandle, logger: Logger) throws {
        guard parseEndpoint(config.listen) != nil else { throw ClientError.invalidArgument("--http-listen \(config.listen) is not host:port") }
        self.config = config
        self.server = server
        self.metrics = metrics.metrics
        self.logger = logger
        var options = config.cluster
        options.requestTimeoutMillis = 5_000
        loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        clusters = AccountClusters(endpoints: config.nodeEndpoints, options: options, loops: loops)
        do {
            nameServers = config.nameservers.isEmpty ? nil : try NameServers(endpoints: config.nameservers, eventLoopGroup: loops)
        } catch {
            try? loops.syncShutdownGracefully()
            throw error
        }
    }

    /// Serves until `stop()`; returns the port once listening, or throws when it cannot bind.
    public func start() async throws -> Int {
        let (host, port) = parseEndpoint(config.listen)!
        let router = Router(context: BasicRequestContext.self)
        routes(router)
        let serverBuilder: HTTPServerBuilder
        if let tls = config.tls {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certPath).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: tls.keyPath, format: .pem)
            serverBuilder = try .tls(
                .http1(), tlsConfiguration: TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key)))
        } else {
            serverBuilder = .http1()
        }
        let bound = NIOLockedValueBox<CheckedContinuation<Int, any Error>?>(nil)
        let app = Application(
            router: router, server: serverBuilder, configuration: .init(address: .hostname(host, port: port), serverName: "tern"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                bound.withLockedValue {
                    $0?.resume(returning: port)
                    $0 = nil
                }
            }, eventLoopGroupProvider: .shared(loops), logger: logger)
        return try await withCheckedThrowingContinuation { continuation in
            bound.withLockedValue { $0 = continuation }
            let task = Task { [logger] in
                var failure = "it stopped before listening"
                do {
                    try await app.run()
                } catch {
                    logger.error("HTTP listener stopped: \(error)")
                    failure = "\(error)"
                }
                // Stopped before it listened (cancelled, or failed to bind): start() must not wait on.
                bound.withLockedValue {
                    $0?.resume(throwing: ClientError.invalidArgument("cannot listen for HTTP on \(self.config.listen): \(failure)"))
                    $0 = nil
                }
            }
            let sampling = Task { await self.history.run(server: self.server) }
            running.withLockedValue { $0 = [task, sampling] }
        }
    }

    /// Stops serving: the app closes its connections, then the group's clients go, then the
    /// event loop.
    public func stop() async {
        let tasks = running.withLockedValue { $0 }
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
        await clusters.shutdown()
        await nameServers?.shutdown()
        try? await loops.shutdownGracefully()
    }

    /// This node, read on its loop (at most once a second).
    func reading() async throws -> NodeReading {
        let now = ContinuousClock.now
        if let last = lastReading.withLockedValue({ $0 }), now - last.at < .seconds(1) { return last.reading }
        let r = try await server.inspect { node, shell in NodeReading(node: node, shell: shell) }.get()
        lastReading.withLockedValue { $0 = (now, r) }
        return r
    }

    // MARK: Routes

    func routes(_ router: Router<BasicRequestContext>) {
        router.get("/health") { _, _ in try await self.health(ready: false) }
        router.get("/ready") { _, _ in try await self.health(ready: true) }
        router.get("/metrics") { request, _ in
            _ = try self.account(request, admin: true)
            let reading = try await self.reading()
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: self.metrics.render(reading))))
        }
        router.get("/") { request, _ in
            _ = try self.account(request)
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: consolePage)))
        }
        router.get("/api/history") { request, _ in
            _ = try self.account(request, admin: true)
            return self.json(self.history.recent, status: .ok)
        }
        router.get("/api/cluster") { request, _ in
            try await self.api(request) { cluster in
                let route = try await cluster.queryRoute()
                let members = try await cluster.status()
                return ClusterView(node: self.server.config.id.name, leader: route.leader, members: members.map(StatusView.init))
            }
        }
        router.get("/api/broker-groups") { request, _ in
            // What the name servers know (one that answers): open to any signed-in account, as
            // the name servers' own answers are.
            _ = try self.account(request)
            guard let nameServers = self.nameServers else { return self.json(BrokerGroupsView(nameservers: [], groups: []), status: .ok) }
            do {
                let list = try await nameServers.brokerGroups()
                return self.json(
                    BrokerGroupsView(nameservers: nameServers.endpoints, groups: zip(list.groups, list.ageMillis).map(BrokerGroupsView.Group.init)), status: .ok
                )
            } catch {
                return self.json(
                    ErrorView(error: "no name server answered (\(nameServers.endpoints.joined(separator: ", "))): \(error)"), status: .serviceUnavailable)
            }
        }
        router.get("/api/topics") { request, _ in
            try await self.api(request) { try await $0.listTopics().map(TopicView.init) }
        }
        router.get("/api/topics/{name}") { request, context in
            let name = try context.parameters.require("name")
            return try await self.api(request) { TopicView(try await $0.describeTopic(name)) }
        }
        router.get("/api/groups") { request, _ in
            let key = try self.account(request)?.accessKey ?? ""
            return try await self.api(request) { cluster in
                let now = ContinuousClock.now
                if let last = self.lastGroups.withLockedValue({ $0[key] }), now - last.at < .milliseconds(1500) { return last.groups }
                var out: [GroupSummary] = []
                for name in try await cluster.listGroups() {
                    let g = try await cluster.groupProgress(name)
                    out.append(GroupSummary(group: name, members: g.members.count, lag: g.totalLag))
                }
                self.lastGroups.withLockedValue {
                    if $0.count > 64 { $0 = [:] }
                    $0[key] = (now, out)
                }
                return out
            }
        }
        router.get("/api/groups/{name}") { request, context in
            let name = try context.parameters.require("name")
            return try await self.api(request) { GroupView(try await $0.groupProgress(name)) }
        }
        router.get("/api/messages/{id}/trace") { request, context in
            let text = try context.parameters.require("id")
            guard let id = MessageID(text.uppercased()) else { throw HTTPError(.badRequest, message: "\(text) is not a message id (20 hexadecimal digits)") }
            return try await self.api(request) { TraceView(try await $0.trace(id: id)) }
        }
        router.get("/api/messages") { request, _ in
            let q = request.uri.queryParameters
            return try await self.api(request) { cluster -> [MessageView] in
                if let text = q["id"].map(String.init) {
                    guard let id = MessageID(text) else { throw HTTPError(.badRequest, message: "id \(text) is not a message id (20 hexadecimal digits)") }
                    return [MessageView(try await cluster.message(id: id))]
                }
                guard let topic = q["topic"].map(String.init), let key = q["key"].map(String.init), !topic.isEmpty, !key.isEmpty else {
                    throw HTTPError(.badRequest, message: "give id=ID, or topic=TOPIC and key=KEY")
                }
                return try await cluster.messages(topic: topic, key: key).map(MessageView.init)
            }
        }
    }

    /// /health: 200 while the node runs. /ready: 200 once the node is a member that knows a
    /// leader and can serve reads; 503 otherwise (Kubernetes takes it out of the service).
    func health(ready: Bool) async throws -> Response {
        struct Health: Encodable {
            var node, role, leader: String
            var term: UInt64
            var ready: Bool
        }
        let h: Health
        do {
            h = try await server.inspect { node, _ in
                let raft = node.replica.raft
                let isMember = raft.membership.member(node.id) != nil
                return Health(
                    node: node.id.name, role: raft.role.rawValue, leader: raft.leader?.name ?? "", term: raft.term,
                    ready: isMember && raft.leader != nil && node.brokerReadable)
            }.get()
        } catch {
            return json(ErrorView(error: "the node is not running"), status: .serviceUnavailable)
        }
        return json(h, status: ready && !h.ready ? .serviceUnavailable : .ok)
    }

    /// The account the request authenticated as (nil without access control); throws 401, or
    /// 403 when `admin` is asked for and the account lacks the right. Without access control,
    /// throws 421 for a Host header that names neither this listener nor an address.
    func account(_ request: Request, admin: Bool = false) throws -> Credentials? {
        guard let secretOf = config.secretOf else {
            try checkHost(request)
            return nil
        }
        let challenge: HTTPFields = [.wwwAuthenticate: "Basic realm=\"tern\", charset=\"UTF-8\""]
        guard let header = request.headers[.authorization], header.hasPrefix("Basic "),
            let decoded = Data(base64Encoded: String(header.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
            let colon = decoded.firstIndex(of: ":")
        else { throw HTTPError(.unauthorized, headers: challenge, message: "access control is on: sign in with an account's access key and secret") }
        let key = String(decoded[..<colon])
        let given = Array(decoded[decoded.index(after: colon)...].utf8)
        // An unknown account is compared with a random secret, in the same time as a known one.
        let secret = secretOf(key)
        guard constantTimeEqual(given, secret ?? AccountClusters.nobody), secret != nil else {
            throw HTTPError(.unauthorized, headers: challenge, message: "wrong access key or secret")
        }
        if admin && !config.isAdmin(key) { throw HTTPError(.forbidden, message: "account \(key) may not read metrics (admin right)") }
        var c = Credentials(accessKey: key, secret: "")
        c.secret = given
        return c
    }

    /// A request to a listener without access control must name it by an address, or by the host
    /// it listens on, or localhost: a name a web page rebinds to 127.0.0.1 is refused.
    func checkHost(_ request: Request) throws {
        guard let header = request.head.authority else { return }
        var host = Substring(header)
        if host.hasPrefix("[") {
            host = host.dropFirst().prefix { $0 != "]" }
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        let name = host.lowercased()
        let listenHost = (parseEndpoint(config.listen)?.host ?? "").lowercased()
        let isAddress = name.contains(":") || (!name.isEmpty && name.allSatisfy { $0.isNumber || $0 == "." })
        guard isAddress || name == "localhost" || name == listenHost else {
            throw HTTPError(.misdirectedRequest, message: "this listener answers requests for its address, localhost or \(listenHost), not \(name)")
        }
    }

    /// Runs an API call on a client of the group speaking for the caller's account; the answer
    /// as JSON, or the group's error with a fitting status.
    func api<T: Encodable & Sendable>(_ request: Request, _ body: @Sendable (TernCluster) async throws -> T) async throws -> Response {
        let credentials = try account(request)
        let cluster = try clusters.cluster(for: credentials)
        do {
            return json(try await body(cluster), status: .ok)
        } catch let error as HTTPError {
            throw error
        } catch ClientError.broker(let e) {
            let status: HTTPResponse.Status
            switch e.code {
            case .topicNotFound, .messageNotFound, .queueNotFound: status = .notFound
            case .permissionDenied, .unauthenticated: status = .forbidden
            case .badRequest, .badBody: status = .badRequest
            default: status = .serviceUnavailable
            }
            return json(ErrorView(error: e.message, code: Int(e.code.rawValue)), status: status)
        } catch {
            return json(ErrorView(error: "\(error)"), status: .serviceUnavailable)
        }
    }

    func json(_ value: some Encodable, status: HTTPResponse.Status) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("{\"error\":\"cannot encode the answer\"}".utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The metrics registry a node's server records into, made before the server starts.
public struct OpsMetricsHandle: Sendable {
    let metrics: OpsMetrics
    public var factory: any CoreMetrics.MetricsFactory { metrics.factory }
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(a.count == b.count ? 0 : 1)
    for i in 0..<max(a.count, b.count) { diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0) }
    return diff == 0
}
