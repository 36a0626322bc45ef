// The wire frame every Tern connection carries, client and peer alike (docs/protocol.md has the
// byte map). This file owns framing only: finding frame boundaries in a byte stream, bounding
// lengths before anything is allocated, and checking the header's checksum. What a body means
// is the opcode's business. Decoding works on raw bytes, so the NIO server, the client and the
// simulator share it; it never traps on input: garbage yields a `FrameError`.
import CTernIO

/// One frame: a request, a response, or an error response.
public struct Frame: Equatable, Sendable {
    public struct Flags: OptionSet, Equatable, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// The frame answers the request with the same id.
        public static let response = Flags(rawValue: 1 << 0)
        /// The body is an `ErrorBody` instead of the opcode's response.
        public static let error = Flags(rawValue: 1 << 1)
        static let known: Flags = [.response, .error]
    }

    public var opcode: UInt16
    public var flags: Flags
    public var requestID: UInt64
    public var body: [UInt8]

    public init(opcode: UInt16, flags: Flags = [], requestID: UInt64, body: [UInt8]) {
        self.opcode = opcode
        self.flags = flags
        self.requestID = requestID
        self.body = body
    }
}

/// Why bytes are not a frame. Any of these ends the connection after an error response.
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    case badMagic(UInt16)
    case unsupportedVersion(UInt8)
    case unknownFlags(UInt8)
    case headerChecksum
    case bodyTooLarge(length: UInt32, limit: UInt32)

    public var description: String {
        switch self {
        case .badMagic(let m): return "not a Tern frame (magic 0x\(String(m, radix: 16)))"
        case .unsupportedVersion(let v): return "frame version \(v) is not supported (this side speaks \(FrameCodec.version))"
        case .unknownFlags(let f): return "unknown frame flags 0x\(String(f, radix: 16))"
        case .headerChecksum: return "frame header checksum mismatch"
        case .bodyTooLarge(let length, let limit): return "frame body of \(length) bytes exceeds the limit of \(limit)"
        }
    }
}

/// Frame layout and limits. Header, 24 bytes, little-endian: magic u16 "TF", version u8, flags u8,
/// opcode u16, reserved u16 (zero), request id u64, body length u32, CRC32C of bytes 0..<20 u32.
public struct FrameCodec: Sendable {
    public static let magic: UInt16 = 0x4654  // "TF" in file order
    public static let version: UInt8 = 1
    public static let headerBytes = 24

    /// Largest body accepted. A 4 MiB message plus its envelope fits the default.
    public var maxBodyBytes: UInt32

    public init(maxBodyBytes: UInt32 = 8 << 20) {
        self.maxBodyBytes = maxBodyBytes
    }

    public enum Decoded: Equatable {
        /// Not a whole frame yet: at least this many more bytes are needed.
        case needMore(Int)
        /// A frame, and how many input bytes it used.
        case frame(Frame, consumed: Int)
    }

    /// The 24-byte header of `frame`.
    public func header(_ frame: Frame) -> [UInt8] {
        precondition(frame.body.count <= Int(maxBodyBytes), "frame body of \(frame.body.count) bytes exceeds the limit \(maxBodyBytes)")
        var header = [UInt8](repeating: 0, count: FrameCodec.headerBytes)
        header.withUnsafeMutableBytes { h in
            h.storeBytes(of: FrameCodec.magic.littleEndian, toByteOffset: 0, as: UInt16.self)
            h[2] = FrameCodec.version
            h[3] = frame.flags.rawValue
            h.storeBytes(of: frame.opcode.littleEndian, toByteOffset: 4, as: UInt16.self)
            h.storeBytes(of: frame.requestID.littleEndian, toByteOffset: 8, as: UInt64.self)
            h.storeBytes(of: UInt32(frame.body.count).littleEndian, toByteOffset: 16, as: UInt32.self)
            let crc = tern_crc32c(0, h.baseAddress, 20)
            h.storeBytes(of: crc.littleEndian, toByteOffset: 20, as: UInt32.self)
        }
        return header
    }

    /// Appends the encoded frame to `out`.
    public func encode(_ frame: Frame, into out: inout [UInt8]) {
        out.append(contentsOf: header(frame))
        out.append(contentsOf: frame.body)
    }

