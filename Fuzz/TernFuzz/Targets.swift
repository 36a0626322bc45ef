// Fuzz targets (docs/security.md, "Fuzzed decoders"): each takes arbitrary bytes and traps only
// when a property fails: a decoder that traps or loops on input, a value that does not survive
// encode and decode again, a log that recovery opens but cannot read back. `tern-fuzz` runs them
// under libFuzzer (built with `--sanitize fuzzer`) or replays files through them; the
// `TernFuzzTests` replay the checked-in corpus in every `swift test`.
import TernBroker
import TernProtocol
import TernRaft

public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The frame decoder over a byte stream, as a connection delivers it.
    case frame
    /// Every request body (and the responses a client decodes), by a leading selector byte.
    case request
    /// Raft messages between peers, and the peer and client handshake bodies.
    case peer
    /// The SQL92 filter parser and evaluator.
    case sql
    /// Commitlog recovery over damaged segment bytes.
    case recovery

    public func run(_ bytes: [UInt8]) {
        switch self {
        case .frame: Fuzz.frame(bytes)
        case .request: Fuzz.request(bytes)
        case .peer: Fuzz.peer(bytes)
        case .sql: Fuzz.sql(bytes)
        case .recovery: Fuzz.recovery(bytes)
        }
    }
}

public enum Fuzz {
    /// Decodes whatever it can; a value that decodes must encode to bytes that decode to it again.
    static func roundTrip<T: WireCodable & Equatable>(_: T.Type, _ bytes: [UInt8]) {
        guard let v = try? T.decode(bytes) else { return }
        let again = v.encoded()
        guard let w = try? T.decode(again) else { fatalError("\(T.self): the re-encoded value does not decode") }
        guard w == v else { fatalError("\(T.self): decode(encode(v)) differs from v") }
    }

    /// Frames out of a stream: each decoded frame re-encodes to bytes that decode to it; the
    /// decoder never claims more bytes than it was given nor asks for nothing.
    public static func frame(_ bytes: [UInt8]) {
        let codec = FrameCodec(maxBodyBytes: 1 << 16)
        var rest = bytes[...]
        while !rest.isEmpty {
            switch codec.decode(Array(rest)) {
            case .failure:
                return
            case .success(.needMore(let n)):
                guard n > 0 else { fatalError("needMore(\(n))") }
                return
            case .success(.frame(let f, let used)):
                guard used > 0, used <= rest.count else { fatalError("a frame used \(used) of \(rest.count) bytes") }
                guard case .success(.frame(let g, let again)) = codec.decode(codec.encode(f)), g == f, again == used else {
                    fatalError("a decoded frame does not survive encode and decode")
                }
                _ = ErrorBody.decode(f.body)
                rest = rest.dropFirst(used)
            }
        }
    }

    /// The first byte picks a body type; the rest is the body.
    public static func request(_ bytes: [UInt8]) {
        guard let selector = bytes.first else { return }
        let body = Array(bytes.dropFirst())
        let decoders = Fuzz.bodies
        decoders[Int(selector) % decoders.count](body)
    }

