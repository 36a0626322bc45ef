// `tern nameserver`: runs one name server until SIGTERM or SIGINT (docs/operations.md).
import ArgumentParser
import Foundation
import Logging
import TernNameServer
import TernServer

public struct NameServerOptions: ParsableArguments {
    @Option(help: "host:port to listen on (RocketMQ's name servers use 9876).") public var listen = "127.0.0.1:9876"
    @Option(help: "The registration key file (tern nameserver key writes it): registrations must be signed with it.")
    public var registrationKey: String?
    @Option(
        help: "Derive the registration key from the groups' cluster secret file (their --peer-secret); --registration-key keeps the secret off name servers."
    )
    public var peerSecret: String?
    @Flag(help: "Take unsigned registrations (groups run with --insecure-peers; never on a network others can reach).") public var insecure = false
    @Option(help: "A group is dropped when no registration came for this many seconds (default 40; leaders register every 10).")
    public var expirySeconds: UInt64 = 40
    @Option(help: "Seconds after start during which routes are marked incomplete, so clients keep groups they know (default 15).")
    public var warmupSeconds: UInt64 = 15
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") public var logLevel = "info"
    public init() {}

    public func resolve() throws -> (NameServerConfig, Logger.Level) {
        guard parseEndpoint(listen) != nil else { throw ValidationError("--listen \(listen) is not host:port") }
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("--log-level \(logLevel) is not a log level") }
        let given = [registrationKey != nil, peerSecret != nil, insecure].filter { $0 }.count
        guard given == 1 else {
            throw ValidationError(
                given == 0
                    ? "--registration-key FILE (tern nameserver key --peer-secret FILE writes it) is required, or --peer-secret FILE, or --insecure to take unsigned registrations"
                    : "--registration-key, --peer-secret and --insecure exclude each other")
        }
        guard expirySeconds >= 15 && expirySeconds <= 3600 else {
            throw ValidationError("--expiry-seconds must be 15 to 3600 (got \(expirySeconds)); leaders register every 10 s")
        }
        // Read once now, so that a file that cannot be used stops the start with its reason.
        if let path = registrationKey { _ = try PeerSecrets.load(path: path, what: "registration key file") }
        if let path = peerSecret { _ = try PeerSecrets.load(path: path) }
        let check: RegistrationCheck = registrationKey.map { .keyFile($0) } ?? peerSecret.map { .peerSecret($0) } ?? .unsigned
        var cfg = NameServerConfig(listen: listen, check: check)
        cfg.expiryMillis = expirySeconds * 1000
        guard warmupSeconds <= expirySeconds else { throw ValidationError("--warmup-seconds must not exceed --expiry-seconds") }
        cfg.warmupMillis = warmupSeconds * 1000
        return (cfg, level)
    }
}

/// Runs a name server until SIGTERM or SIGINT. Exit status 2 when it cannot start.
public func runNameServer(_ cfg: NameServerConfig, level: Logger.Level) throws {
    LoggingSystem.bootstrap { label in LineLogHandler(label: label, logLevel: level) }
    let logger = Logger(label: "tern.nameserver")
    signal(SIGPIPE, SIG_IGN)
    let server = NameServer(config: cfg, logger: logger)
    let port: Int
    do {
        port = try server.start()
    } catch {
        logger.critical("cannot start: \(error)")
        throw ExitCode(2)
    }
    let how = cfg.check == .unsigned ? " (taking unsigned registrations: --insecure)" : "; registrations signed with the registration key"
    logger.notice("name server listening on \(parseEndpoint(cfg.listen)!.host):\(port)\(how)")
    let signals = StopSignals([SIGTERM, SIGINT]) { sig in
        logger.notice("signal \(sig): stopping")
        server.stop()
    }
    defer { signals.cancel() }
    try? server.wait()
}
