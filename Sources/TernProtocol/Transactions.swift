// Transactional messages on the wire. A half message is an ordinary send whose one message
// carries `TRAN_MSG=true`: stored, acknowledged, invisible. The producer then ends it with
// `EndTransactionRequest`; one it leaves undecided is asked about through the check polls that
// live producers of its group hold open at the leader.

public enum TransactionProperty {
    /// "true" on a half message.
    public static let half = "TRAN_MSG"
    /// On a check: how many times the broker has asked about this half message, this one included.
    public static let checkTimes = "TRANSACTION_CHECK_TIMES"
}

public enum TransactionDecision: UInt8, Sendable, CustomStringConvertible {
    case commit = 1
    case rollback = 2
    public var description: String { self == .commit ? "commit" : "rollback" }
}

/// Commit or roll back the half message `id` (sent by a producer of `group`). `fromCheck`: the
/// answer to a check rather than the producer's own decision (for the broker's log).
public struct EndTransactionRequest: WireCodable, Equatable {
    public var group: String
    public var id: MessageID
    public var decision: TransactionDecision
    public var fromCheck: Bool
    public init(group: String, id: MessageID, decision: TransactionDecision, fromCheck: Bool = false) {
        self.group = group
        self.id = id
        self.decision = decision
        self.fromCheck = fromCheck
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.messageID(id)
        w.u8(decision.rawValue)
        w.bool(fromCheck)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        id = try r.messageID()
        let d = try r.u8("decision")
        guard let decision = TransactionDecision(rawValue: d) else { throw WireError("transaction decision \(d) is not 1 (commit) or 2 (rollback)") }
        self.decision = decision
        fromCheck = try r.bool("from check")
    }
}

/// A producer of `group` waits up to `maxWaitMillis` for half messages to check. The answer is a
/// `MessageList`: each half message with `TRANSACTION_CHECK_TIMES` set.
public struct TransactionCheckPoll: WireCodable, Equatable {
    public var group: String
    public var clientID: String
    public var maxWaitMillis: UInt32
    public init(group: String, clientID: String, maxWaitMillis: UInt32) {
        self.group = group
        self.clientID = clientID
        self.maxWaitMillis = maxWaitMillis
    }
    public func encode(into w: inout WireWriter) {
        w.string(group)
        w.string(clientID)
        w.u32(maxWaitMillis)
    }
    public init(from r: inout WireReader) throws(WireError) {
        group = try r.string("group")
        clientID = try r.string("client id")
        maxWaitMillis = try r.u32("max wait")
    }
}
