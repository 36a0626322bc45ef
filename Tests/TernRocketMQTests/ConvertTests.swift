// The front's conversions and its refusals of bad input, without a server.
import Foundation
import SwiftProtobuf
import TernClient
import TernProtocol
import TernRocketMQProto
import Testing

@testable import TernRocketMQ

@Suite struct ConvertTests {
    private func message(_ body: [UInt8] = Array("hi".utf8), configure: (inout RMQMessage) -> Void = { _ in }) -> RMQMessage {
        var m = RMQMessage()
        m.topic.name = "t"
        m.body = Data(body)
        m.systemProperties.messageID = "01ABC"
        configure(&m)
        return m
    }

    private func refusal(_ m: RMQMessage, maxBody: Int = 1024) -> RMQCode? {
        do {
            _ = try ternMessage(m, topic: "t", maxBodyBytes: maxBody, now: 1_000_000)
            return nil
        } catch {
            return error.frontCode
        }
    }

    @Test func aSendBecomesTernPropertiesAndBack() throws {
        let m = message {
            $0.userProperties = ["color": "blue"]
            $0.systemProperties.tag = "red"
            $0.systemProperties.keys = ["k1", "k2"]
            $0.systemProperties.messageGroup = "order-7"
            $0.systemProperties.messageType = .fifo
        }
        let (t, id) = try ternMessage(m, topic: "t", maxBodyBytes: 1024, now: 0)
        #expect(id == "01ABC")
        #expect(t.tag == "red" && t.keys == ["k1", "k2"])
        #expect(t.properties == ["color": "blue", "UNIQ_KEY": "01ABC", "SHARDING_KEY": "order-7"])
        let stored = ReceivedMessage(
            id: MessageID(entryIndex: 9, slot: 0), topic: "t", queueID: 2, queueOffset: 5, storeTimestamp: 1_700_000_000_123, producerGroup: "g",
            message: WireMessage(tag: t.tag, keys: t.keys, properties: t.properties, bornTimestamp: 1_700_000_000_000, body: t.body))
        let back = rocketMessage(stored, handle: "h", attempt: 2, invisibleMillis: 30_000, host: "127.0.0.1")
        #expect(back.userProperties == ["color": "blue"])
        #expect(back.systemProperties.messageID == "01ABC")
        #expect(back.systemProperties.messageGroup == "order-7")
        #expect(back.systemProperties.messageType == .fifo)
        #expect(back.systemProperties.queueOffset == 5 && back.systemProperties.queueID == 2)
        #expect(back.systemProperties.deliveryAttempt == 2)
        #expect(back.systemProperties.storeTimestamp.seconds == 1_700_000_000 && back.systemProperties.storeTimestamp.nanos == 123_000_000)
        #expect(back.systemProperties.bodyDigest.checksum == crc32Hex(Array("hi".utf8)))
    }

    @Test func aMessageWithoutClientIDIsKnownByTernsID() {
        let stored = ReceivedMessage(
            id: MessageID(entryIndex: 0x1A, slot: 3), topic: "t", queueID: 0, queueOffset: 0, storeTimestamp: 0, producerGroup: "",
            message: WireMessage(tag: "", keys: [], properties: [:], bornTimestamp: 0, body: [1]))
        #expect(clientMessageID(stored) == "000000000000001A0003")
    }

    @Test func badSendsAreRefusedWithRocketMQsCodes() {
        #expect(refusal(message([])) == .messageBodyEmpty)
        #expect(refusal(message([UInt8](repeating: 1, count: 1025))) == .messageBodyTooLarge)
        #expect(refusal(message { $0.userProperties = ["UNIQ_KEY": "x"] }) == .illegalMessagePropertyKey)
        #expect(refusal(message { $0.userProperties = ["": "x"] }) == .illegalMessagePropertyKey)
        #expect(refusal(message { $0.systemProperties.messageType = .fifo }) == .illegalMessageGroup)
        #expect(refusal(message { $0.systemProperties.messageType = .delay }) == .illegalDeliveryTime)
        #expect(refusal(message { $0.systemProperties.messageGroup = "" }) == .illegalMessageGroup)
        #expect(refusal(message { $0.systemProperties.tag = "a|b" }) == .illegalMessageTag)
        #expect(refusal(message { $0.systemProperties.messageID = String(repeating: "a", count: 129) }) == .illegalMessageID)
        let fourDays = Google_Protobuf_Timestamp(seconds: (1_000_000 + 4 * 24 * 3600 * 1000) / 1000, nanos: 0)
        #expect(refusal(message { $0.systemProperties.deliveryTimestamp = fourDays }) == .illegalDeliveryTime)
        #expect(refusal(message { $0.systemProperties.deliveryTimestamp = Google_Protobuf_Timestamp(seconds: -5, nanos: 0) }) == .illegalDeliveryTime)
    }

