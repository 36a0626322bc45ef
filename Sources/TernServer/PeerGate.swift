// What an inbound connection may do with peer frames (docs/security.md): the responder's side of
// the handshake, the check of each Raft frame's tag and sender, and what happens otherwise. One
// gate per connection, without sockets (PeerAuthTests drive it with forged frames);
// InboundHandler carries out its outcomes.
import Foundation
import Logging
import NIOConcurrencyHelpers
import TernProtocol
import TernRaft

/// The cluster secret, read again from its file at every handshake, so that a rotated file takes
/// effect for the next connection without a restart. A file that became unreadable or invalid
/// keeps the last good secrets (and says so in the log). Name servers read their registration
/// key file the same way (`what` names the file in the log).
public final class PeerSecretSource: Sendable {
    let path: String
    let what: String
    let logger: Logger
    private let state: NIOLockedValueBox<(secrets: PeerSecrets, modified: Date?)>

    public init(path: String, what: String = "peer secret file", logger: Logger) throws(ServerError) {
        self.path = path
        self.what = what
        self.logger = logger
        let modified = PeerSecretSource.modified(path)  // before reading: a change meanwhile is read next time
        let secrets = try PeerSecrets.load(path: path, what: what)
        state = NIOLockedValueBox((secrets, modified))
    }

    static func modified(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    /// The file's secrets now (read again when its modification time changed).
    public var current: PeerSecrets {
        let m = PeerSecretSource.modified(path)
        return state.withLockedValue { s in
            guard m != s.modified else { return s.secrets }
            do {
                s.secrets = try PeerSecrets.load(path: path, what: what)
                logger.notice("\(what) \(path) changed: \(s.secrets.secrets.count) secret(s) in use from now on")
            } catch {
                logger.error("\(what) \(path) changed but cannot be used, keeping the previous secrets: \(error)")
            }
            s.modified = m
            return s.secrets
        }
    }
}

extension TernServer {
    /// The cluster secret for a group of several members, or nil with `--insecure-peers` (said in
    /// the log) or alone. A group without either does not start.
    func peerAuthentication(members: [NodeID]) throws -> PeerSecretSource? {
        // Alone and without a secret: nobody to authenticate (a member added later needs one).
        guard members.count > 1 || config.peerSecretPath != nil || config.join != nil else { return nil }
        if config.insecurePeers {
            if config.peerSecretPath != nil { throw ServerError("--peer-secret and --insecure-peers exclude each other") }
            logger.warning(
                "PEERS NOT AUTHENTICATED (--insecure-peers): anyone who can reach \(config.listen) can send Raft messages to this node (docs/security.md)")
            return nil
        }
        guard let path = config.peerSecretPath else {
            throw ServerError(
                "a group of \(members.count) members needs --peer-secret FILE, the cluster secret every member holds (tern cluster up writes one; docs/security.md), or --insecure-peers"
            )
        }
        let source = try PeerSecretSource(path: path, logger: logger)
        logger.info("peers authenticated with the cluster secret in \(path) (\(source.current.secrets.count) secret(s))")
        return source
    }
}

/// Which peers may send Raft messages is not the gate's business: any holder of the cluster
/// secret is a peer, and Raft decides what a message from a non-member counts for (nothing: its
/// votes and acknowledgements are not counted; RaftMembership.swift). The gate checks only that
/// a message is from another node to this one.
struct PeerGate {
    let id: NodeID
    /// nil: peers are not authenticated (`--insecure-peers`).
    let secrets: PeerSecretSource?
    private(set) var state = State.open
    /// The endpoint the authenticated peer's hello announced (empty when none).
    private(set) var announcedEndpoint = ""

    enum State {
        case open
        case challenged(PeerHandshake.ResponderPending)
        case authenticated(NodeID, PeerSession)
        /// Refused: the connection is closing, nothing more on it is looked at.
        case closed
    }

