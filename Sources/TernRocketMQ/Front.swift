// The RocketMQ 5 gRPC front of one node (`tern serve --grpc-listen HOST:PORT`): a gRPC server on
// its own event loop thread, and a native cluster client of the node's group (with
// `--nameservers`, of every broker group behind them). gRPC traffic never
// runs on the node's event loop; it reaches the node as client requests, like any client's.
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import TernClient
import TernProtocol

/// What a front needs: where to listen, the group's native endpoints and how to reach them.
public struct FrontConfig: Sendable {
    /// host:port of the gRPC listener.
    public var listen: String
    /// host:port clients are told to use for this node (the listen address, unless it is a
    /// wildcard: then the node's client host with the gRPC port).
    public var advertise: String
    /// Native endpoints of the group, this node's first.
    public var nodeEndpoints: [String]
    /// Name servers (the node's `--nameservers`): when given, the front serves every broker
    /// group behind them, each listed as a broker of its own in route answers.
    public var nameservers: [String] = []
    /// The node's broker group: with name servers, handles and ids that name no group (issued
    /// before the front routed) are this group's.
    public var brokerGroup = BrokerGroupName.defaultName
    /// How the front reaches the group: TLS when the nodes serve it, and the account its own
    /// background work speaks for under access control (`--acl-admin`'s; none: only this node's
    /// front is listed in routes).
    public var cluster = TernCluster.Options()
    /// Serve gRPC over TLS with this certificate chain and key (the node's `--tls-cert`).
    public var tls: (certPath: String, keyPath: String)?
    /// Access control: each call must be signed by an account (the node's `--acl`).
    public var access: FrontAccess?
    public var settings = FrontSettings()
    public init(listen: String, advertise: String, nodeEndpoints: [String]) {
        self.listen = listen
        self.advertise = advertise
        self.nodeEndpoints = nodeEndpoints
    }
}

public final class RocketMQFront: Sendable {
    public let config: FrontConfig
    let cluster: TernCluster
    let accounts: AccountClients?
    let service: MessagingFront
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let transport: HTTP2ServerTransport.Posix
    let loops: MultiThreadedEventLoopGroup
    let logger: Logger
    private let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])

    public init(config: FrontConfig, logger: Logger) throws {
        guard let colon = config.listen.lastIndex(of: ":"), let port = Int(config.listen[config.listen.index(after: colon)...]), (0...65535).contains(port)
        else { throw ClientError.invalidArgument("--grpc-listen \(config.listen) is not host:port") }
        let host = String(config.listen[..<colon])
        self.config = config
        self.logger = logger
        var options = config.cluster
        options.requestTimeoutMillis = 10_000
        // One thread for the gRPC connections and the front's connections to the group.
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.loops = loops
        let routed = !config.nameservers.isEmpty
        cluster =
            routed
            ? try TernCluster(nameservers: config.nameservers, options: options, eventLoopGroup: loops)
            : try TernCluster(endpoints: config.nodeEndpoints, options: options, eventLoopGroup: loops)
        var signedOut = options
        signedOut.credentials = nil
        // Through name servers the node's own group is reached from its endpoints at once: the
        // front serves it while no name server answers.
        let own = routed ? (name: config.brokerGroup, endpoints: config.nodeEndpoints) : nil
        accounts = config.access.map {
            AccountClients(
                access: $0, endpoints: config.nodeEndpoints, nameservers: config.nameservers, ownGroup: own, options: signedOut, loops: loops,
                producerGroup: config.settings.producerGroup)
        }
        service = MessagingFront(
            base: Clients(cluster: cluster, accessKey: "", producerGroup: config.settings.producerGroup, ownGroup: own), accounts: accounts,
            settings: config.settings, advertise: config.advertise, nodeGroup: config.brokerGroup, routed: routed, logger: logger)
        let security: HTTP2ServerTransport.Posix.TransportSecurity =
            config.tls.map { .tls(certificateChain: [.file(path: $0.certPath, format: .pem)], privateKey: .file(path: $0.keyPath, format: .pem)) }
            ?? .plaintext
        // Room for the largest body plus its properties and framing.
        let limit = config.settings.maxBodyBytes + (1 << 20)
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        transport = HTTP2ServerTransport.Posix(
            address: bare.contains(":") ? .ipv6(host: bare, port: port) : .ipv4(host: bare, port: port), transportSecurity: security,
            config: .defaults {
                $0.rpc.maxRequestPayloadSize = limit
                // Windows of 8 MiB and frames of up to 1 MiB: fewer frames and window updates
                // when many small requests share a connection.
                $0.http2.targetWindowSize = 8 << 20
                $0.http2.maxFrameSize = 1 << 20
            }, eventLoopGroup: loops)
        server = GRPCServer(transport: transport, services: [service])
    }

    /// Serves until `stop()`; returns once the listener is bound (the port it got), or throws
    /// when it cannot bind.
    public func start() async throws -> Int {
        let serving = Task { [server, logger] in
            do { try await server.serve() } catch { logger.error("rocketmq front stopped: \(error)") }
        }
        let address: GRPCNIOTransportCore.SocketAddress
        do {
            address = try await transport.listeningAddress
        } catch {
            serving.cancel()
            throw ClientError.invalidArgument("cannot listen for gRPC on \(config.listen): \(error)")
        }
        let refresh = Task { [service] in
            while !Task.isCancelled {
                await service.refreshRouteEndpoints()
                try? await Task.sleep(for: .seconds(5))
            }
        }
        let renew = Task { [service] in
            while !Task.isCancelled {
                await service.renewals.renewDue(now: Int64(Date().timeIntervalSince1970 * 1000))
                try? await Task.sleep(for: .seconds(1))
            }
        }
        tasks.withLockedValue { $0 = [serving, refresh, renew] }
        return address.ipv4?.port ?? address.ipv6?.port ?? 0
    }

    /// Stops taking calls, gives those running (a Telemetry stream lasts as long as its client)
    /// two seconds to end, then closes what is left.
    public func stop() async {
        server.beginGracefulShutdown()
        let running = tasks.withLockedValue { $0 }
        running.dropFirst().forEach { $0.cancel() }
        if let serving = running.first {
            let timer = Task {
                try? await Task.sleep(for: .seconds(2))
                serving.cancel()
            }
            await serving.value
            timer.cancel()
        }
        for t in running.dropFirst() { await t.value }
        await accounts?.shutdown()
        await cluster.shutdown()
        try? await loops.shutdownGracefully()
    }
}
