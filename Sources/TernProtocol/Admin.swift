// Administration and lookups on the wire: topics (create, update, delete, list, describe),
// the route and a node's status, leadership transfer, and looking messages up by id or key.

public struct TopicRequest: WireCodable, Equatable {
    public var name: String
    /// Queues, for create; ignored otherwise.
    public var queues: UInt32
    /// The messages the topic takes, for create (absent from older clients: mixed).
    public var type: TopicType
    public init(name: String, queues: UInt32 = 0, type: TopicType = .mixed) {
        self.name = name
        self.queues = queues
        self.type = type
    }
    public func encode(into w: inout WireWriter) {
        w.string(name)
        w.u32(queues)
        if type != .mixed { w.u8(type.rawValue) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        name = try r.string("name")
        queues = try r.u32("queues")
        type = .mixed
        if !r.atEnd { type = try TopicType.decode(r.u8("topic type")) }
    }
}

/// The messages a topic takes (RocketMQ 5's topic message type, the same numbers): a typed topic
/// refuses a send of another type (`wrongMessageType`). Mixed (Tern's default, and every topic
/// created before types existed) takes them all.
public enum TopicType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case mixed = 0
    case normal = 1
    case fifo = 2
    case delay = 3
    case transaction = 4

    public var description: String {
        switch self {
        case .mixed: "mixed"
        case .normal: "normal"
        case .fifo: "fifo"
        case .delay: "delay"
        case .transaction: "transaction"
        }
    }

    public init?(name: String) {
        guard let t = TopicType.allCases.first(where: { $0.description == name }) else { return nil }
        self = t
    }

    public static func decode(_ raw: UInt8) throws(WireError) -> TopicType {
        guard let t = TopicType(rawValue: raw) else { throw WireError("topic type \(raw) is unknown") }
        return t
    }

    /// The type of one message, from its properties: a half message is a transaction's, one with
    /// a delay or delivery time a delayed one, one with a sharding key (RocketMQ's message group)
    /// a FIFO one; any other is normal.
    public static func of(_ properties: [String: String]) -> TopicType {
        if properties["TRAN_MSG"] == "true" { return .transaction }
        if properties["TIMER_DELIVER_MS"] != nil || properties["TIMER_DELAY_MS"] != nil || properties["DELAY"] != nil { return .delay }
        if properties["SHARDING_KEY"] != nil { return .fifo }
        return .normal
    }
}

/// A consumer group's settings, made before first use (`tern admin group create`); other groups
/// come into being when first used, with the defaults. `fifo`: receive/ack hands out a queue's
/// messages one batch at a time, the next only once every earlier one is acknowledged.
public struct GroupRequest: WireCodable, Equatable {
    public var name: String
    public var fifo: Bool
    public init(name: String, fifo: Bool = false) {
        self.name = name
        self.fifo = fifo
    }
    public func encode(into w: inout WireWriter) {
        w.string(name)
        w.u8(fifo ? 1 : 0)
    }
    public init(from r: inout WireReader) throws(WireError) {
        name = try r.string("name")
        let flag = try r.u8("fifo")
        guard flag <= 1 else { throw WireError("fifo flag \(flag) is not 0 or 1") }
        fifo = flag == 1
    }
}

/// What the group knows of a consumer group: whether it was created, and its settings.
public struct GroupInfo: WireCodable, Equatable {
    public var name: String
    public var created: Bool
    public var fifo: Bool
    public init(name: String, created: Bool, fifo: Bool) {
        self.name = name
        self.created = created
        self.fifo = fifo
    }
    public func encode(into w: inout WireWriter) {
        w.string(name)
        w.u8(created ? 1 : 0)
        w.u8(fifo ? 1 : 0)
    }
    public init(from r: inout WireReader) throws(WireError) {
        name = try r.string("name")
        created = try r.u8("created") == 1
        fifo = try r.u8("fifo") == 1
    }
}

public struct TopicInfo: Equatable, Sendable {
    public struct Queue: Equatable, Sendable {
        public var queueID: UInt32
        public var minOffset: UInt64
        public var maxOffset: UInt64
        public init(queueID: UInt32, minOffset: UInt64, maxOffset: UInt64) {
            self.queueID = queueID
            self.minOffset = minOffset
            self.maxOffset = maxOffset
        }
    }
    public var name: String
    public var queues: [Queue]
    public var type: TopicType
    /// Message tracing is on for the topic (docs/operations.md, "Tracing a message").
    public var traced: Bool
    public init(name: String, queues: [Queue], type: TopicType = .mixed, traced: Bool = false) {
        self.name = name
        self.queues = queues
        self.type = type
        self.traced = traced
    }
}

