// Consumer progress on the wire (`tern admin group list | describe`, RocketMQ's consumerProgress):
// the groups the broker knows, and for one group its members, their queues, and per queue the
// committed offset, the queue's bounds, the lag and when the last consumed message was stored.

/// Every consumer group the leader knows of: with committed offsets, receive/ack state, settings,
/// or live members.
public struct GroupList: WireCodable, Equatable {
    public var names: [String]
    public init(names: [String]) { self.names = names }
    public func encode(into w: inout WireWriter) { w.strings(names) }
    public init(from r: inout WireReader) throws(WireError) { names = try r.strings("groups") }
}

public struct GroupProgress: WireCodable, Equatable {
    public struct Member: Equatable, Sendable {
        public var clientID: String
        public var queues: [QueueRef]
        public init(clientID: String, queues: [QueueRef]) {
            self.clientID = clientID
            self.queues = queues
        }
    }

    public struct Queue: Equatable, Sendable {
        public var queue: QueueRef
        /// The next offset the group will consume (its committed offset); nil when it committed none.
        public var committed: UInt64?
        public var minOffset: UInt64
        public var maxOffset: UInt64
        /// Receive/ack groups: the next offset not yet handed out, and the deliveries invisible now.
        public var receiveNext: UInt64?
        public var invisible: UInt32
        /// When the last message the group consumed was stored (ms since 1970; 0: unknown).
        public var lastConsumedStored: UInt64
        public init(
            queue: QueueRef, committed: UInt64?, minOffset: UInt64, maxOffset: UInt64, receiveNext: UInt64? = nil, invisible: UInt32 = 0,
            lastConsumedStored: UInt64 = 0
        ) {
            self.queue = queue
            self.committed = committed
            self.minOffset = minOffset
            self.maxOffset = maxOffset
            self.receiveNext = receiveNext
            self.invisible = invisible
            self.lastConsumedStored = lastConsumedStored
        }

        /// Messages stored and not yet consumed by the group: past its committed offset (or, for a
        /// receive/ack group, not yet handed out or still unacknowledged); what retention deleted
        /// is not counted.
        public var lag: UInt64 {
            if let next = receiveNext { return (maxOffset - Swift.min(Swift.max(next, minOffset), maxOffset)) &+ UInt64(invisible) }
            return maxOffset - Swift.min(Swift.max(committed ?? minOffset, minOffset), maxOffset)
        }
    }

    public var group: String
    public var created: Bool
    public var fifo: Bool
    public var members: [Member]
    public var queues: [Queue]

    public init(group: String, created: Bool, fifo: Bool, members: [Member], queues: [Queue]) {
        self.group = group
        self.created = created
        self.fifo = fifo
        self.members = members
        self.queues = queues
    }

    public var totalLag: UInt64 { queues.reduce(0) { $0 &+ $1.lag } }

    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.u8(created ? 1 : 0)
        w.u8(fifo ? 1 : 0)
        w.u32(UInt32(members.count))
        for m in members {
            w.string(m.clientID)
            w.u32(UInt32(m.queues.count))
            for q in m.queues {
                w.string(q.topic)
                w.u32(q.queueID)
            }
        }
        w.u32(UInt32(queues.count))
        for q in queues {
            w.string(q.queue.topic)
            w.u32(q.queue.queueID)
            w.u8(q.committed == nil ? 0 : 1)
            w.u64(q.committed ?? 0)
            w.u64(q.minOffset)
            w.u64(q.maxOffset)
            w.u8(q.receiveNext == nil ? 0 : 1)
            w.u64(q.receiveNext ?? 0)
            w.u32(q.invisible)
            w.u64(q.lastConsumedStored)
        }
    }

    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        created = try r.u8("created") == 1
        fifo = try r.u8("fifo") == 1
        members = []
        for _ in 0..<(try r.u32("members")) {
            let id = try r.string("client id")
            var queues: [QueueRef] = []
            for _ in 0..<(try r.u32("member queues")) { queues.append(QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue"))) }
            members.append(Member(clientID: id, queues: queues))
        }
        queues = []
        for _ in 0..<(try r.u32("queues")) {
            let ref = QueueRef(topic: try r.string("topic"), queueID: try r.u32("queue"))
            let hasCommitted = try r.u8("committed present") == 1
            let committed = try r.u64("committed")
            let minOffset = try r.u64("min offset")
            let maxOffset = try r.u64("max offset")
            guard minOffset <= maxOffset else { throw WireError("min offset \(minOffset) above max offset \(maxOffset)") }
            let hasNext = try r.u8("receive next present") == 1
            let next = try r.u64("receive next")
            queues.append(
                Queue(
                    queue: ref, committed: hasCommitted ? committed : nil, minOffset: minOffset, maxOffset: maxOffset, receiveNext: hasNext ? next : nil,
                    invisible: try r.u32("invisible"), lastConsumedStored: try r.u64("last consumed stored")))
        }
    }
}
