// Between RocketMQ 5's messages and Tern's: which RocketMQ field becomes which Tern property on
// a send, and back on a delivery; status codes for Tern's errors; receipt handles as strings.
import Foundation
import SwiftProtobuf
import TernClient
import TernProtocol
import TernRocketMQProto

/// Properties Tern keeps for RocketMQ's system fields. A user property may not use these names
/// (ILLEGAL_MESSAGE_PROPERTY_KEY), as RocketMQ refuses its reserved ones.
enum SystemProperty {
    /// The client's message id (RocketMQ's UNIQ_KEY): returned on send, carried on delivery.
    static let messageID = "UNIQ_KEY"
    /// RocketMQ 5's message group is Tern's sharding key: one queue, in order.
    static let messageGroup = "SHARDING_KEY"
    static let deliverAt = "TIMER_DELIVER_MS"
    static let delayMillis = "TIMER_DELAY_MS"
    static let delayLevel = "DELAY"
    static let half = TransactionProperty.half
    static let reserved: Set<String> = [
        messageID, messageGroup, deliverAt, delayMillis, delayLevel, half, TransactionProperty.checkTimes,
        "RECONSUME_TIMES", "ORIGIN_MESSAGE_ID", "ORIGIN_TOPIC", "TAGS", "KEYS", "RETRY_KEY", "DLQ_RESENDS",
    ]
}

/// A RocketMQ status for the response's `status` field.
func status(_ code: RMQCode, _ message: String = "") -> RMQStatus {
    var s = RMQStatus()
    s.code = code
    s.message = message.isEmpty ? (code == .ok ? "OK" : "\(code)") : message
    return s
}

/// A failed call to the group as a RocketMQ status: the codes the official clients act on.
func status(for error: any Error) -> RMQStatus {
    if let e = error as? FrontError { return status(e.code, e.message) }
    guard let e = error as? ClientError else { return status(.internalError, "\(error)") }
    switch e {
    case .broker(let body):
        let code: RMQCode =
            switch body.code {
            case .topicNotFound: .topicNotFound
            case .messageTooLarge: .messageBodyTooLarge
            case .busy, .storageFull: .tooManyRequests
            case .receiptExpired: .invalidReceiptHandle
            case .messageNotFound: .messageNotFound
            case .permissionDenied: .forbidden
            case .unauthenticated: .unauthorized
            case .filterSyntax: .illegalFilterExpression
            case .wrongMessageType: .messagePropertyConflictWithType
            case .transactionDecided: .invalidTransactionID
            case .badRequest, .badBody, .queueNotFound, .sequenceTooOld: .badRequest
            default: .internalError
            }
        return status(code, body.message)
    case .timedOut(let what): return status(.proxyTimeout, "the group did not answer in time: \(what)")
    case .invalidArgument(let what): return status(.badRequest, what)
    default: return status(.internalError, e.description)
    }
}

/// A request the front refuses itself, with the RocketMQ code to answer.
struct FrontError: Error, CustomStringConvertible {
    var code: RMQCode
    var message: String
    init(_ code: RMQCode, _ message: String) {
        self.code = code
        self.message = message
    }
    var description: String { "\(code): \(message)" }
}

extension Optional {
    func asyncMap<U>(_ transform: (Wrapped) async -> U?) async -> U? {
        guard let v = self else { return nil }
        return await transform(v)
    }
}

/// A resource name: Tern has no namespaces, so a non-empty one is refused rather than ignored.
func name(of r: RMQResource, what: String, code: RMQCode) throws(FrontError) -> String {
    guard r.resourceNamespace.isEmpty else {
        throw FrontError(code, "\(what) \(r.name) names namespace \(r.resourceNamespace); Tern has no namespaces")
    }
    guard !r.name.isEmpty else { throw FrontError(code, "no \(what) given") }
    guard r.name.utf8.count <= 255 else { throw FrontError(code, "\(what) name longer than 255 bytes") }
    return r.name
}

