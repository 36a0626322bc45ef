// Peer authentication (docs/security.md). Every member holds a cluster secret. The node that opens
// a connection to a peer (the initiator, which sends its Raft messages on it) and the peer (the
// responder) prove to each other that they hold it, by HMAC-SHA256 over a transcript of both ids
// and a fresh nonce from each side; neither proof can be replayed on another connection. Every
// Raft frame after that is encrypted and authenticated with AES-256-GCM under a session key drawn
// from the same transcript, its sequence number as the nonce: a frame that is forged, altered,
// replayed, dropped from the middle or reordered fails its tag, and the connection closes. The
// secret and the session key never cross the wire.
//
// This file is the protocol without sockets (PeerAuthTests drive it); PeerLink runs the
// initiator's side and InboundHandler the responder's.
import Crypto
import Foundation
import TernProtocol
import TernRaft

/// The secrets of a peer-secret file: one per line (blank lines and lines starting with `#` are
/// skipped), each at least 32 characters. The first is the one this node answers with; a peer's
/// answer is accepted under any of them, so that a secret is rotated without downtime
/// (docs/security.md: add the new one second everywhere, move it first everywhere, drop the old).
public struct PeerSecrets: Sendable, Equatable {
    public let secrets: [[UInt8]]
    public static let minimumLength = 32

    public init(secrets: [[UInt8]]) throws(ServerError) {
        guard !secrets.isEmpty else { throw ServerError("the peer secret file holds no secret") }
        for (k, s) in secrets.enumerated() where s.count < PeerSecrets.minimumLength {
            throw ServerError(
                "peer secret \(k + 1) has \(s.count) characters; at least \(PeerSecrets.minimumLength) are needed (tern cluster up writes 64 hex digits)")
        }
        self.secrets = secrets
    }

    public init(text: String) throws(ServerError) {
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        try self.init(secrets: lines.filter { !$0.isEmpty && !$0.hasPrefix("#") }.map { Array($0.utf8) })
    }

