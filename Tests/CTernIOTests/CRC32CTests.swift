import CTernIO
import Testing

@Suite("CTernIO: CRC32C")
struct CRC32CTests {
    // RFC 3720, appendix B.4, plus the customary "123456789" check value.
    static let vectors: [([UInt8], UInt32)] = [
        (Array("123456789".utf8), 0xE306_9283),
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C),
        ([], 0),
    ]

    @Test("both implementations give the RFC 3720 test vectors")
    func vectors() {
        for (input, expected) in Self.vectors {
            #expect(tern_crc32c_table(0, input, input.count) == expected)
            #expect(tern_crc32c(0, input, input.count) == expected)
        }
    }

    @Test("the hardware path is used on a CPU with SSE4.2, and agrees with the table on odd lengths")
    func agreement() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for length in [1, 7, 8, 9, 63, 64, 65, 1000, 4099] {
            let bytes = (0..<length).map { _ -> UInt8 in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: state >> 33)
            }
            #expect(tern_crc32c(0, bytes, length) == tern_crc32c_table(0, bytes, length), "length \(length)")
            // Chunked computation equals one pass.
            let half = length / 2
            let chunked = bytes.withUnsafeBytes { b in
                tern_crc32c(tern_crc32c(0, b.baseAddress, half), b.baseAddress! + half, length - half)
            }
            #expect(chunked == tern_crc32c(0, bytes, length))
        }
        #if arch(x86_64)
            print("crc32c hardware path: \(tern_crc32c_hardware() == 1 ? "SSE4.2" : "table (CPU lacks SSE4.2)")")
        #endif
    }
}