public struct TopicList: WireCodable, Equatable {
    public var topics: [TopicInfo]
    public init(topics: [TopicInfo]) { self.topics = topics }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(topics.count))
        for t in topics {
            w.string(t.name)
            w.u32(UInt32(t.queues.count))
            for q in t.queues {
                w.u32(q.queueID)
                w.u64(q.minOffset)
                w.u64(q.maxOffset)
            }
        }
        // Types after the list, only when a topic is typed (or traced), then tracing flags, only
        // when a topic is traced: readers older than these refuse trailing bytes, so a group
        // without typed or traced topics answers as before.
        let traced = topics.contains(where: \.traced)
        if traced || topics.contains(where: { $0.type != .mixed }) { for t in topics { w.u8(t.type.rawValue) } }
        if traced { for t in topics { w.bool(t.traced) } }
    }
    public init(from r: inout WireReader) throws(WireError) {
        var list: [TopicInfo] = []
        for _ in 0..<(try r.u32("count")) {
            let name = try r.string("name")
            var queues: [TopicInfo.Queue] = []
            for _ in 0..<(try r.u32("queues")) {
                queues.append(TopicInfo.Queue(queueID: try r.u32("queue"), minOffset: try r.u64("min"), maxOffset: try r.u64("max")))
            }
            list.append(TopicInfo(name: name, queues: queues))
        }
        if !r.atEnd {
            for k in list.indices { list[k].type = try TopicType.decode(r.u8("topic type")) }
        }
        if !r.atEnd {
            for k in list.indices { list[k].traced = try r.bool("traced") }
        }
        topics = list
    }
}

/// What a node knows of the group: the members and their endpoints, the leader, and (when the
/// request named one) the topic's queue count, 0 when the topic does not exist.
public struct RouteResponse: WireCodable, Equatable {
    public var leader: String
    public var term: UInt64
    public var nodes: [(id: String, endpoint: String)]
    public var topicQueues: UInt32
    /// The topic's type (absent from older nodes: mixed).
    public var topicType: TopicType = .mixed
    /// The answering node's broker group (absent: the default, g1).
    public var brokerGroup = BrokerGroupName.defaultName

