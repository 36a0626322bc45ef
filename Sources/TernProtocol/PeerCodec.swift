// Raft messages on the wire between members (opcode `raft`, one way). Layout: from, to (strings),
// term u64, the sender's incarnation u64, kind u8, then the kind's fields; entries as index u64, term u64, type u8, body blob;
// a snapshot chunk as index u64, offset u64, total u64, data blob.
import TernRaft

public enum PeerCodec {
    public static func encode(_ m: Message) -> [UInt8] {
        var w = WireWriter(capacity: 64)
        w.string(m.from.name)
        w.string(m.to.name)
        w.u64(m.term)
        w.u64(m.incarnation)
        switch m.kind {
        case .preVote(let i, let t):
            w.u8(1); w.u64(i); w.u64(t)
        case .preVoteResponse(let g):
            w.u8(2); w.bool(g)
        case .vote(let i, let t, let transfer):
            w.u8(3); w.u64(i); w.u64(t); w.bool(transfer)
        case .voteResponse(let g):
            w.u8(4); w.bool(g)
        case .append(let p, let pt, let entries, let c):
            w.u8(5); w.u64(p); w.u64(pt); w.u64(c)
            w.u32(UInt32(entries.count))
            for e in entries {
                w.u64(e.index); w.u64(e.term); w.u8(e.type); w.blob(e.body)
            }
        case .appendResponse(let s, let i, let hi, let ht):
            w.u8(6); w.bool(s); w.u64(i); w.u64(hi); w.u64(ht)
        case .heartbeat(let c, let ctx):
            w.u8(7); w.u64(c); w.u64(ctx)
        case .heartbeatResponse(let ctx):
            w.u8(8); w.u64(ctx)
        case .timeoutNow:
            w.u8(9)
        case .termQuery:
            w.u8(10)
        case .termQueryResponse:
            w.u8(11)
        case .snapshotChunk(let index, let offset, let total, let data):
            w.u8(12); w.u64(index); w.u64(offset); w.u64(total); w.blob(data)
        case .snapshotChunkResponse(let index, let next):
            w.u8(13); w.u64(index); w.u64(next)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> Message {
        var r = WireReader(bytes)
        let from = NodeID(try r.string("from"))
        let to = NodeID(try r.string("to"))
        let term = try r.u64("term")
        let incarnation = try r.u64("incarnation")
        let kind: Message.Kind
        switch try r.u8("kind") {
        case 1: kind = .preVote(lastIndex: try r.u64(), lastTerm: try r.u64())
        case 2: kind = .preVoteResponse(granted: try r.bool())
        case 3: kind = .vote(lastIndex: try r.u64(), lastTerm: try r.u64(), transfer: try r.bool())
        case 4: kind = .voteResponse(granted: try r.bool())
        case 5:
            let p = try r.u64(), pt = try r.u64(), c = try r.u64()
            let n = try r.u32("entry count")
            var entries: [Entry] = []
            entries.reserveCapacity(Int(min(n, 65536)))
            for _ in 0..<n {
                entries.append(Entry(index: try r.u64(), term: try r.u64(), type: try r.u8(), body: try r.blob("entry body")))
            }
            kind = .append(prevIndex: p, prevTerm: pt, entries: entries, commit: c)
        case 6: kind = .appendResponse(success: try r.bool(), index: try r.u64(), hintIndex: try r.u64(), hintTerm: try r.u64())
        case 7: kind = .heartbeat(commit: try r.u64(), context: try r.u64())
        case 8: kind = .heartbeatResponse(context: try r.u64())
        case 9: kind = .timeoutNow
        case 10: kind = .termQuery
        case 11: kind = .termQueryResponse
        case 12: kind = .snapshotChunk(index: try r.u64(), offset: try r.u64(), total: try r.u64(), data: try r.blob("snapshot chunk"))
        case 13: kind = .snapshotChunkResponse(index: try r.u64(), nextOffset: try r.u64())
        case let k: throw WireError("Raft message kind \(k) is unknown")
        }
        try r.finish("Raft message")
        return Message(from: from, to: to, term: term, kind: kind, incarnation: incarnation)
    }
}
