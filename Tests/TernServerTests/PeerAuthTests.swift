// Peer authentication without sockets: the handshake, the frame tags, the secret file, and the
// gate every inbound connection passes, fed forged frames of every Raft kind (docs/security.md).
import Foundation
import Logging
import TernProtocol
import TernRaft
import Testing

@testable import TernServer

let secretA = Array(String(repeating: "a", count: 40).utf8)
let secretB = Array(String(repeating: "b", count: 40).utf8)

/// One of every Raft message kind, from `from` to `to`.
func everyKind(from: NodeID, to: NodeID, term: UInt64) -> [Message] {
    let kinds: [Message.Kind] = [
        .preVote(lastIndex: 1_000, lastTerm: term), .preVoteResponse(granted: true), .vote(lastIndex: 1_000, lastTerm: term, transfer: true),
        .voteResponse(granted: true), .append(prevIndex: 0, prevTerm: 0, entries: [Entry(index: 1, term: term, body: [1, 2, 3])], commit: 1),
        .appendResponse(success: true, index: 1_000, hintIndex: 0, hintTerm: 0), .heartbeat(commit: 1_000, context: 1),
        .heartbeatResponse(context: 1), .timeoutNow, .termQuery, .termQueryResponse,
        .snapshotChunk(index: 1_000, offset: 0, total: 3, data: [1, 2, 3]), .snapshotChunkResponse(index: 1_000, nextOffset: 3),
    ]
    return kinds.map { Message(from: from, to: to, term: term, kind: $0) }
}

/// A secret file in a fresh folder, with the given mode.
func secretFile(_ text: String, mode: Int = 0o600) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tern-peer-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/peer-secret"
    #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
    try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
    return path
}

func gate(_ secret: String?) throws -> PeerGate {
    let source = try secret.map { try PeerSecretSource(path: try secretFile($0), logger: Logger(label: "test")) }
    return PeerGate(id: "n1", secrets: source)
}

/// Runs the initiator's side against a gate: the session to seal with, or the refusal.
func handshake(_ g: inout PeerGate, from: NodeID = "n2", secrets: PeerSecrets) -> Result<PeerSession, ServerError> {
    let hello = PeerHello(from: from, to: "n1", nonce: PeerHandshake.nonce())
    guard case .reply(let answer) = g.accept(Frame(opcode: Opcode.peerHello.rawValue, requestID: 1, body: hello.encoded())) else {
        return .failure(ServerError("hello refused"))
    }
    guard let a = try? PeerProof.decode(answer.body), let (proof, session) = PeerHandshake.verifyAnswer(a, hello: hello, secrets: secrets) else {
        return .failure(ServerError("answer not verified"))
    }
    switch g.accept(Frame(opcode: Opcode.peerProof.rawValue, requestID: 2, body: proof.encoded())) {
    case .reply: return .success(session)
    case .refuse(_, let why): return .failure(ServerError(why))
    default: return .failure(ServerError("unexpected"))
    }
}

func raftFrame(_ m: Message, sealedBy session: inout PeerSession?) -> Frame {
    var body = PeerCodec.encode(m)
    if session != nil { body = session!.seal(body) }
    return Frame(opcode: Opcode.raft.rawValue, requestID: 0, body: body)
}

func refusedUnauthenticated(_ outcome: PeerGate.Outcome) -> Bool {
    guard case .refuse(let frame, _) = outcome, frame.flags.contains(.error), let e = ErrorBody.decode(frame.body) else { return false }
    return e.code == .unauthenticated
}

@Suite("Peer authentication")
struct PeerAuthTests {
    @Test("every Raft kind on a connection that never authenticated is refused UNAUTHENTICATED, none delivered")
    func unauthenticatedFramesRefused() throws {
        for m in everyKind(from: "n2", to: "n1", term: 1_021) {
            var g = try gate(String(repeating: "s", count: 64))
            var none: PeerSession? = nil
            #expect(refusedUnauthenticated(g.accept(raftFrame(m, sealedBy: &none))), "\(m.kind)")
        }
    }

    @Test("the same secret: both proofs check, sealed frames of every kind are delivered in order")
    func handshakeAndSealedFrames() throws {
        var g = try gate(String(decoding: secretA, as: UTF8.self))
        var session: PeerSession? = try handshake(&g, secrets: PeerSecrets(secrets: [secretA])).get()
        #expect(g.authenticatedPeer == "n2")
        for m in everyKind(from: "n2", to: "n1", term: 3) {
            guard case .deliver(let got) = g.accept(raftFrame(m, sealedBy: &session)) else {
                Issue.record("not delivered: \(m.kind)")
                continue
            }
            #expect(got == m)
        }
    }

