// The seed corpus (`tern-fuzz seed DIR`, scripts/fuzz.sh): valid inputs of every kind, from
// which the fuzzer mutates. Checked in under Fuzz/corpus; regenerate only to add kinds.
import Glibc
import TernProtocol
import TernRaft
import TernStorage

extension Fuzz {
    public static func seeds() -> [FuzzTarget: [[UInt8]]] {
        [.frame: frameSeeds(), .request: requestSeeds(), .peer: peerSeeds(), .sql: sqlSeeds(), .recovery: recoverySeeds()]
    }

    static func requestBodies() -> [(selector: Int, body: [UInt8])] {
        let q = QueueRef(topic: "orders", queueID: 3)
        let id = MessageID(entryIndex: 42, slot: 1)
        let message = WireMessage(tag: "red", keys: ["k1", "k2"], properties: ["a": "5", "region": "eu"], body: Array("hello".utf8))
        let account = Account(
            accessKey: "app", secret: Array("0123456789abcdef".utf8), defaultTopic: .subscribe, topics: ["orders": .all], groups: ["g": .deny])
        return [
            (0, NameRequest(name: "orders").encoded()),
            (1, SendRequest(topic: "orders", queueID: 1, producerGroup: "pg", producerID: 7, sequence: 9, messages: [message, message]).encoded()),
            (2, [0, 0, 0, 0, 0, 0, 0, 1] + SendRequest(topic: "t", queueID: 0, messages: [message]).encoded()),
            (3, PullRequest(topic: "orders", queueID: 2, offset: 10, maxWaitMillis: 100, tagFilter: "red||blue", sqlFilter: "a > 3").encoded()),
            (4, HeartbeatRequest(group: "g", clientID: "c", mode: .clustering, topics: ["orders", "audit"], sqlFilter: "a = 1").encoded()),
            (5, CommitOffsetRequest(group: "g", offsets: [q: 5, QueueRef(topic: "x", queueID: 0): 1]).encoded()),
            (6, QueryOffsetRequest(group: "g", queue: q).encoded()),
            (7, TopicRequest(name: "orders", queues: 8).encoded()),
            (8, Empty().encoded()),
            (9, UnregisterRequest(group: "g", clientID: "c").encoded()),
            (10, QueryMessageRequest(topic: "orders", key: "k1").encoded()),
            (10, QueryMessageRequest(id: id).encoded()),
            (11, ResetOffsetRequest(group: "g", topic: "orders", timestamp: 1_700_000_000_000).encoded()),
            (12, MessageIDRequest(ids: [id, MessageID(entryIndex: 1, slot: 0)]).encoded()),
            (13, LockRequest(group: "g", clientID: "c", queues: [q]).encoded()),
            (14, SendBackRequest(group: "g", id: id, delayMillis: 1000, maxReconsumeTimes: 16).encoded()),
            (15, EndTransactionRequest(group: "pg", id: id, decision: .commit, fromCheck: true).encoded()),
            (16, TransactionCheckPoll(group: "pg", clientID: "c", maxWaitMillis: 1000).encoded()),
            (17, ReceiveRequest(group: "g", topic: "orders", tagFilter: "*", maxMessages: 4).encoded()),
            (18, ReceiptRequest(group: "g", handle: ReceiptHandle(queue: q, offset: 4, receiveIndex: 99), invisibleMillis: 500).encoded()),
            (19, AuthHello(accessKey: "app", nonce: [UInt8](repeating: 7, count: 32)).encoded()),
            (20, AuthProof(proof: [UInt8](repeating: 9, count: 32)).encoded()),
            (21, AclCommand.put(account).encoded()),
            (21, AclCommand.delete(accessKey: "app").encoded()),
            (31, NotLeaderDetail(leader: "n2", endpoint: "127.0.0.1:9002", term: 4).encoded()),
            (38, ErrorBody(code: .notLeader, message: "not the leader", detail: [1, 2]).encode()),
            (39, MemberChangeRequest(kind: .addLearner, id: "n4", endpoint: "10.0.0.4:9001").encoded()),
            (40, MemberChangeDone(index: 77).encoded()),
            (42, GroupRequest(name: "billing", fifo: true).encoded()),
            (43, GroupInfo(name: "billing", created: true, fifo: true).encoded()),
            (44, GroupList(names: ["billing", "shipping"]).encoded()),
            (
                46,
                MessageTrace(
                    id: id, topic: "orders", leader: "n2", term: 3,
                    events: [
                        TraceEvent(kind: .delayed, at: 1_700_000_000_000, index: 42, queue: q, detail: 1_700_000_005_000),
                        TraceEvent(kind: .received, at: 1_700_000_006_000, index: 50, group: "g", queue: q, offset: 7, attempt: 2, detail: 1_700_000_036_000),
                        TraceEvent(kind: .retried, at: 1_700_000_007_000, index: 51, group: "g", attempt: 1, copy: MessageID(entryIndex: 51, slot: 0)),
                    ], dropped: 1
                ).encoded()
            ),
            (47, TraceTopicRequest(topic: "orders", on: true).encoded()),
            (
                45,
                GroupProgress(
                    group: "billing", created: false, fifo: false, members: [GroupProgress.Member(clientID: "c1", queues: [q])],
                    queues: [
                        GroupProgress.Queue(
                            queue: q, committed: 4, minOffset: 0, maxOffset: 9, receiveNext: nil, invisible: 0, lastConsumedStored: 1_700_000_000_000)
                    ]
                ).encoded()
            ),
            (
                41,
                MemberList(
                    node: "n1", leader: "n1", term: 3, configurationIndex: 12, committed: true, lastIndex: 40, catchUpTarget: 38,
                    members: [MemberInfo(id: "n1", endpoint: "10.0.0.1:9001", learner: false, incarnation: 9)]
                ).encoded()
            ),
        ]
    }

