// TLS to the nodes (docs/security.md): the trust the client places in their certificates, and
// the handshake's failures put in words an operator can act on.
import Foundation
import NIOCore
import NIOSSL
import NIOTLS

/// How a client reaches nodes started with `--tls-cert`: over TLS 1.2 or later, trusting
/// certificates signed by the CAs in `caFile`, or by the system's CAs when it is nil. A node's
/// certificate must name the host the client dials (a DNS name, or the IP address when the
/// endpoint is one).
///
/// ```swift
/// var options = TernCluster.Options()
/// options.tls = ClientTLS(caFile: "/etc/tern/ca.pem")
/// let cluster = try TernCluster(endpoints: ["broker-1.example:9001"], options: options)
/// ```
public struct ClientTLS: Sendable, Equatable {
    /// PEM file of the certificate authorities that sign the nodes' certificates.
    public var caFile: String?

    public init(caFile: String? = nil) {
        self.caFile = caFile
    }

    /// The client context; an unreadable CA file is an `invalidArgument` error naming it.
    func makeContext() throws -> NIOSSLContext {
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv12
        if let caFile {
            guard FileManager.default.isReadableFile(atPath: caFile) else {
                throw ClientError.invalidArgument("--tls-ca \(caFile): \(FileManager.default.fileExists(atPath: caFile) ? "not readable" : "no such file")")
            }
            let roots: [NIOSSLCertificate]
            do {
                roots = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw ClientError.invalidArgument("--tls-ca \(caFile): not a PEM file of CA certificates (\(error))")
            }
            guard !roots.isEmpty else { throw ClientError.invalidArgument("--tls-ca \(caFile) holds no PEM certificate") }
            config.trustRoots = .certificates(roots)
        }
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw ClientError.invalidArgument("cannot set up TLS: \(error)")
        }
    }

    /// The SNI name for `host`: none for an IP address (the certificate is then checked against
    /// the address).
    static func serverName(_ host: String) -> String? {
        (try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil
    }
}

/// Completes when the TLS handshake does, or fails with why it did not.
final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let done: EventLoopPromise<Void>
    let endpoint: String
    let usesCustomCA: Bool

    init(done: EventLoopPromise<Void>, endpoint: String, usesCustomCA: Bool) {
        self.done = done
        self.endpoint = endpoint
        self.usesCustomCA = usesCustomCA
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            done.succeed(())
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.fail(HandshakeWatcher.classify(error, endpoint: endpoint, customCA: usesCustomCA))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ClientError.connectionFailed(endpoint: endpoint, reason: HandshakeWatcher.closedDuringHandshake))
        context.fireChannelInactive()
    }

    /// Removed after the handshake (nothing to do), or torn down with a channel that never got
    /// there, such as an address attempt that lost the race.
    func handlerRemoved(context: ChannelHandlerContext) {
        done.fail(ClientError.connectionFailed(endpoint: endpoint, reason: "the connection ended before its TLS handshake"))
    }

    static let closedDuringHandshake =
        "the node closed the connection during the TLS handshake: it serves clients without TLS (no --tls-cert), or it is stopping"

    /// A handshake failure as the client error to throw: a closed connection may be a node
    /// restarting (worth another try elsewhere); a certificate refused is not.
    static func classify(_ error: Error, endpoint: String, customCA: Bool) -> ClientError {
        let text = "\(error)"
        if text.contains("EOF during handshake") || (error as? NIOSSLError) == .uncleanShutdown {
            return .connectionFailed(endpoint: endpoint, reason: closedDuringHandshake)
        }
        return .tls(endpoint: endpoint, reason: explain(error, customCA: customCA))
    }

    /// A handshake failure in words.
    static func explain(_ error: Error, customCA: Bool) -> String {
        let text = "\(error)"
        if let e = error as? NIOSSLExtraError, e == .failedToValidateHostname {
            return "the node's certificate does not name the host dialled (its subject alternative names must include that DNS name or IP address)"
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            let trust = customCA ? "the CA in --tls-ca" : "a CA this system trusts (pass --tls-ca with the CA that signed it)"
            return "the node's certificate did not verify: it is not signed by \(trust), or it has expired or is not yet valid"
        }
        if text.contains("WRONG_VERSION_NUMBER") || text.contains("PACKET_LENGTH_TOO_LONG") {
            return "the node did not answer in TLS: it serves clients without TLS (drop --tls)"
        }
        return "TLS handshake failed: \(text)"
    }
}
