// Messages delivered later than they were stored (a delayed message when it falls due, a half
// message when its transaction commits) are delivered from a copy written at that moment: the
// leader puts a copy item of each into the entry that releases or commits it, and the queue's
// row points at the copy (`QueueRow.storedIndex`). Retention then judges the message's bytes
// by when they were last written, and deleting the old entry never takes a message a queue
// still offers. The message keeps its id (the original entry and slot).
//
// Copy item: store timestamp u64, producer group (string), the message as sent (WireMessage).
// Release entry with copies (type 27): count u32, then per message: id, item (blob); then, when
// the leader stamped its clock (tracing on), `at` u64.
import TernProtocol
import TernStorage

public struct ReleaseCopies: Equatable, Sendable {
    public var items: [(id: MessageID, item: [UInt8])]
    public var at: UInt64?
    public init(items: [(id: MessageID, item: [UInt8])], at: UInt64? = nil) {
        self.items = items
        self.at = at
    }
    public static func == (a: ReleaseCopies, b: ReleaseCopies) -> Bool {
        a.items.map(\.id) == b.items.map(\.id) && a.items.map(\.item) == b.items.map(\.item) && a.at == b.at
    }
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.u32(UInt32(items.count))
        for i in items {
            w.messageID(i.id)
            w.blob(i.item)
        }
        if let at { w.u64(at) }
        return w.bytes
    }
    /// The ids and where each item starts in `bytes`, and the leader's clock when stamped.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> (items: [(id: MessageID, position: UInt32)], at: UInt64?) {
        var r = WireReader(bytes)
        var out: [(id: MessageID, position: UInt32)] = []
        for _ in 0..<(try r.u32("count")) {
            let id = try r.messageID()
            let (start, _) = try r.skipBlob("copy item")
            out.append((id, UInt32(start)))
        }
        let at = r.atEnd ? nil : try r.u64("at")
        try r.finish("release with copies")
        return (out, at)
    }
}

extension Broker {
    /// A copy item of a pending (delayed or half) message, read from the entry that stored it;
    /// nil when that entry is gone.
    public func carryItem(_ t: PendingTimer) throws(StorageError) -> [UInt8]? {
        let body: [UInt8]
        do { body = try source.entryBody(at: t.storedIndex) } catch  where error.code == .invalidArgument { return nil }
        do {
            if t.storedIndex != t.id.entryIndex {
                // Already a copy item: copy it as it is.
                var r = WireReader(body, at: Int(t.position))
                _ = try r.u64()
                _ = try r.string()
                _ = try WireMessage.meta(from: &r)
                return Array(body[Int(t.position)..<r.position])
            }
            var r = WireReader(body)
            let ts = try r.u64("store timestamp")
            let header = try SendHeader(from: &r)
            var m = WireReader(body, at: Int(t.position))
            _ = try WireMessage.meta(from: &m)
            var w = WireWriter(capacity: 16 + m.position - Int(t.position))
            w.u64(ts)
            w.string(header.producerGroup)
            return w.bytes + body[Int(t.position)..<m.position]
        } catch {
            throw StorageError(.corruption, "entry \(t.storedIndex) does not hold the message \(t.id) its timer points at: \(error)")
        }
    }

    /// Releases the delayed messages the entry carries copies of, indexing each copy.
    func applyReleaseCopies(_ items: [(id: MessageID, position: UInt32)], index: UInt64) throws(StorageError) -> ApplyOutcome {
        for item in items {
            try loadDelayBucket(holding: item.id)
            let pending = config.plantedBugs.contains(.releaseTwice) ? (timers.pending[item.id] ?? timers.released[item.id]) : timers.pending[item.id]
            guard let t = pending else { continue }
            timers.release(item.id)
            try indexLate(t, copy: (index, item.position), index: index)
        }
        return .done
    }
}