    static func requestSeeds() -> [[UInt8]] { requestBodies().map { [UInt8($0.selector)] + $0.body } }

    static func frameSeeds() -> [[UInt8]] {
        let codec = FrameCodec()
        let frames = requestBodies().prefix(8).enumerated().map { k, b in
            codec.encode(Frame(opcode: UInt16(k + 1), flags: k % 3 == 0 ? [.response] : [], requestID: UInt64(k), body: b.body))
        }
        let error = codec.encode(ErrorBody.badFrameResponse(.headerChecksum))
        return frames + [frames[0] + frames[1] + frames[2], Array(frames[1].prefix(30)), error]
    }

    static func raftKinds() -> [Message.Kind] {
        [
            .preVote(lastIndex: 10, lastTerm: 2), .preVoteResponse(granted: true), .vote(lastIndex: 10, lastTerm: 2, transfer: true),
            .voteResponse(granted: false), .append(prevIndex: 9, prevTerm: 2, entries: [Entry(index: 10, term: 2, type: 17, body: [1, 2, 3])], commit: 9),
            .appendResponse(success: false, index: 9, hintIndex: 5, hintTerm: 1), .heartbeat(commit: 9, context: 3), .heartbeatResponse(context: 3),
            .timeoutNow, .termQuery, .termQueryResponse, .snapshotChunk(index: 100, offset: 0, total: 10, data: [1, 2, 3, 4, 5]),
            .snapshotChunkResponse(index: 100, nextOffset: 5),
        ]
    }

    static func peerSeeds() -> [[UInt8]] {
        let messages = raftKinds().map { [0] + PeerCodec.encode(Message(from: NodeID("n1"), to: NodeID("n2"), term: 2, kind: $0, incarnation: 0xABCD)) }
        let configuration = Membership([
            Member(id: NodeID("n1"), endpoint: "10.0.0.1:9001", incarnation: 7), Member(id: NodeID("n4"), endpoint: "10.0.0.4:9001", isLearner: true),
        ])
        return messages + [
            [3] + PeerHello(from: NodeID("n1"), to: NodeID("n2"), nonce: [UInt8](repeating: 1, count: 32), endpoint: "10.0.0.1:9001").encoded(),
            [6] + configuration.encode(),
            [4] + PeerProof(nonce: [UInt8](repeating: 2, count: 32), proof: [UInt8](repeating: 3, count: 32)).encoded(),
            [5] + AuthHello(accessKey: "app", nonce: [UInt8](repeating: 4, count: 32)).encoded(),
        ]
    }

    static func sqlSeeds() -> [[UInt8]] {
        let expressions = [
            "a > 3\0a=5", "a >= 5 AND a <= 5 OR b = 'x'\0a=5\0b=x", "NOT (price BETWEEN 10 AND 20)\0price=12.5",
            "region IN ('eu-west', 'us') AND c = TRUE\0region=eu-west\0c=true", "b IS NULL OR b IS NOT NULL", "name LIKE 'ab%' ESCAPE '!'\0name=abc",
            "TAGS = 'red' AND (a <> 6 OR a != 7)\0TAGS=red\0a=1", "x = 'it''s' AND y = -1.5e3\0x=it's\0y=-1500",
        ]
        return expressions.map { Array($0.utf8) }
    }

    /// Real logs written by the commitlog: one entry; many over two segments; a torn tail.
    static func recoverySeeds() -> [[UInt8]] {
        var out: [[UInt8]] = []
        for (count, size) in [(1, 10), (40, 150), (12, 600)] {
            clear(scratch.path)
            var options = CommitlogOptions(segmentSizeBytes: segmentBytes, maxEntryBodyBytes: segmentBytes)
            options.recycledSegmentsMax = 0
            guard let log = try? Commitlog(directory: scratch.path, device: scratch.device, options: options) else { continue }
            let entries = (1...UInt64(count)).map {
                LogEntry(index: $0, term: 1 + $0 / 10, type: UInt8(16 + $0 % 3), body: [UInt8](repeating: UInt8($0), count: size))
            }
            for e in entries {
                try? log.append([e])
                while log.durableIndex < e.index { _ = try? log.pump(wait: true) }
            }
            try? log.close()
            scratch.device.waitForBackgroundWork()
            var bytes = read(scratch.path + "/00000000000000000000").prefix(segmentBytes)
            let second = read(scratch.path + "/00000000000000004096")
            var seed = Array(bytes)
            if !second.isEmpty { seed += second.prefix(segmentBytes) }
            out.append(seed)
            if count == 12 {
                bytes = bytes.prefix(1500)  // torn in the middle of an entry
                out.append(Array(bytes))
            }
        }
        return out
    }

    static func read(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return out }
            out += buffer[0..<n]
        }
    }
}
