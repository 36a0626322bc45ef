// The front's decoding and conversion of what clients send, under random and mutated bytes:
// every input decodes to a request or fails to decode, and every decoded request is converted or
// refused with a RocketMQ code, never a crash (the transport's own limits are tested against real
// processes in TernIntegrationTests/RocketMQFrontTests).
import Foundation
import SwiftProtobuf
import TernRocketMQProto
import Testing

@testable import TernRocketMQ

/// SplitMix64: a seeded generator, so that a failing input is found again by its seed.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct BadInputTests {
    /// A valid send with every field the conversion reads, to mutate.
    func richSend() throws -> [UInt8] {
        var m = RMQMessage()
        m.topic.name = "orders"
        m.userProperties = ["a": "b", "c": "d"]
        m.body = Data("hello".utf8)
        m.systemProperties.tag = "t"
        m.systemProperties.keys = ["k1", "k2"]
        m.systemProperties.messageID = "01ABCDEF"
        m.systemProperties.messageGroup = "g"
        m.systemProperties.messageType = .delay
        m.systemProperties.deliveryTimestamp = Google_Protobuf_Timestamp(seconds: 1_800_000_000, nanos: 5)
        var r = RMQSendMessageRequest()
        r.messages = [m, m]
        let bytes: [UInt8] = try r.serializedBytes()
        return bytes
    }

    /// Runs one input through every decoder and the conversions behind each.
    func exercise(_ bytes: [UInt8]) {
        let data = Data(bytes)
        if let send = try? RMQSendMessageRequest(serializedBytes: data) {
            for m in send.messages {
                _ = try? name(of: m.topic, what: "topic", code: .illegalTopic)
                _ = try? ternMessage(m, topic: "t", maxBodyBytes: 1 << 20, now: 1_700_000_000_000)
            }
        }
        if let ack = try? RMQAckMessageRequest(serializedBytes: data) {
            for e in ack.entries { _ = try? Receipt.decode(e.receiptHandle) }
        }
        if let change = try? RMQChangeInvisibleDurationRequest(serializedBytes: data) {
            _ = millis(change.invisibleDuration)
            _ = try? Receipt.decode(change.receiptHandle)
        }
        if let receive = try? RMQReceiveMessageRequest(serializedBytes: data) {
            _ = millis(receive.invisibleDuration) &+ millis(receive.longPollingTimeout)
            _ = try? name(of: receive.group, what: "group", code: .illegalConsumerGroup)
        }
        _ = try? RMQTelemetryCommand(serializedBytes: data)
        _ = try? RMQEndTransactionRequest(serializedBytes: data)
        _ = try? RMQQueryRouteRequest(serializedBytes: data)
    }

    @Test("random bytes, and a valid send mutated byte by byte and cut short, never crash a decoder or a conversion", arguments: 1...4)
    func randomAndMutated(seed: UInt64) throws {
        var random = SeededRandom(state: seed)
        for _ in 0..<2_000 {
            let n = Int.random(in: 0...300, using: &random)
            exercise((0..<n).map { _ in UInt8.random(in: 0...255, using: &random) })
        }
        let valid = try richSend()
        for _ in 0..<5_000 {
            var b = valid
            for _ in 0..<Int.random(in: 1...6, using: &random) { b[Int.random(in: 0..<b.count, using: &random)] = UInt8.random(in: 0...255, using: &random) }
            if Bool.random(using: &random) { b.removeLast(Int.random(in: 0..<b.count, using: &random)) }
            exercise(b)
        }
    }

    @Test("a delivery time far in the future is refused, not multiplied past UInt64 (found reading the conversion for these tests: it trapped)")
    func hugeDeliveryTime() {
        var m = RMQMessage()
        m.topic.name = "t"
        m.body = Data([1])
        m.systemProperties.deliveryTimestamp = Google_Protobuf_Timestamp(seconds: Int64.max, nanos: 0)
        #expect(throws: FrontError.self) { try ternMessage(m, topic: "t", maxBodyBytes: 10, now: 0) }
    }
}