    /// Every body a node or a client decodes from the wire.
    static let bodies: [@Sendable ([UInt8]) -> Void] = [
        { roundTrip(NameRequest.self, $0) }, { roundTrip(SendRequest.self, $0) },
        {
            var r = WireReader($0)
            _ = try? SendHeader(from: &r)
        },
        { roundTrip(PullRequest.self, $0) }, { roundTrip(HeartbeatRequest.self, $0) }, { roundTrip(CommitOffsetRequest.self, $0) },
        { roundTrip(QueryOffsetRequest.self, $0) }, { roundTrip(TopicRequest.self, $0) }, { roundTrip(Empty.self, $0) },
        { roundTrip(UnregisterRequest.self, $0) }, { roundTrip(QueryMessageRequest.self, $0) }, { roundTrip(ResetOffsetRequest.self, $0) },
        { roundTrip(MessageIDRequest.self, $0) }, { roundTrip(LockRequest.self, $0) }, { roundTrip(SendBackRequest.self, $0) },
        { roundTrip(EndTransactionRequest.self, $0) }, { roundTrip(TransactionCheckPoll.self, $0) }, { roundTrip(ReceiveRequest.self, $0) },
        { roundTrip(ReceiptRequest.self, $0) }, { roundTrip(AuthHello.self, $0) }, { roundTrip(AuthProof.self, $0) },
        { roundTrip(AclCommand.self, $0) },
        // Responses, as a client decodes them from a node it does not trust blindly.
        { roundTrip(SendResponse.self, $0) }, { roundTrip(PullResponse.self, $0) }, { roundTrip(RouteResponse.self, $0) },
        { roundTrip(HeartbeatResponse.self, $0) }, { roundTrip(ReceiveResponse.self, $0) }, { roundTrip(TopicList.self, $0) },
        { roundTrip(NodeStatus.self, $0) }, { roundTrip(MessageList.self, $0) }, { roundTrip(AccountList.self, $0) },
        { roundTrip(NotLeaderDetail.self, $0) }, { roundTrip(QueryOffsetResponse.self, $0) }, { roundTrip(OffsetList.self, $0) },
        { roundTrip(LockResponse.self, $0) }, { roundTrip(ChangeInvisibleResponse.self, $0) }, { roundTrip(SnapshotTaken.self, $0) },
        { roundTrip(AuthChallenge.self, $0) }, { _ = ErrorBody.decode($0) },
        // Membership administration (39-41).
        { roundTrip(MemberChangeRequest.self, $0) }, { roundTrip(MemberChangeDone.self, $0) }, { roundTrip(MemberList.self, $0) },
        // Consumer groups: settings and progress (42-45).
        { roundTrip(GroupRequest.self, $0) }, { roundTrip(GroupInfo.self, $0) }, { roundTrip(GroupList.self, $0) },
        {
            if let g = try? GroupProgress.decode($0) { _ = g.totalLag }
            roundTrip(GroupProgress.self, $0)
        },
        // Message trace (46-47).
        { roundTrip(MessageTrace.self, $0) }, { roundTrip(TraceTopicRequest.self, $0) },
    ]

    /// Raft messages and the handshake bodies: the first byte picks which.
    public static func peer(_ bytes: [UInt8]) {
        guard let selector = bytes.first else { return }
        let body = Array(bytes.dropFirst())
        switch selector % 7 {
        case 0, 1, 2:
            guard let m = try? PeerCodec.decode(body) else { return }
            guard let again = try? PeerCodec.decode(PeerCodec.encode(m)), again == m else {
                fatalError("a Raft message does not survive encode and decode")
            }
        case 3: roundTrip(PeerHello.self, body)
        case 4: roundTrip(PeerProof.self, body)
        case 6:
            // A configuration entry's body, as every member decodes it from the log.
            guard let m = Membership.decode(body) else { return }
            guard Membership.decode(m.encode()) == m else { fatalError("a configuration does not survive encode and decode") }
        default: roundTrip(AuthHello.self, body)
        }
    }

    /// An expression, then properties to evaluate it against: the input split at the first
    /// zero byte; the rest gives `name=value` pairs separated by zero bytes.
    public static func sql(_ bytes: [UInt8]) {
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: false)
        let expression = String(decoding: parts.first ?? [], as: UTF8.self)
        guard let filter = try? SQLFilter(expression) else { return }
        var properties: [String: String] = [:]
        for pair in parts.dropFirst() {
            let kv = pair.split(separator: UInt8(ascii: "="), maxSplits: 1)
            guard kv.count == 2 else { continue }
            properties[String(decoding: kv[0], as: UTF8.self)] = String(decoding: kv[1], as: UTF8.self)
        }
        _ = filter.matches(properties: properties, tag: properties["TAGS"] ?? "")
        _ = filter.matches(properties: [:], tag: "")
    }
}