    @Test("a wrong secret fails both ways: the initiator rejects the answer, the gate rejects a forged proof and every frame after it")
    func wrongSecret() throws {
        var g = try gate(String(decoding: secretA, as: UTF8.self))
        guard case .failure = handshake(&g, secrets: try PeerSecrets(secrets: [secretB])) else {
            Issue.record("a handshake with another secret succeeded")
            return
        }
        // An initiator holding secret B that proves it as the protocol says, on the real answer.
        var g2 = try gate(String(decoding: secretA, as: UTF8.self))
        let hello = PeerHello(from: "n2", to: "n1", nonce: PeerHandshake.nonce())
        guard case .reply(let answerFrame) = g2.accept(Frame(opcode: Opcode.peerHello.rawValue, requestID: 1, body: hello.encoded())) else {
            Issue.record("hello refused")
            return
        }
        let answer = try PeerProof.decode(answerFrame.body)
        let transcript = PeerHandshake.transcript(from: "n2", to: "n1", initiatorNonce: hello.nonce, responderNonce: answer.nonce)
        let proofB = PeerProof(nonce: [], proof: PeerHandshake.mac(secretB, "initiator", transcript))
        #expect(refusedUnauthenticated(g2.accept(Frame(opcode: Opcode.peerProof.rawValue, requestID: 2, body: proofB.encoded()))))
        // ... and frames sealed under B's session key, in the same batch after the refusal, are not looked at.
        var sessionB: PeerSession? = PeerSession(key: PeerHandshake.mac(secretB, "session", transcript))
        for m in everyKind(from: "n2", to: "n1", term: 9) {
            guard case .ignore = g2.accept(raftFrame(m, sealedBy: &sessionB)) else {
                Issue.record("a frame after the refusal was looked at: \(m.kind)")
                continue
            }
        }
        #expect(g2.isClosed)
        // The responder's own proof sent back as the initiator's (a reflection) is refused too.
        var g3 = try gate(String(decoding: secretA, as: UTF8.self))
        let hello3 = PeerHello(from: "n2", to: "n1", nonce: PeerHandshake.nonce())
        guard case .reply(let answer3) = g3.accept(Frame(opcode: Opcode.peerHello.rawValue, requestID: 1, body: hello3.encoded())) else {
            Issue.record("hello refused")
            return
        }
        let reflected = PeerProof(nonce: [], proof: try PeerProof.decode(answer3.body).proof)
        #expect(refusedUnauthenticated(g3.accept(Frame(opcode: Opcode.peerProof.rawValue, requestID: 2, body: reflected.encoded()))))
    }

    @Test("a sealed frame does not show the message: a body's bytes are not in it")
    func sealedIsEncrypted() throws {
        var g = try gate(String(decoding: secretA, as: UTF8.self))
        var session: PeerSession? = try handshake(&g, secrets: PeerSecrets(secrets: [secretA])).get()
        let marker = Array("a message body anyone on the path would like to read".utf8)
        let m = Message(from: "n2", to: "n1", term: 3, kind: .append(prevIndex: 0, prevTerm: 0, entries: [Entry(index: 1, term: 3, body: marker)], commit: 0))
        let frame = raftFrame(m, sealedBy: &session)
        #expect(PeerCodec.encode(m).count + PeerSession.tagBytes == frame.body.count)
        #expect(!(0...(frame.body.count - marker.count)).contains { frame.body[$0..<($0 + marker.count)].elementsEqual(marker) })
        guard case .deliver(let got) = g.accept(frame) else {
            Issue.record("not delivered")
            return
        }
        #expect(got == m)
    }

    @Test("a frame altered, replayed, reordered or sent unsealed after the handshake closes the connection")
    func tamperedFrames() throws {
        let m = everyKind(from: "n2", to: "n1", term: 3)
        for attack in ["alter", "replay", "reorder", "unsealed"] {
            var g = try gate(String(decoding: secretA, as: UTF8.self))
            var session: PeerSession? = try handshake(&g, secrets: PeerSecrets(secrets: [secretA])).get()
            var first = raftFrame(m[0], sealedBy: &session)
            let second = raftFrame(m[1], sealedBy: &session)
            switch attack {
            case "alter":
                first.body[3] ^= 1
                #expect(refusedUnauthenticated(g.accept(first)), "\(attack)")
                // The connection is done: even the untouched next frame is not delivered.
                guard case .ignore = g.accept(second) else { Issue.record("a frame after a failed tag was looked at"); continue }
            case "replay":
                guard case .deliver = g.accept(first) else { Issue.record("first frame refused"); continue }
                #expect(refusedUnauthenticated(g.accept(first)), "\(attack)")
            case "reorder":
                #expect(refusedUnauthenticated(g.accept(second)), "\(attack)")
            default:
                var none: PeerSession? = nil
                #expect(refusedUnauthenticated(g.accept(raftFrame(m[0], sealedBy: &none))), "\(attack)")
            }
        }
    }

