// The peer handshake's bodies (docs/security.md): the protocol's messages, decoded without
// trapping like every other body; the computations over them are TernServer's (PeerAuth.swift).
import TernRaft

/// Initiator to responder: who is connecting to whom, and the initiator's nonce.
public struct PeerHello: WireCodable, Equatable {
    /// Version 2 adds the sender's endpoint; version 1 (without it) is still read.
    public static let version: UInt8 = 2
    /// Length of each side's nonce.
    public static let nonceBytes = 32
    public var from: NodeID
    public var to: NodeID
    public var nonce: [UInt8]
    /// Where the sender listens ("host:port"; empty when unknown): a member added to a group
    /// learns its peers' addresses from their handshakes before its configuration names them.
    /// A hint, not authenticated: the link dialled to it runs its own handshake.
    public var endpoint: String

    public init(from: NodeID, to: NodeID, nonce: [UInt8], endpoint: String = "") {
        self.from = from
        self.to = to
        self.nonce = nonce
        self.endpoint = endpoint
    }

    public func encode(into w: inout WireWriter) {
        w.u8(PeerHello.version)
        w.string(from.name)
        w.string(to.name)
        w.blob(nonce)
        w.string(endpoint)
    }

    public init(from r: inout WireReader) throws(WireError) {
        let v = try r.u8("peer hello version")
        guard v == 1 || v == PeerHello.version else {
            throw WireError("peer hello version \(v) is not supported (this side speaks 1 and \(PeerHello.version))")
        }
        from = NodeID(try r.string("from"))
        to = NodeID(try r.string("to"))
        nonce = try r.blob("nonce", limit: PeerHello.nonceBytes)
        guard nonce.count == PeerHello.nonceBytes else { throw WireError("a nonce of \(nonce.count) bytes, not \(PeerHello.nonceBytes)") }
        endpoint = v >= 2 ? try r.string("endpoint") : ""
    }
}

/// A proof of holding the secret: the responder's answer to a hello (with its nonce), or the
/// initiator's own proof after it.
public struct PeerProof: WireCodable, Equatable {
    public var nonce: [UInt8]
    public var proof: [UInt8]

    public init(nonce: [UInt8], proof: [UInt8]) {
        self.nonce = nonce
        self.proof = proof
    }

    public func encode(into w: inout WireWriter) {
        w.blob(nonce)
        w.blob(proof)
    }

    public init(from r: inout WireReader) throws(WireError) {
        nonce = try r.blob("nonce", limit: PeerHello.nonceBytes)
        proof = try r.blob("proof", limit: 32)
        guard proof.count == 32 else { throw WireError("a proof of \(proof.count) bytes, not 32") }
    }
}
