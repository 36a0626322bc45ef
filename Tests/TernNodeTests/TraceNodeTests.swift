import TernBroker
import TernProtocol
import TernRaft
import Testing

@testable import TernNode

@Suite("Node: message trace", .serialized)
struct TraceNodeTests {
    @Test("a traced topic's message: stored by this leader in its term, received, acknowledged with the leader's clock; the trace survives a restart")
    func traceThroughTheNode() throws {
        let d = try Driver("trace")
        try d.elect()
        _ = try d.call(.createTopic, TopicRequest(name: "t", queues: 1))
        _ = try d.call(.send, sendRequest(["before"]))
        #expect(!d.node.broker.tracingActive)
        _ = try d.call(.traceTopic, TraceTopicRequest(topic: "t", on: true))
        let described = try TopicList.decode(try d.call(.describeTopic, NameRequest(name: "t"))).topics
        #expect(described.first?.traced == true && described.first?.type == .mixed, "a traced topic says so (its type sent alongside)")
        #expect(throws: ErrorBody.self) { try d.call(.traceTopic, TraceTopicRequest(topic: "missing", on: true)) }
        let sent = try SendResponse.decode(try d.call(.send, sendRequest(["traced"])))
        let id = MessageID(entryIndex: sent.entryIndex, slot: 0)
        // The first message was stored before tracing: no trace.
        #expect(throws: ErrorBody.self) { try d.call(.traceMessage, MessageIDRequest(ids: [MessageID(entryIndex: sent.entryIndex - 2, slot: 0)])) }
        let got = try ReceiveResponse.decode(try d.call(.receive, ReceiveRequest(group: "g", topic: "t", maxMessages: 10, invisibleMillis: 60_000))).deliveries
        let traced = try #require(got.first { $0.message.id == id })
        let ackAt = d.now
        _ = try d.call(.ack, ReceiptRequest(group: "g", handle: traced.handle))
        let trace = try MessageTrace.decode(try d.call(.traceMessage, MessageIDRequest(ids: [id])))
        #expect(trace.leader == "n1" && trace.term == d.node.replica.raft.term)
        #expect(trace.events.map(\.kind) == [.stored, .received, .acknowledged], "\(trace.events)")
        #expect(trace.events[2].at == ackAt, "an acknowledgement is traced at the leader's clock, written into its entry")
        // Replayed from the log after a restart: the same trace.
        try d.close()
        let again = try Driver("trace", directory: d.directory)
        try again.elect()
        #expect(try MessageTrace.decode(try again.call(.traceMessage, MessageIDRequest(ids: [id]))).events == trace.events)
    }
}