/// The Tern message for one RocketMQ message of a send, and the id the client gave it.
func ternMessage(_ m: RMQMessage, topic: String, maxBodyBytes: Int, now: UInt64) throws(FrontError) -> (TernClient.Message, id: String) {
    let sp = m.systemProperties
    guard !m.body.isEmpty else { throw FrontError(.messageBodyEmpty, "the message body is empty") }
    guard m.body.count <= maxBodyBytes else {
        throw FrontError(.messageBodyTooLarge, "the body is \(m.body.count) bytes; at most \(maxBodyBytes)")
    }
    var properties: [String: String] = [:]
    for (k, v) in m.userProperties {
        guard !k.isEmpty, !SystemProperty.reserved.contains(k) else {
            throw FrontError(.illegalMessagePropertyKey, "property key \"\(k)\" is empty or reserved")
        }
        properties[k] = v
    }
    guard sp.messageID.utf8.count <= 128 else { throw FrontError(.illegalMessageID, "message id longer than 128 bytes") }
    if !sp.messageID.isEmpty { properties[SystemProperty.messageID] = sp.messageID }
    let tag = sp.hasTag ? sp.tag : ""
    guard !tag.contains("|") else { throw FrontError(.illegalMessageTag, "tag \"\(tag)\" contains |") }
    if sp.hasMessageGroup {
        guard !sp.messageGroup.isEmpty, sp.messageGroup.utf8.count <= 255 else {
            throw FrontError(.illegalMessageGroup, "the message group is empty or longer than 255 bytes")
        }
        properties[SystemProperty.messageGroup] = sp.messageGroup
    }
    if sp.hasDeliveryTimestamp {
        let at = sp.deliveryTimestamp
        guard at.seconds >= 0 else { throw FrontError(.illegalDeliveryTime, "delivery time before 1970") }
        let latest = now + 3 * 24 * 3600 * 1000
        // Compared in seconds first: a huge value must not overflow the conversion to milliseconds.
        guard UInt64(at.seconds) <= latest / 1000 + 1, case let ms = UInt64(at.seconds) * 1000 + UInt64(max(0, at.nanos) / 1_000_000), ms <= latest else {
            throw FrontError(.illegalDeliveryTime, "delivery time more than three days ahead (Tern's limit)")
        }
        properties[SystemProperty.deliverAt] = String(ms)
    }
    switch sp.messageType {
    case .transaction: properties[SystemProperty.half] = "true"
    case .fifo where !sp.hasMessageGroup: throw FrontError(.illegalMessageGroup, "a FIFO message needs a message group")
    case .delay where !sp.hasDeliveryTimestamp: throw FrontError(.illegalDeliveryTime, "a DELAY message needs a delivery timestamp")
    default: break
    }
    return (TernClient.Message(topic: topic, tag: tag, keys: sp.keys, properties: properties, body: Array(m.body)), sp.messageID)
}

/// The RocketMQ type of a stored message, from its properties.
func messageType(_ p: [String: String]) -> RMQMessageType {
    if p[SystemProperty.half] == "true" { return .transaction }
    if p[SystemProperty.deliverAt] != nil || p[SystemProperty.delayMillis] != nil || p[SystemProperty.delayLevel] != nil { return .delay }
    if p[SystemProperty.messageGroup] != nil { return .fifo }
    return .normal
}

/// The id a RocketMQ client sees for a stored message: the one it gave (UNIQ_KEY), else Tern's.
func clientMessageID(_ m: ReceivedMessage) -> String {
    m.message.properties[SystemProperty.messageID] ?? m.id.description
}

func timestamp(millis: UInt64) -> Google_Protobuf_Timestamp {
    Google_Protobuf_Timestamp(seconds: Int64(millis / 1000), nanos: Int32(millis % 1000) * 1_000_000)
}