    @Test("an authenticated peer's message claiming another sender is dropped, the connection kept")
    func spoofedSender() throws {
        var g = try gate(String(decoding: secretA, as: UTF8.self))
        var session: PeerSession? = try handshake(&g, secrets: PeerSecrets(secrets: [secretA])).get()
        guard case .drop = g.accept(raftFrame(Message(from: "n3", to: "n1", term: 5, kind: .timeoutNow), sealedBy: &session)) else {
            Issue.record("a message from n3 on n2's connection was not dropped")
            return
        }
        guard case .deliver = g.accept(raftFrame(Message(from: "n2", to: "n1", term: 5, kind: .termQuery), sealedBy: &session)) else {
            Issue.record("the connection did not carry on")
            return
        }
    }

    @Test("a hello to another node, from this node's own id, twice, or a proof without a hello is refused; a new member with the secret is a peer")
    func handshakeMisuse() throws {
        let secrets = try PeerSecrets(secrets: [secretA])
        var g = try gate(String(decoding: secretA, as: UTF8.self))
        // Which ids are members is the configuration's business (Raft counts nothing from a
        // non-member): a node being added proves the cluster secret like any other.
        if case .failure(let e) = handshake(&g, from: "n9", secrets: secrets) { Issue.record("a new member holding the secret was refused: \(e)") }
        var self1 = try gate(String(decoding: secretA, as: UTF8.self))
        let fromSelf = PeerHello(from: "n1", to: "n1", nonce: PeerHandshake.nonce())
        #expect(refusedUnauthenticated(self1.accept(Frame(opcode: Opcode.peerHello.rawValue, requestID: 1, body: fromSelf.encoded()))))
        var g2 = try gate(String(decoding: secretA, as: UTF8.self))
        let toOther = PeerHello(from: "n2", to: "n3", nonce: PeerHandshake.nonce())
        #expect(refusedUnauthenticated(g2.accept(Frame(opcode: Opcode.peerHello.rawValue, requestID: 1, body: toOther.encoded()))))
        var g3 = try gate(String(decoding: secretA, as: UTF8.self))
        _ = try handshake(&g3, secrets: secrets).get()
        let again = PeerHello(from: "n2", to: "n1", nonce: PeerHandshake.nonce())
        #expect(refusedUnauthenticated(g3.accept(Frame(opcode: Opcode.peerHello.rawValue, requestID: 3, body: again.encoded()))))
        var g4 = try gate(String(decoding: secretA, as: UTF8.self))
        let proof = PeerProof(nonce: [], proof: [UInt8](repeating: 0, count: 32))
        #expect(refusedUnauthenticated(g4.accept(Frame(opcode: Opcode.peerProof.rawValue, requestID: 1, body: proof.encoded()))))
    }

    @Test("rotation: a responder answers with its first secret, an initiator accepts any of its own")
    func rotation() throws {
        let cases: [(responder: String, initiator: [[UInt8]], ok: Bool)] = [
            ("\(String(decoding: secretA, as: UTF8.self))\n\(String(decoding: secretB, as: UTF8.self))", [secretB, secretA], true),
            ("\(String(decoding: secretB, as: UTF8.self))\n\(String(decoding: secretA, as: UTF8.self))", [secretA, secretB], true),
            ("# new\n\(String(decoding: secretB, as: UTF8.self))\n", [secretB], true),
            (String(decoding: secretA, as: UTF8.self), [secretB], false),
        ]
        for c in cases {
            var g = try gate(c.responder)
            let ok: Bool
            if case .success = handshake(&g, secrets: try PeerSecrets(secrets: c.initiator)) { ok = true } else { ok = false }
            #expect(ok == c.ok, "responder \(c.responder.prefix(3)), initiator \(c.initiator.count) secrets")
        }
    }

    @Test("the secret file: readable by others, too short or empty is refused with the reason")
    func secretFileChecks() throws {
        let good = String(repeating: "x", count: 32)
        #expect(try PeerSecrets.load(path: secretFile(good)).secrets == [Array(good.utf8)])
        #expect(throws: ServerError.self) { try PeerSecrets.load(path: try secretFile(good, mode: 0o644)) }
        #expect(throws: ServerError.self) { try PeerSecrets.load(path: try secretFile("short\n")) }
        #expect(throws: ServerError.self) { try PeerSecrets.load(path: try secretFile("# only a comment\n\n")) }
        #expect(throws: ServerError.self) { try PeerSecrets.load(path: "/nonexistent/peer-secret") }
        #expect(PeerSecrets.generate().count == 64)
    }

    @Test("without authentication (--insecure-peers) Raft frames pass and a hello is refused: both sides must agree")
    func insecure() throws {
        var g = try gate(nil)
        var none: PeerSession? = nil
        guard case .deliver = g.accept(raftFrame(everyKind(from: "n2", to: "n1", term: 1)[0], sealedBy: &none)) else {
            Issue.record("not delivered")
            return
        }
        let hello = PeerHello(from: "n2", to: "n1", nonce: PeerHandshake.nonce())
        #expect(refusedUnauthenticated(g.accept(Frame(opcode: Opcode.peerHello.rawValue, requestID: 1, body: hello.encoded()))))
    }
}
