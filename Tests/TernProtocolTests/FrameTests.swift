import Testing

@testable import TernProtocol

@Suite("Protocol: frames")
struct FrameTests {
    let codec = FrameCodec(maxBodyBytes: 1 << 16)

    @Test("round trip: a frame decodes to itself and reports the bytes it used")
    func roundTrip() throws {
        let frame = Frame(opcode: 7, flags: [.response], requestID: 0xDEAD_BEEF_0123, body: Array("hello".utf8))
        var bytes = codec.encode(frame)
        bytes.append(contentsOf: [1, 2, 3])  // the next frame's first bytes
        #expect(try codec.decode(bytes).get() == .frame(frame, consumed: FrameCodec.headerBytes + 5))
    }

    @Test("a partial frame asks for exactly the missing bytes, at every cut")
    func partial() throws {
        let bytes = codec.encode(Frame(opcode: 1, requestID: 9, body: [UInt8](repeating: 7, count: 40)))
        for cut in 0..<bytes.count {
            #expect(
                try codec.decode(Array(bytes[0..<cut])).get() == .needMore(cut < FrameCodec.headerBytes ? FrameCodec.headerBytes - cut : bytes.count - cut),
                "cut \(cut)")
        }
    }

    @Test("an oversized body is refused from the header alone")
    func oversized() {
        let big = FrameCodec(maxBodyBytes: 1 << 20).encode(Frame(opcode: 1, requestID: 1, body: [UInt8](repeating: 0, count: (1 << 16) + 1)))
        #expect(codec.decode(Array(big[0..<FrameCodec.headerBytes])) == .failure(.bodyTooLarge(length: (1 << 16) + 1, limit: 1 << 16)))
    }

    @Test("every single-bit flip in the header is refused")
    func headerFlips() {
        let bytes = codec.encode(Frame(opcode: 3, requestID: 42, body: [1, 2, 3]))
        for bit in 0..<(FrameCodec.headerBytes * 8) {
            var damaged = bytes
            damaged[bit / 8] ^= UInt8(1 << (bit % 8))
            if case .success(let decoded) = codec.decode(damaged) {
                Issue.record("bit \(bit) flipped, yet decoded as \(decoded)")
            }
        }
    }

    @Test("random garbage never traps and is never taken for a frame")
    func garbage() {
        var state: UInt64 = 0x1234_5678
        for _ in 0..<20_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let length = Int(state >> 54)
            let bytes = (0..<length).map { k -> UInt8 in UInt8(truncatingIfNeeded: (state >> UInt64(k % 56)) &+ UInt64(k)) }
            if case .success(.frame) = codec.decode(bytes) { Issue.record("garbage decoded as a frame: \(bytes)") }
        }
    }

    @Test("an error response carries a code and a message")
    func errorBody() {
        let response = ErrorBody.badFrameResponse(.badMagic(0x4745))
        #expect(response.flags == [.response, .error])
        let body = ErrorBody.decode(response.body)
        #expect(body?.code == ErrorCode.badFrame)
        #expect(body?.message.contains("not a Tern frame") == true)
        #expect(ErrorBody.decode([1, 0, 9, 0, 65]) == nil, "length says 9, one byte follows")
    }
}
