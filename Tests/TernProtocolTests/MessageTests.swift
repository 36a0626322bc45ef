import Testing

@testable import TernProtocol

@Suite("Protocol: bodies")
struct MessageTests {
    let send = SendRequest(
        topic: "orders", queueID: 3, producerGroup: "pg", producerID: 42, sequence: 9,
        messages: [
            WireMessage(tag: "a", keys: ["k1", "k2"], properties: ["z": "1", "a": "2"], bornTimestamp: 77, body: [1, 2, 3]),
            WireMessage(body: []),
        ])

    @Test("every body decodes to itself")
    func roundTrips() throws {
        #expect(try SendRequest.decode(send.encoded()) == send)
        let pull = PullRequest(topic: "t", queueID: 1, offset: 99, maxMessages: 5, maxBytes: 100, maxWaitMillis: 250, tagFilter: "a||b")
        #expect(try PullRequest.decode(pull.encoded()) == pull)
        let received = ReceivedMessage(
            id: MessageID(entryIndex: 5, slot: 2), topic: "t", queueID: 1, queueOffset: 8, storeTimestamp: 12, producerGroup: "pg", message: send.messages[0])
        let response = PullResponse(nextOffset: 9, minOffset: 0, maxOffset: 10, messages: [received, received])
        #expect(try PullResponse.decode(response.encoded()) == response)
        let route = RouteResponse(leader: "n2", term: 4, nodes: [("n1", "h:1"), ("n2", "h:2")], topicQueues: 8)
        #expect(try RouteResponse.decode(route.encoded()) == route)
        let commit = CommitOffsetRequest(group: "g", offsets: [QueueRef(topic: "t", queueID: 0): 4, QueueRef(topic: "u", queueID: 2): 1])
        #expect(try CommitOffsetRequest.decode(commit.encoded()) == commit)
        let hb = HeartbeatRequest(group: "g", clientID: "c", mode: .broadcasting, topics: ["t", "u"])
        #expect(try HeartbeatRequest.decode(hb.encoded()) == hb)
        let status = NodeStatus(id: "n1", role: "leader", term: 3, leader: "n1", commitIndex: 10, lastIndex: 11, appliedIndex: 10, durableIndex: 11)
        #expect(try NodeStatus.decode(status.encoded()) == status)
        #expect(try QueryOffsetResponse.decode(QueryOffsetResponse(offset: nil).encoded()).offset == nil)
        #expect(
            try QueryMessageRequest.decode(QueryMessageRequest(id: MessageID(entryIndex: 9, slot: 3)).encoded())
                == QueryMessageRequest(id: MessageID(entryIndex: 9, slot: 3)))
        #expect(
            try QueryMessageRequest.decode(QueryMessageRequest(topic: "t", key: "k", max: 4).encoded()) == QueryMessageRequest(topic: "t", key: "k", max: 4))
        let reset = ResetOffsetRequest(group: "g", topic: "t", timestamp: 77)
        #expect(try ResetOffsetRequest.decode(reset.encoded()) == reset)
        let list = OffsetList(offsets: [QueueRef(topic: "t", queueID: 1): 5])
        #expect(try OffsetList.decode(list.encoded()) == list)
        #expect(try PullRequest.decode(PullRequest(topic: "t", queueID: 0, offset: 1, sqlFilter: "a > 1").encoded()).sqlFilter == "a > 1")
        #expect(try QueryOffsetResponse.decode(QueryOffsetResponse(offset: 0).encoded()).offset == 0)
    }

    @Test("equal property maps encode to equal bytes (sorted by name)")
    func canonicalProperties() {
        var other = send
        other.messages[0].properties = ["a": "2", "z": "1"]
        #expect(other.encoded() == send.encoded())
    }

    @Test("every truncation of a body is an error, never a trap; trailing bytes are refused")
    func truncations() {
        let bytes = send.encoded()
        for cut in 0..<bytes.count {
            #expect(throws: WireError.self) { try SendRequest.decode(Array(bytes[0..<cut])) }
        }
        #expect(throws: WireError.self) { try SendRequest.decode(bytes + [0]) }
    }

    @Test("a length that claims more than is there is refused before allocating")
    func hugeLength() {
        var w = WireWriter()
        w.u8(1); w.string("t"); w.u32(0); w.string(""); w.u64(0); w.u64(0)
        w.u32(UInt32.max)  // message count
        #expect(throws: WireError.self) { try SendRequest.decode(w.bytes) }
    }

    @Test("message ids print as 20 hex digits and parse back")
    func messageIDs() {
        let id = MessageID(entryIndex: 0xABC, slot: 7)
        #expect(id.description == "0000000000000ABC0007")
        #expect(MessageID(id.description) == id)
        #expect(MessageID("xyz") == nil)
    }

    @Test("error bodies carry a detail; NOT_LEADER names the leader")
    func errorDetail() throws {
        let detail = NotLeaderDetail(leader: "n2", endpoint: "127.0.0.1:9002", term: 7)
        let e = ErrorBody(code: ErrorCode.notLeader, message: "not the leader", detail: detail.encoded())
        let back = try #require(ErrorBody.decode(e.encode()))
        #expect(back == e)
        #expect(try NotLeaderDetail.decode(back.detail) == detail)
    }
}
