// Three real nodes with peer authentication on (the default: `LocalCluster` writes the cluster
// secret), attacked from plain TCP connections as an outsider would: forged Raft frames of every
// kind, straight in, after a hello without a proof, and after a made-up proof (docs/security.md).
import Foundation
import TernClient
import TernProtocol
import TernRaft
import TernServer
import Testing

@Suite("Integration: peer authentication", .serialized)
struct PeerAuthenticationTests {
    @Test(
        "forged Raft frames of every kind from unauthenticated connections are refused and change no node's term, log, commit index or leader",
        .timeLimit(.minutes(3)))
    func forgedFramesChangeNothing() async throws {
        try await withThreeNodes { cluster, client in
            try await client.createTopic("pa", queues: 1)
            let producer = Producer(cluster: client, group: "pa-producer")
            _ = try await producer.send(TernClient.Message(topic: "pa", body: Array("before".utf8)))
            try await Task.sleep(for: .milliseconds(500))  // every member caught up
            let leaderID = try await leader(of: client)
            let before = try await client.status().sorted { $0.id < $1.id }
            let forgedTerm = before.map(\.term).max()! + 1_000
            let codec = FrameCodec()
            var refused = 0
            for (k, target) in cluster.ids.enumerated() {
                // Claim to be the leader (to a follower) or a follower (to the leader).
                let claimed = target == leaderID ? cluster.ids.first { $0 != leaderID }! : leaderID
                let hello = codec.encode(
                    Frame(
                        opcode: Opcode.peerHello.rawValue, requestID: 1,
                        body: PeerHello(from: NodeID(claimed), to: NodeID(target), nonce: PeerHandshake.nonce()).encoded()))
                let madeUpProof = codec.encode(
                    Frame(
                        opcode: Opcode.peerProof.rawValue, requestID: 2,
                        body: PeerProof(nonce: [], proof: (0..<32).map { _ in UInt8.random(in: 0...255) }).encoded()))
                for m in everyRaftKind(from: NodeID(claimed), to: NodeID(target), term: forgedTerm) {
                    let raft = codec.encode(Frame(opcode: Opcode.raft.rawValue, requestID: 0, body: PeerCodec.encode(m)))
                    for (attempt, prefix) in [("plain", [UInt8]()), ("hello only", hello), ("made-up proof", hello + madeUpProof)] {
                        let (reply, closed) = exchange(cluster.endpoints[k], prefix + raft)
                        #expect(closed, "\(attempt) \(m.kind) to \(target): the connection is closed")
                        var rest = reply
                        var last: Frame?
                        while case .success(.frame(let f, let used)) = codec.decode(rest) {
                            last = f
                            rest.removeFirst(used)
                        }
                        let code = last.flatMap { $0.flags.contains(.error) ? ErrorBody.decode($0.body)?.code : nil }
                        #expect(code == .unauthenticated, "\(attempt) \(m.kind) to \(target): answered \(String(describing: code))")
                        if code == .unauthenticated { refused += 1 }
                    }
                }
            }
            #expect(refused == 3 * 13 * 3)
            try await Task.sleep(for: .seconds(1))
            let after = try await client.status().sorted { $0.id < $1.id }
            for (b, a) in zip(before, after) {
                #expect(a.term == b.term, "\(a.id): term \(b.term) -> \(a.term)")
                #expect(a.leader == b.leader && a.role == b.role, "\(a.id): \(b.role) under \(b.leader) -> \(a.role) under \(a.leader)")
                #expect(
                    a.lastIndex == b.lastIndex && a.commitIndex == b.commitIndex,
                    "\(a.id): log \(b.lastIndex)/\(b.commitIndex) -> \(a.lastIndex)/\(a.commitIndex)")
            }
            _ = try await producer.send(TernClient.Message(topic: "pa", body: Array("after".utf8)))
            let log = (try? String(contentsOfFile: "\(cluster.root)/\(cluster.ids[0]).log", encoding: .utf8)) ?? ""
            #expect(log.contains("has not authenticated as a peer"), "the node logs what it refused")
            #expect(log.contains(" authenticated from "), "and its peers authenticated")
        }
    }
}

/// One Raft message of every kind.
func everyRaftKind(from: NodeID, to: NodeID, term: UInt64) -> [TernRaft.Message] {
    let kinds: [TernRaft.Message.Kind] = [
        .preVote(lastIndex: 1_000_000, lastTerm: term), .preVoteResponse(granted: true), .vote(lastIndex: 1_000_000, lastTerm: term, transfer: true),
        .voteResponse(granted: true),
        .append(prevIndex: 0, prevTerm: 0, entries: [Entry(index: 1, term: term, type: 16, body: [1, 2, 3])], commit: 1_000_000),
        .appendResponse(success: true, index: 1_000_000, hintIndex: 0, hintTerm: 0), .heartbeat(commit: 1_000_000, context: 1),
        .heartbeatResponse(context: 1), .timeoutNow, .termQuery, .termQueryResponse,
        .snapshotChunk(index: 1_000_000, offset: 0, total: 3, data: [1, 2, 3]), .snapshotChunkResponse(index: 1_000_000, nextOffset: 3),
    ]
    return kinds.map { TernRaft.Message(from: from, to: to, term: term, kind: $0) }
}
