import TernProtocol
import TernStorage
import Testing

@testable import TernBroker

@Suite("Broker: retention's trim entries")
struct TrimTests {
    /// A topic of one queue with `count` single-message sends (entries 2...count+1).
    func filled(_ count: Int) -> Harness {
        var h = Harness()
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        for _ in 0..<count { h.send("t") }
        return h
    }

    @Test("each queue's new minimum is its first row at or after the trim index; a bounded scan stops the trim where it stopped")
    func minimumsAndScanBound() throws {
        let h = filled(10)
        // The messages carry a key each: the key index's bucket is trimmed alongside.
        let (all, reachedAll) = try h.broker.trimMinimums(below: 7)
        #expect(all.map(\.offset) == [5, 5] && all.map(\.queue.topic) == [Broker.keyIndexTopic, "t"] && reachedAll == 7, "entries 2...6 are offsets 0...4")
        // Scanning at most 3 rows: the minimum is 3, and the trim may go only to that row's entry.
        let (bounded, reached) = try h.broker.trimMinimums(below: 7, maxScan: 3)
        #expect(bounded.map(\.offset) == [3, 3] && reached == 5)
    }

    @Test("a trim applies only to the queue incarnation it names: a topic deleted and created again keeps its new rows")
    func recreatedTopicUnderTrim() throws {
        var h = filled(4)
        let q = QueueRef(topic: "t", queueID: 0)
        let stale = try h.broker.trimMinimums(below: 100).0.filter { $0.queue == q }
        #expect(stale.map(\.offset) == [4])
        h.append(BrokerEntryType.admin, AdminCommand.deleteTopic(name: "t").encoded())
        h.append(BrokerEntryType.admin, AdminCommand.createTopic(name: "t", queues: 1).encoded())
        h.send("t")
        h.send("t")
        // The trim proposed before the deletion names the old queue: it moves nothing now.
        #expect(h.append(BrokerEntryType.trim, TrimEntry(index: 7, minimums: stale).encoded()) == .done)
        #expect(h.broker.bounds(q)?.min == 0 && h.broker.bounds(q)?.max == 2)
        #expect(h.broker.trimIndex == 7)
        let pulled = try h.broker.pull(PullRequest(topic: "t", queueID: 0, offset: 0)).get()
        #expect(pulled.messages.count == 2 && pulled.minOffset == 0)
    }
}
