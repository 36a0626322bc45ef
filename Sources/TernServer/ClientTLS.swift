// TLS for clients (`--tls-cert`, `--tls-key`; docs/security.md). Clients and peers share the
// listen port: the first byte of a connection tells a TLS ClientHello (a handshake record,
// 0x16) from a Tern frame (magic "TF", 0x54), so a node with a certificate serves clients over
// TLS while its peers keep their authenticated, sealed plain link. On such a node a plain
// connection may carry the peer handshake and Raft frames only; a client request on it is
// refused with UNAUTHENTICATED.
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The certificate chain and key served to clients. Both files are looked at again when either
/// one's modification time changes, so a renewed certificate reaches new connections without a
/// restart; a pair that no longer loads keeps the previous one in use, with a warning.
final class ServerTLS: Sendable {
    let certPath: String
    let keyPath: String
    private let logger: Logger
    private let current: NIOLockedValueBox<(context: NIOSSLContext, stamp: [Int64])>

    init(certPath: String, keyPath: String, logger: Logger) throws(ServerError) {
        self.certPath = certPath
        self.keyPath = keyPath
        self.logger = logger
        let stamp = ServerTLS.stamp(certPath, keyPath)
        let (context, summary) = try ServerTLS.load(certPath: certPath, keyPath: keyPath)
        current = NIOLockedValueBox((context, stamp))
        logger.info("TLS for clients: \(summary)")
    }

    /// The context for a new connection, reloaded first when a file changed.
    func context() -> NIOSSLContext {
        let stamp = ServerTLS.stamp(certPath, keyPath)
        let (context, changed) = current.withLockedValue { c -> (NIOSSLContext, Bool) in
            let changed = c.stamp != stamp
            if changed { c.stamp = stamp }
            return (c.context, changed)
        }
        guard changed else { return context }
        do {
            let (fresh, summary) = try ServerTLS.load(certPath: certPath, keyPath: keyPath)
            current.withLockedValue { $0.context = fresh }
            logger.notice("TLS for clients: reloaded, \(summary)")
            return fresh
        } catch {
            logger.warning("TLS for clients: keeping the previous certificate: \(error)")
            return context
        }
    }

    private static func stamp(_ paths: String...) -> [Int64] {
        paths.flatMap { path -> [Int64] in
            var st = stat()
            guard stat(path, &st) == 0 else { return [-1, -1] }
            return [Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec) ^ Int64(st.st_size) << 32]
        }
    }

    /// The server context for `certPath` and `keyPath`, and a line about the certificate.
    static func load(certPath: String, keyPath: String) throws(ServerError) -> (NIOSSLContext, String) {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certPath)
        } catch {
            throw ServerError("--tls-cert \(certPath): \(describeFileError(error, what: "a PEM certificate chain"))")
        }
        guard let leaf = chain.first else { throw ServerError("--tls-cert \(certPath) holds no PEM certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw ServerError("--tls-key \(keyPath): \(describeFileError(error, what: "an unencrypted PEM private key"))")
        }
        var config = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        config.minimumTLSVersion = .tlsv12
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: config)
        } catch {
            throw ServerError("--tls-key \(keyPath) does not go with the certificate in --tls-cert \(certPath) (\(error))")
        }
        let notAfter = Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter))
        var summary = "\(certPath), valid until \(notAfter)"
        if notAfter < Date() { summary += " (EXPIRED: clients will refuse it)" }
        return (context, summary)
    }
}

/// What went wrong reading a PEM file, in words.
func describeFileError(_ error: Error, what: String) -> String {
    if let e = error as? NIOSSLError {
        switch e {
        case .noSuchFilesystemObject: return "no such file"
        case .failedToLoadCertificate, .failedToLoadPrivateKey: return "not \(what)"
        default: break
        }
    }
    if let e = error as? BoringSSLError { return "not \(what) (\(e))" }
    return "\(error)"
}

/// The first handler of an inbound connection: looks at its first byte, puts a TLS handler in
/// front of the frame decoder when it begins a TLS handshake, and steps aside.
final class TLSSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    /// The first byte of a TLS handshake record.
    static let handshakeRecord: UInt8 = 0x16
    let tls: ServerTLS?
    let inbound: InboundHandler
    let logger: Logger

    init(tls: ServerTLS?, inbound: InboundHandler, logger: Logger) {
        self.tls = tls
        self.inbound = inbound
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if first == TLSSniffer.handshakeRecord {
            guard let tls else {
                logger.notice(
                    "closing \(context.remoteAddress?.description ?? "?"): it began a TLS handshake, and this node serves clients without TLS (no --tls-cert)")
                context.close(promise: nil)
                return
            }
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context()), position: .after(self))
            } catch {
                context.close(promise: nil)
                return
            }
        } else if tls != nil {
            inbound.clientsRefused = true
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