    enum Outcome {
        /// A Raft message for the node.
        case deliver(Message)
        /// Answer and keep the connection.
        case reply(Frame)
        /// Answer with this error, log the reason, close the connection.
        case refuse(Frame, String)
        /// Ignore the frame, log the reason, keep the connection.
        case drop(String)
        /// The connection was refused already: nothing to do or log.
        case ignore
    }

    init(id: NodeID, secrets: PeerSecretSource?) {
        self.id = id
        self.secrets = secrets
    }

    var authenticatedPeer: NodeID? {
        if case .authenticated(let peer, _) = state { return peer }
        return nil
    }

    private mutating func refuse(_ frame: Frame, _ code: ErrorCode, _ why: String) -> Outcome {
        state = .closed
        return .refuse(
            Frame(opcode: frame.opcode, flags: [.response, .error], requestID: frame.requestID, body: ErrorBody(code: code, message: why).encode()), why)
    }

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    mutating func accept(_ frame: Frame) -> Outcome {
        if case .closed = state { return .ignore }
        guard let secrets else {
            if frame.opcode == Opcode.raft.rawValue { return open(frame.body) }
            return refuse(frame, .unauthenticated, "peer authentication is off on \(id) (--insecure-peers); the peers must agree")
        }
        switch Opcode(rawValue: frame.opcode) {
        case .peerHello:
            guard case .open = state else { return refuse(frame, .unauthenticated, "a second peer hello on one connection") }
            let hello: PeerHello
            do { hello = try PeerHello.decode(frame.body) } catch { return refuse(frame, .badBody, "peer hello: \(error)") }
            guard hello.to == id, hello.from != id, !hello.from.name.isEmpty else {
                return refuse(frame, .unauthenticated, "peer hello from \(hello.from) to \(hello.to): not from another node to \(id)")
            }
            announcedEndpoint = hello.endpoint
            let (answer, pending) = PeerHandshake.answer(hello, secrets: secrets.current)
            state = .challenged(pending)
            return .reply(Frame(opcode: frame.opcode, flags: .response, requestID: frame.requestID, body: answer.encoded()))
        case .peerProof:
            guard case .challenged(let pending) = state else { return refuse(frame, .unauthenticated, "a peer proof without a hello before it") }
            let proof: PeerProof
            do { proof = try PeerProof.decode(frame.body) } catch { return refuse(frame, .badBody, "peer proof: \(error)") }
            guard let session = pending.verify(proof) else {
                return refuse(frame, .unauthenticated, "\(pending.peer)'s proof does not match \(id)'s peer secret: not the same cluster secret")
            }
            state = .authenticated(pending.peer, session)
            return .reply(Frame(opcode: frame.opcode, flags: .response, requestID: frame.requestID, body: []))
        case .raft:
            guard case .authenticated(let peer, var session) = state else {
                return refuse(frame, .unauthenticated, "a Raft message on a connection that has not authenticated as a peer")
            }
            guard let body = session.open(frame.body) else {
                return refuse(frame, .unauthenticated, "a Raft frame on \(peer)'s connection failed its tag: forged, altered, replayed or out of order")
            }
            state = .authenticated(peer, session)
            let outcome = open(body)
            if case .deliver(let m) = outcome, m.from != peer {
                return .drop("a Raft message claiming to be from \(m.from) on \(peer)'s authenticated connection")
            }
            return outcome
        default:
            return refuse(frame, .unknownOpcode, "opcode \(frame.opcode) is not a peer frame")
        }
    }

    /// Decodes a Raft message and checks it is for this node from another member.
    private mutating func open(_ body: [UInt8]) -> Outcome {
        let message: Message
        do { message = try PeerCodec.decode(body) } catch {
            return refuse(Frame(opcode: Opcode.raft.rawValue, requestID: 0, body: []), .badBody, "a malformed Raft message: \(error)")
        }
        // A message for another id tripped Raft's precondition: any connection could stop a node.
        guard message.to == id, message.from != id else {
            return .drop("a Raft message from \(message.from) to \(message.to): not from another node to \(id)")
        }
        return .deliver(message)
    }
}