func millis(_ d: Google_Protobuf_Duration) -> Int64 {
    d.seconds &* 1000 &+ Int64(d.nanos / 1_000_000)
}

func duration(millis: Int64) -> Google_Protobuf_Duration {
    Google_Protobuf_Duration(seconds: millis / 1000, nanos: Int32(millis % 1000) * 1_000_000)
}

/// A delivered message as the RocketMQ client reads it.
func rocketMessage(_ m: ReceivedMessage, handle: String?, attempt: UInt32?, invisibleMillis: Int64?, host: String) -> RMQMessage {
    var out = RMQMessage()
    out.topic.name = m.topic
    var user = m.message.properties
    for k in SystemProperty.reserved { user.removeValue(forKey: k) }
    out.userProperties = user
    var sp = RMQSystemProperties()
    if !m.message.tag.isEmpty { sp.tag = m.message.tag }
    sp.keys = m.message.keys
    sp.messageID = clientMessageID(m)
    sp.bodyDigest.type = .crc32
    sp.bodyDigest.checksum = crc32Hex(m.message.body)
    sp.bodyEncoding = .identity
    sp.messageType = messageType(m.message.properties)
    sp.bornTimestamp = timestamp(millis: m.message.bornTimestamp)
    sp.bornHost = host
    sp.storeTimestamp = timestamp(millis: m.storeTimestamp)
    sp.storeHost = host
    sp.queueID = Int32(truncatingIfNeeded: m.queueID)
    sp.queueOffset = Int64(truncatingIfNeeded: m.queueOffset)
    if let group = m.message.properties[SystemProperty.messageGroup] { sp.messageGroup = group }
    if let at = m.message.properties[SystemProperty.deliverAt].flatMap(UInt64.init) { sp.deliveryTimestamp = timestamp(millis: at) }
    if let handle { sp.receiptHandle = handle }
    if let attempt { sp.deliveryAttempt = Int32(truncatingIfNeeded: attempt) }
    if let invisibleMillis { sp.invisibleDuration = duration(millis: invisibleMillis) }
    out.systemProperties = sp
    out.body = Data(m.message.body)
    return out
}

/// CRC-32 (IEEE, the zlib polynomial) as eight upper-case hex digits: RocketMQ's body digest.
func crc32Hex(_ bytes: [UInt8]) -> String {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        crc = crc32Table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8)
    }
    let hex = String(crc ^ 0xFFFF_FFFF, radix: 16, uppercase: true)
    return String(repeating: "0", count: 8 - hex.count) + hex
}

private let crc32Table: [UInt32] = (0..<256).map { i -> UInt32 in
    var c = UInt32(i)
    for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}

/// Receipt handles as RocketMQ clients carry them: Tern's handle ("topic:queue:offset:index")
/// behind a version prefix, so that a later format can be told apart. `t1:` names no broker
/// group (a front of one group, or the front's own group); `t2:g2/...` names the group that
/// handed the message out (a front routing through name servers).
enum Receipt {
    static func encode(_ h: ReceiptHandle, group: String? = nil) -> String {
        guard let group else { return "t1:" + h.description }
        return "t2:" + group + "/" + h.description
    }

    static func decode(_ text: String) throws(FrontError) -> (group: String?, handle: ReceiptHandle) {
        let refused = FrontError(.invalidReceiptHandle, "receipt handle \"\(text.prefix(80))\" is not one Tern issued")
        guard text.utf8.count <= 600 else { throw refused }
        if text.hasPrefix("t1:"), let h = ReceiptHandle(String(text.dropFirst(3))) { return (nil, h) }
        let rest = text.dropFirst(3)
        guard text.hasPrefix("t2:"), let slash = rest.firstIndex(of: "/") else { throw refused }
        let group = String(rest[..<slash])
        guard BrokerGroupName.problem(group) == nil, let h = ReceiptHandle(String(rest[rest.index(after: slash)...])) else { throw refused }
        return (group, h)
    }
}
