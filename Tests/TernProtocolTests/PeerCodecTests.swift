import TernProtocol
import TernRaft
// The Raft messages' codec: every kind survives a round trip, and bad input (cut short, extra
// bytes, unknown kinds, random bytes) is refused with an error, never a trap.
import Testing

@Suite("Peer codec")
struct PeerCodecTests {
    static let kinds: [Message.Kind] = [
        .preVote(lastIndex: 7, lastTerm: 3),
        .preVoteResponse(granted: true),
        .vote(lastIndex: 1 << 40, lastTerm: 9, transfer: true),
        .voteResponse(granted: false),
        .append(prevIndex: 10, prevTerm: 2, entries: [], commit: 9),
        .append(
            prevIndex: 10, prevTerm: 2, entries: [Entry(index: 11, term: 2, type: 1, body: []), Entry(index: 12, term: 3, type: 17, body: Array(0...255))],
            commit: 11),
        .appendResponse(success: false, index: 5, hintIndex: 3, hintTerm: Message.lostLogHintTerm),
        .heartbeat(commit: 99, context: 1234),
        .heartbeatResponse(context: 1234),
        .timeoutNow,
        .termQuery,
        .termQueryResponse,
    ]

    @Test("every message kind decodes to what was encoded", arguments: kinds)
    func roundTrip(kind: Message.Kind) throws {
        let m = Message(from: "n1", to: "n22", term: 77, kind: kind)
        #expect(try PeerCodec.decode(PeerCodec.encode(m)) == m)
    }

    @Test("every prefix of a valid message and a trailing byte are refused", arguments: kinds)
    func truncatedAndTrailing(kind: Message.Kind) {
        let bytes = PeerCodec.encode(Message(from: "n1", to: "n2", term: 5, kind: kind))
        for cut in 0..<bytes.count {
            #expect(throws: WireError.self) { try PeerCodec.decode(Array(bytes[0..<cut])) }
        }
        #expect(throws: WireError.self) { try PeerCodec.decode(bytes + [0]) }
    }

    @Test("an unknown kind is refused with its number")
    func unknownKind() {
        var bytes = PeerCodec.encode(Message(from: "a", to: "b", term: 1, kind: .timeoutNow))
        bytes[bytes.count - 1] = 200
        #expect { try PeerCodec.decode(bytes) } throws: { ($0 as? WireError)?.description.contains("200") == true }
    }

    @Test("an append claiming four billion entries in a few bytes is refused without allocating them")
    func hugeEntryCount() {
        var w = WireWriter()
        w.string("a"); w.string("b"); w.u64(1); w.u8(5); w.u64(0); w.u64(0); w.u64(0); w.u32(UInt32.max)
        #expect(throws: WireError.self) { try PeerCodec.decode(w.bytes) }
    }

    @Test("20,000 random and mutated inputs decode or fail, never trap (seeded)")
    func fuzz() {
        var rng = SplitMix64(seed: 0x7E57)
        let valid = PeerCodecTests.kinds.map { PeerCodec.encode(Message(from: "n1", to: "n2", term: 3, kind: $0)) }
        var decoded = 0
        for k in 0..<20_000 {
            var bytes: [UInt8]
            if k % 2 == 0 {
                bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                bytes = valid[Int(rng.next() % UInt64(valid.count))]
                for _ in 0..<(1 + Int(rng.next() % 3)) where !bytes.isEmpty {
                    bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            if (try? PeerCodec.decode(bytes)) != nil { decoded += 1 }
        }
        #expect(decoded < 20_000, "some inputs must be refused")
    }
}
