// Every error a node answers with, in one set: the code on the wire, a name, and what a client
// does about it. Codes 1-99 concern the frame or the request's encoding; 100 and up concern the
// broker. A struct, not an enum, so that a new code never breaks a caller's `switch` (which
// needs a `default:`), and a code this build does not know still decodes (named "unknown").
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// What a client does on this error.
    public enum Action: String, Sendable {
        /// Send the same request to another node (the leader the detail names, or the next).
        case retryElsewhere = "retry at another node"
        /// Send the same request again after a back-off.
        case retryLater = "retry later"
        /// Do not retry: the request itself is wrong, or its answer is final.
        case fail = "do not retry"
    }

    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    private init(_ raw: UInt16) { rawValue = raw }

    // Frame and request encoding.
    /// The bytes were not a frame (bad magic, version, checksum or length); the node closes the connection.
    public static let badFrame = ErrorCode(1)
    public static let unknownOpcode = ErrorCode(2)
    /// The body does not decode as the opcode's request.
    public static let badBody = ErrorCode(3)
    /// A peer frame on a connection that has not proved it holds the cluster's secret, or a
    /// failed proof or frame tag; the node closes the connection (docs/security.md). Also: a
    /// client request without TLS to a node that requires it, a failed client proof, or a
    /// request without an account to a node that checks access.
    public static let unauthenticated = ErrorCode(4)

    // Broker.
    /// This node is not the leader; the detail names the leader it knows (`NotLeaderDetail`).
    public static let notLeader = ErrorCode(100)
    public static let topicNotFound = ErrorCode(101)
    public static let topicExists = ErrorCode(102)
    public static let messageTooLarge = ErrorCode(103)
    /// An idempotent send whose sequence fell out of the broker's dedupe window.
    public static let sequenceTooOld = ErrorCode(104)
    /// Too many requests waiting, or a read that needs a leader lease this node does not hold yet.
    public static let busy = ErrorCode(105)
    public static let badRequest = ErrorCode(106)
    /// The node's storage failed; it serves nothing until restarted.
    public static let storageFailed = ErrorCode(107)
    public static let queueNotFound = ErrorCode(108)
    /// A SQL92 filter does not parse; the message names the column.
    public static let filterSyntax = ErrorCode(109)
    public static let messageNotFound = ErrorCode(110)
    /// A transaction was decided otherwise already (committed, or rolled back after its checks).
    public static let transactionDecided = ErrorCode(111)
    /// A receipt handle no longer names an invisible message (acknowledged, or delivered again since).
    public static let receiptExpired = ErrorCode(112)
    /// The leader's disk is above its hard limit: sends are refused until retention frees
    /// space; reads, consumption, acknowledgements and offset commits go on.
    public static let storageFull = ErrorCode(113)
    /// The connection's account may not do this (access control, docs/security.md).
    public static let permissionDenied = ErrorCode(114)
    /// A learner may not be promoted yet: it has not caught up with the leader (docs/raft.md).
    /// Final for the request; ask again once `tern admin member list` shows it caught up.
    public static let notCaughtUp = ErrorCode(115)
    /// A send's message is not of its topic's type (`tern admin topic create --type`).
    public static let wrongMessageType = ErrorCode(116)

    /// Every code this build knows, in order (docs/protocol.md lists the same).
    public static let all: [ErrorCode] = [
        .badFrame, .unknownOpcode, .badBody, .unauthenticated,
        .notLeader, .topicNotFound, .topicExists, .messageTooLarge, .sequenceTooOld, .busy, .badRequest,
        .storageFailed, .queueNotFound, .filterSyntax, .messageNotFound, .transactionDecided, .receiptExpired, .storageFull,
        .permissionDenied, .notCaughtUp, .wrongMessageType,
    ]

    public var name: String {
        switch self {
        case .badFrame: "BAD_FRAME"
        case .unknownOpcode: "UNKNOWN_OPCODE"
        case .badBody: "BAD_BODY"
        case .unauthenticated: "UNAUTHENTICATED"
        case .notLeader: "NOT_LEADER"
        case .topicNotFound: "TOPIC_NOT_FOUND"
        case .topicExists: "TOPIC_EXISTS"
        case .messageTooLarge: "MESSAGE_TOO_LARGE"
        case .sequenceTooOld: "SEQUENCE_TOO_OLD"
        case .busy: "BUSY"
        case .badRequest: "BAD_REQUEST"
        case .storageFailed: "STORAGE_FAILED"
        case .queueNotFound: "QUEUE_NOT_FOUND"
        case .filterSyntax: "FILTER_SYNTAX"
        case .messageNotFound: "MESSAGE_NOT_FOUND"
        case .transactionDecided: "TRANSACTION_DECIDED"
        case .receiptExpired: "RECEIPT_EXPIRED"
        case .storageFull: "STORAGE_FULL"
        case .permissionDenied: "PERMISSION_DENIED"
        case .notCaughtUp: "NOT_CAUGHT_UP"
        case .wrongMessageType: "WRONG_MESSAGE_TYPE"
        default: "unknown"
        }
    }

    public var action: Action {
        switch self {
        case .notLeader, .storageFailed: .retryElsewhere
        case .busy, .storageFull: .retryLater
        default: .fail
        }
    }

    public var description: String { "\(name) (\(rawValue))" }
}