    @Test func namespacesAndEmptyNamesAreRefused() {
        var r = RMQResource()
        r.name = "orders"
        r.resourceNamespace = "prod"
        #expect(throws: FrontError.self) { try name(of: r, what: "topic", code: .illegalTopic) }
        #expect(throws: FrontError.self) { try name(of: RMQResource(), what: "topic", code: .illegalTopic) }
    }

    @Test func receiptHandlesRoundTripAndGarbageIsRefused() throws {
        let h = ReceiptHandle(queue: QueueRef(topic: "a:b", queueID: 3), offset: 17, receiveIndex: 99)
        let plain = try Receipt.decode(Receipt.encode(h))
        #expect(plain.group == nil && plain.handle == h)
        // Through name servers the handle names its broker group; a topic may hold a slash.
        let t = ReceiptHandle(queue: QueueRef(topic: "a/b:c", queueID: 1), offset: 2, receiveIndex: 3)
        #expect(Receipt.encode(t, group: "g2") == "t2:g2/a/b:c:1:2:3")
        let routed = try Receipt.decode(Receipt.encode(t, group: "g2"))
        #expect(routed.group == "g2" && routed.handle == t)
        for bad in [
            "", "t1:", "t1:x:y:z:w", "a:1:2:3", "t1::1:2:3", "t1:t:1:2:-3", String(repeating: "t1:", count: 300), "t2:", "t2:g2", "t2:g2/",
            "t2:/t:1:2:3", "t2:bad group/t:1:2:3", "t2:g2/t:1:2", "t3:g2/t:1:2:3",
        ] {
            #expect(throws: FrontError.self) { try Receipt.decode(bad) }
        }
    }

    @Test func bodyDigestIsZlibsCRC32() {
        // The standard check value of CRC-32/ISO-HDLC.
        #expect(crc32Hex(Array("123456789".utf8)) == "CBF43926")
        #expect(crc32Hex([]) == "00000000")
    }

    @Test func signaturesAreRocketMQsHMACSHA1OfTheDate() throws {
        // RFC 2202-style check value of HMAC-SHA1.
        #expect(Signature.sign(date: "The quick brown fox jumps over the lazy dog", secret: Array("key".utf8)) == "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9")
        let header = "MQv2-HMAC-SHA1 Credential=app, SignedHeaders=x-mq-date-time, Signature=ABCDEF"
        let parsed = try Signature.parse(header)
        #expect(parsed.accessKey == "app" && parsed.signature == "ABCDEF")
        let secret = Array("app-secret-0123456789".utf8)
        let good = Signature.sign(date: "20261205T101010Z", secret: secret)
        #expect(Signature.verify(good, date: "20261205T101010Z", secret: secret))
        #expect(Signature.verify(good.uppercased(), date: "20261205T101010Z", secret: secret))
        #expect(!Signature.verify(good, date: "20261205T101011Z", secret: secret))
        #expect(!Signature.verify(good, date: "20261205T101010Z", secret: Array("other".utf8)))
        #expect(!Signature.verify(String(good.dropLast()), date: "20261205T101010Z", secret: secret))
        for bad in [
            "", "Basic abc", "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=ab",
            "MQv2-HMAC-SHA1 Credential=app, SignedHeaders=host, Signature=ab", "MQv2-HMAC-SHA1 Credential=app, SignedHeaders=x-mq-date-time",
            "MQv2-HMAC-SHA1 " + String(repeating: "x", count: 2000),
        ] {
            #expect(throws: FrontError.self) { try Signature.parse(bad) }
        }
    }

    @Test func ternErrorsMapToTheCodesClientsActOn() {
        func code(_ e: ErrorCode) -> RMQCode { status(for: ClientError.broker(ErrorBody(code: e, message: "m"))).code }
        #expect(code(.topicNotFound) == .topicNotFound)
        #expect(code(.busy) == .tooManyRequests)
        #expect(code(.receiptExpired) == .invalidReceiptHandle)
        #expect(code(.permissionDenied) == .forbidden)
        #expect(status(for: ClientError.timedOut("x")).code == .proxyTimeout)
    }
}

extension Error {
    fileprivate var frontCode: RMQCode? { (self as? FrontError).map { $0.code } }
}