    /// CRC32C of a header's first 20 bytes (tests forge headers with it).
    public static func headerChecksumForTests(_ first20: UnsafeRawBufferPointer) -> UInt32 {
        tern_crc32c(0, first20.baseAddress, 20)
    }

    public func encode(_ frame: Frame) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(FrameCodec.headerBytes + frame.body.count)
        encode(frame, into: &out)
        return out
    }

    /// Decodes the frame at the start of `bytes`. The header is validated (magic, version,
    /// flags, checksum, body limit) before the body is waited for, so an oversized or garbled
    /// frame is refused after 24 bytes, without buffering its claimed body.
    public func decode(_ bytes: UnsafeRawBufferPointer) -> Result<Decoded, FrameError> {
        guard bytes.count >= FrameCodec.headerBytes else { return .success(.needMore(FrameCodec.headerBytes - bytes.count)) }
        let magic = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
        guard magic == FrameCodec.magic else { return .failure(.badMagic(magic)) }
        guard bytes[2] == FrameCodec.version else { return .failure(.unsupportedVersion(bytes[2])) }
        let flags = Frame.Flags(rawValue: bytes[3])
        guard Frame.Flags.known.isSuperset(of: flags) else { return .failure(.unknownFlags(bytes[3])) }
        let crc = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 20, as: UInt32.self))
        guard tern_crc32c(0, bytes.baseAddress, 20) == crc else { return .failure(.headerChecksum) }
        let length = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        guard length <= maxBodyBytes else { return .failure(.bodyTooLarge(length: length, limit: maxBodyBytes)) }
        let total = FrameCodec.headerBytes + Int(length)
        guard bytes.count >= total else { return .success(.needMore(total - bytes.count)) }
        let frame = Frame(
            opcode: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self)),
            flags: flags,
            requestID: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
            body: [UInt8](UnsafeRawBufferPointer(rebasing: bytes[FrameCodec.headerBytes..<total])))
        return .success(.frame(frame, consumed: total))
    }

    public func decode(_ bytes: [UInt8]) -> Result<Decoded, FrameError> {
        bytes.withUnsafeBytes { decode($0) }
    }
}

/// The body of an error response: a code for programs (`ErrorCode`, one set for every opcode),
/// a message for people, and an optional detail whose layout the code defines (NOT_LEADER:
/// `NotLeaderDetail`).
/// Layout: code u16, message length u16, message (UTF-8, at most 4,096 bytes), detail (the rest).
public struct ErrorBody: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public var detail: [UInt8]

    public init(code: ErrorCode, message: String, detail: [UInt8] = []) {
        self.code = code
        self.message = message
        self.detail = detail
    }

    public var description: String { "error \(code.rawValue) (\(code.name)): \(message)" }

    public func encode() -> [UInt8] {
        let text = Array(message.utf8.prefix(4096))
        let raw = code.rawValue
        var out: [UInt8] = [UInt8(raw & 0xFF), UInt8(raw >> 8), UInt8(text.count & 0xFF), UInt8(text.count >> 8)]
        out.append(contentsOf: text)
        out.append(contentsOf: detail)
        return out
    }

    /// nil when the bytes are not a well-formed error body. An unknown code decodes (as
    /// `ErrorCode(rawValue:)`, named "unknown"): a newer node may send codes this one lacks.
    public static func decode(_ bytes: [UInt8]) -> ErrorBody? {
        guard bytes.count >= 4 else { return nil }
        let code = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        let length = Int(UInt16(bytes[2]) | UInt16(bytes[3]) << 8)
        guard length <= 4096, bytes.count >= 4 + length else { return nil }
        return ErrorBody(
            code: ErrorCode(rawValue: code), message: String(decoding: bytes[4..<(4 + length)], as: UTF8.self), detail: Array(bytes[(4 + length)...]))
    }

    /// The response to send, before closing, to a peer whose bytes were not a frame.
    public static func badFrameResponse(_ error: FrameError) -> Frame {
        Frame(opcode: 0, flags: [.response, .error], requestID: 0, body: ErrorBody(code: .badFrame, message: error.description).encode())
    }
}