    /// Reads a peer-secret file; refused when others than its owner may read it (as ssh refuses a
    /// private key), or when it holds no usable secret. `what` names the file in errors (a name
    /// server's registration key file has the same form).
    public static func load(path: String, what: String = "peer secret file") throws(ServerError) -> PeerSecrets {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ServerError("cannot read the \(what) \(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & 0o077 == 0 else {
            throw ServerError("the \(what) \(path) may be read by others (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw ServerError("cannot read the \(what) \(path)") }
        do {
            return try PeerSecrets(text: String(decoding: data, as: UTF8.self))
        } catch {
            throw what == "peer secret file" ? error : ServerError("\(what) \(path): \(error.description)")
        }
    }

    /// 64 random hex digits, for a new group's secret file.
    public static func generate() -> String {
        PeerHandshake.nonce().map { String(format: "%02x", $0) }.joined()
    }
}

/// The handshake's computations, shared by both sides.
public enum PeerHandshake {
    public static let nonceBytes = PeerHello.nonceBytes

    public static func nonce() -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    /// What both proofs and the session key are computed over: the protocol's name, both ids
    /// and both nonces (length-prefixed, so that no two transcripts share bytes).
    static func transcript(from: NodeID, to: NodeID, initiatorNonce: [UInt8], responderNonce: [UInt8]) -> [UInt8] {
        var w = WireWriter(capacity: 128)
        w.string("tern peer v1")
        w.string(from.name)
        w.string(to.name)
        w.blob(initiatorNonce)
        w.blob(responderNonce)
        return w.bytes
    }

    static func mac(_ secret: [UInt8], _ label: String, _ transcript: [UInt8]) -> [UInt8] {
        var h = HMAC<SHA256>(key: SymmetricKey(data: secret))
        h.update(data: Array(label.utf8))
        h.update(data: transcript)
        return Array(h.finalize())
    }

    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for k in a.indices { diff |= a[k] ^ b[k] }
        return diff == 0
    }

    /// Responder: the answer to a hello, under its first secret, and what it expects next.
    public static func answer(_ hello: PeerHello, secrets: PeerSecrets) -> (PeerProof, ResponderPending) {
        let responderNonce = PeerHandshake.nonce()
        let t = transcript(from: hello.from, to: hello.to, initiatorNonce: hello.nonce, responderNonce: responderNonce)
        let secret = secrets.secrets[0]
        return (PeerProof(nonce: responderNonce, proof: mac(secret, "responder", t)), ResponderPending(peer: hello.from, transcript: t, secret: secret))
    }

    /// Responder state between its answer and the initiator's proof.
    public struct ResponderPending: Sendable {
        public let peer: NodeID
        let transcript: [UInt8]
        let secret: [UInt8]

        /// The initiator's proof checked: a session to open its frames with, or nil.
        public func verify(_ proof: PeerProof) -> PeerSession? {
            guard PeerHandshake.equal(proof.proof, PeerHandshake.mac(secret, "initiator", transcript)) else { return nil }
            return PeerSession(key: PeerHandshake.mac(secret, "session", transcript))
        }
    }

    /// Initiator: checks the responder's answer under each of its secrets; on a match, its own
    /// proof and the session to seal frames with.
    public static func verifyAnswer(
        _ answer: PeerProof, hello: PeerHello, secrets: PeerSecrets
    ) -> (proof: PeerProof, session: PeerSession)? {
        guard answer.nonce.count == nonceBytes else { return nil }
        let t = transcript(from: hello.from, to: hello.to, initiatorNonce: hello.nonce, responderNonce: answer.nonce)
        for secret in secrets.secrets where equal(answer.proof, mac(secret, "responder", t)) {
            return (PeerProof(nonce: [], proof: mac(secret, "initiator", t)), PeerSession(key: mac(secret, "session", t)))
        }
        return nil
    }
}

/// One direction of an authenticated connection: seals (initiator) or opens (responder) Raft
/// frame bodies with AES-256-GCM under the session key: the body encrypted, followed by the
/// 16-byte tag; the nonce is the frame's sequence number on the connection (from 0, u64 LE after
/// four zero bytes), never sent and never used twice under one key (each connection has its own
/// key). A frame altered, forged, replayed, dropped from the middle or reordered fails its tag.
public struct PeerSession {
    public static let tagBytes = 16
    let key: SymmetricKey
    public private(set) var sequence: UInt64 = 0

    init(key: [UInt8]) { self.key = SymmetricKey(data: key) }

    static func nonce(_ sequence: UInt64) -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: sequence.littleEndian) { bytes.replaceSubrange(4..<12, with: $0) }
        guard let nonce = try? AES.GCM.Nonce(data: bytes) else { preconditionFailure("a 12-byte AES-GCM nonce is always valid") }
        return nonce
    }

    public mutating func seal(_ body: [UInt8]) -> [UInt8] {
        guard let box = try? AES.GCM.seal(body, using: key, nonce: PeerSession.nonce(sequence)) else {
            preconditionFailure("AES-256-GCM with a 32-byte key and a 12-byte nonce does not fail")
        }
        sequence += 1
        var sealed: [UInt8] = []
        sealed.reserveCapacity(body.count + PeerSession.tagBytes)
        sealed.append(contentsOf: box.ciphertext)
        sealed.append(contentsOf: box.tag)
        return sealed
    }

    /// The body decrypted, or nil when the tag does not check under the next sequence number.
    public mutating func open(_ sealed: [UInt8]) -> [UInt8]? {
        guard sealed.count >= PeerSession.tagBytes else { return nil }
        let end = sealed.count - PeerSession.tagBytes
        guard let box = try? AES.GCM.SealedBox(nonce: PeerSession.nonce(sequence), ciphertext: sealed[..<end], tag: sealed[end...]),
            let body = try? AES.GCM.open(box, using: key)
        else { return nil }
        sequence += 1
        return Array(body)
    }
}