    public init(leader: String, term: UInt64, nodes: [(id: String, endpoint: String)], topicQueues: UInt32) {
        self.leader = leader
        self.term = term
        self.nodes = nodes
        self.topicQueues = topicQueues
    }
    public static func == (a: RouteResponse, b: RouteResponse) -> Bool {
        a.leader == b.leader && a.term == b.term && a.topicQueues == b.topicQueues && a.topicType == b.topicType && a.brokerGroup == b.brokerGroup
            && a.nodes.map(\.id) == b.nodes.map(\.id) && a.nodes.map(\.endpoint) == b.nodes.map(\.endpoint)
    }
    public func encode(into w: inout WireWriter) {
        w.string(leader)
        w.u64(term)
        w.u16(UInt16(nodes.count))
        for n in nodes {
            w.string(n.id)
            w.string(n.endpoint)
        }
        w.u32(topicQueues)
        // Only when needed: readers older than these fields refuse trailing bytes.
        let named = brokerGroup != BrokerGroupName.defaultName
        if topicType != .mixed || named { w.u8(topicType.rawValue) }
        if named { w.string(brokerGroup) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        leader = try r.string("leader")
        term = try r.u64("term")
        var list: [(id: String, endpoint: String)] = []
        for _ in 0..<(try r.u16("nodes")) { list.append((try r.string("id"), try r.string("endpoint"))) }
        nodes = list
        topicQueues = try r.u32("topic queues")
        if !r.atEnd { topicType = try TopicType.decode(r.u8("topic type")) }
        if !r.atEnd { brokerGroup = try r.string("broker group") }
    }
}

/// One node's view of itself.
public struct NodeStatus: WireCodable, Equatable {
    public var id: String
    public var role: String
    public var term: UInt64
    public var leader: String
    public var commitIndex: UInt64
    public var lastIndex: UInt64
    public var appliedIndex: UInt64
    public var durableIndex: UInt64
    /// Write batches (each ends in one fdatasync) and bytes of entries this node's log wrote since
    /// it started. Absent (0) from nodes older than these fields.
    public var syncedBatches: UInt64 = 0
    public var bytesWritten: UInt64 = 0
    /// The log's first index (retention moves it), the newest snapshot written, and the bytes
    /// of the data directory as the node last measured them. Absent (0) from older nodes.
    public var firstIndex: UInt64 = 0
    public var snapshotIndex: UInt64 = 0
    public var diskBytes: UInt64 = 0
    /// Entries before this index were deleted by retention's decision (the replicated trim).
    public var trimIndex: UInt64 = 0
    /// Where this node's RocketMQ 5 gRPC front listens ("" when it has none; docs/rocketmq.md).
    public var grpcEndpoint = ""
    /// The node's broker group (absent from older nodes: g1).
    public var brokerGroup = BrokerGroupName.defaultName
    public init(id: String, role: String, term: UInt64, leader: String, commitIndex: UInt64, lastIndex: UInt64, appliedIndex: UInt64, durableIndex: UInt64) {
        self.id = id
        self.role = role
        self.term = term
        self.leader = leader
        self.commitIndex = commitIndex
        self.lastIndex = lastIndex
        self.appliedIndex = appliedIndex
        self.durableIndex = durableIndex
    }
    public func encode(into w: inout WireWriter) {
        w.string(id)
        w.string(role)
        w.u64(term)
        w.string(leader)
        w.u64(commitIndex)
        w.u64(lastIndex)
        w.u64(appliedIndex)
        w.u64(durableIndex)
        w.u64(syncedBatches)
        w.u64(bytesWritten)
        w.u64(firstIndex)
        w.u64(snapshotIndex)
        w.u64(diskBytes)
        w.u64(trimIndex)
        // Only when needed: readers older than these fields refuse trailing bytes.
        let named = brokerGroup != BrokerGroupName.defaultName
        if !grpcEndpoint.isEmpty || named { w.string(grpcEndpoint) }
        if named { w.string(brokerGroup) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        id = try r.string("id")
        role = try r.string("role")
        term = try r.u64("term")
        leader = try r.string("leader")
        commitIndex = try r.u64("commit index")
        lastIndex = try r.u64("last index")
        appliedIndex = try r.u64("applied index")
        durableIndex = try r.u64("durable index")
        if !r.atEnd {
            syncedBatches = try r.u64("synced batches")
            bytesWritten = try r.u64("bytes written")
        }
        if !r.atEnd {
            firstIndex = try r.u64("first index")
            snapshotIndex = try r.u64("snapshot index")
            diskBytes = try r.u64("disk bytes")
            trimIndex = try r.u64("trim index")
        }
        if !r.atEnd { grpcEndpoint = try r.string("grpc endpoint") }
        if !r.atEnd { brokerGroup = try r.string("broker group") }
    }
}

/// A one-field request naming a topic or a node (route query, transfer).
public struct NameRequest: WireCodable, Equatable {
    public var name: String
    public init(name: String) { self.name = name }
    public func encode(into w: inout WireWriter) { w.string(name) }
    public init(from r: inout WireReader) throws(WireError) { name = try r.string("name") }
}

/// Look up messages: by id (`id` set) or by key (the most recent `max` with that key in `topic`).
public struct QueryMessageRequest: WireCodable, Equatable {
    public var id: MessageID?
    public var topic: String
    public var key: String
    public var max: UInt32
    public init(id: MessageID) {
        self.id = id
        topic = ""
        key = ""
        max = 1
    }
    public init(topic: String, key: String, max: UInt32 = 32) {
        id = nil
        self.topic = topic
        self.key = key
        self.max = max
    }
    public func encode(into w: inout WireWriter) {
        w.bool(id != nil)
        w.u64(id?.entryIndex ?? 0)
        w.u16(id?.slot ?? 0)
        w.string(topic)
        w.string(key)
        w.u32(max)
    }
    public init(from r: inout WireReader) throws(WireError) {
        let byID = try r.bool("by id")
        let index = try r.u64("entry index")
        let slot = try r.u16("slot")
        id = byID ? MessageID(entryIndex: index, slot: slot) : nil
        topic = try r.string("topic")
        key = try r.string("key")
        max = try r.u32("max")
    }
}

public struct MessageList: WireCodable, Equatable {
    public var messages: [ReceivedMessage]
    public init(messages: [ReceivedMessage]) { self.messages = messages }
    public func encode(into w: inout WireWriter) {
        w.u32(UInt32(messages.count))
        for m in messages { m.encode(into: &w) }
    }
    public init(from r: inout WireReader) throws(WireError) {
        var list: [ReceivedMessage] = []
        for _ in 0..<(try r.u32("count")) { list.append(try ReceivedMessage(from: &r)) }
        messages = list
    }
}

/// The answer to `takeSnapshot`: the applied index the snapshot holds, and whether it is on disk
/// already (it is written once the node's log is durable through that index).
public struct SnapshotTaken: WireCodable, Equatable {
    public var index: UInt64
    public var written: Bool
    public init(index: UInt64, written: Bool) {
        self.index = index
        self.written = written
    }
    public func encode(into w: inout WireWriter) {
        w.u64(index)
        w.bool(written)
    }
    public init(from r: inout WireReader) throws(WireError) {
        index = try r.u64("index")
        written = try r.bool("written")
    }
}
