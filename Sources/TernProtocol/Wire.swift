// Little-endian primitive encoding for request and response bodies. A reader never traps: every
// length is checked against what is left before anything is allocated, and the first problem
// becomes a `WireError` that the server turns into a `badBody` error response.

/// Why a body could not be decoded.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Appends primitives to a byte array.
public struct WireWriter: Sendable {
    public var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }

    /// A string of at most 65,535 UTF-8 bytes: u16 length, bytes.
    public mutating func string(_ s: String) {
        let utf8 = s.utf8
        precondition(utf8.count <= Int(UInt16.max), "string of \(utf8.count) bytes is longer than the wire allows")
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// A byte string: u32 length, bytes.
    public mutating func blob(_ b: [UInt8]) {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }

    /// Queue references: count u32, then (topic, queue u32) each.
    public mutating func queueRefs(_ list: [QueueRef]) {
        u32(UInt32(list.count))
        for q in list {
            string(q.topic)
            u32(q.queueID)
        }
    }

    public mutating func strings(_ list: [String]) {
        u16(UInt16(list.count))
        for s in list { string(s) }
    }

    public mutating func messageID(_ id: MessageID) {
        u64(id.entryIndex)
        u16(id.slot)
    }
}

/// Reads primitives from a byte array, checking every length.
public struct WireReader {
    public let bytes: [UInt8]
    public private(set) var position: Int

    public init(_ bytes: [UInt8], at position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    public var remaining: Int { bytes.count - position }
    public var atEnd: Bool { position == bytes.count }

    mutating func take(_ n: Int, _ what: String) throws(WireError) -> Int {
        guard n >= 0, remaining >= n else { throw WireError("body ends inside \(what) (needs \(n) bytes, \(remaining) left)") }
        defer { position += n }
        return position
    }

    public mutating func u8(_ what: String = "u8") throws(WireError) -> UInt8 { bytes[try take(1, what)] }

    public mutating func bool(_ what: String = "bool") throws(WireError) -> Bool {
        let v = try u8(what)
        guard v <= 1 else { throw WireError("\(what) is \(v), not a boolean") }
        return v == 1
    }

    public mutating func u16(_ what: String = "u16") throws(WireError) -> UInt16 {
        let at = try take(2, what)
        return UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
    }

    public mutating func u32(_ what: String = "u32") throws(WireError) -> UInt32 {
        let at = try take(4, what)
        return bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
    }

    public mutating func u64(_ what: String = "u64") throws(WireError) -> UInt64 {
        let at = try take(8, what)
        return bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
    }

    public mutating func string(_ what: String = "string") throws(WireError) -> String {
        let n = Int(try u16(what))
        let at = try take(n, what)
        return String(decoding: bytes[at..<(at + n)], as: UTF8.self)
    }

    mutating func skipString(_ what: String = "string") throws(WireError) {
        _ = try take(Int(try u16(what)), what)
    }

    public mutating func blob(_ what: String = "bytes", limit: Int = Int(Int32.max)) throws(WireError) -> [UInt8] {
        let n = Int(try u32(what))
        guard n <= limit else { throw WireError("\(what) of \(n) bytes exceeds the limit of \(limit)") }
        let at = try take(n, what)
        return Array(bytes[at..<(at + n)])
    }

    /// Skips a blob, returning where its bytes start and how many there are.
    public mutating func skipBlob(_ what: String = "bytes") throws(WireError) -> (start: Int, count: Int) {
        let n = Int(try u32(what))
        return (try take(n, what), n)
    }

    public mutating func messageID(_ what: String = "message id") throws(WireError) -> MessageID {
        MessageID(entryIndex: try u64(what), slot: try u16(what))
    }

    public mutating func queueRefs(_ what: String = "queues") throws(WireError) -> [QueueRef] {
        let n = Int(try u32(what))
        var out: [QueueRef] = []
        out.reserveCapacity(min(n, remaining / 6))
        for _ in 0..<n { out.append(QueueRef(topic: try string(what), queueID: try u32(what))) }
        return out
    }

    public mutating func strings(_ what: String = "list") throws(WireError) -> [String] {
        let n = Int(try u16(what))
        var out: [String] = []
        out.reserveCapacity(min(n, remaining / 2))
        for _ in 0..<n { out.append(try string(what)) }
        return out
    }

    /// Fails unless every byte was read: trailing garbage is an error, not ignored.
    public func finish(_ what: String) throws(WireError) {
        guard atEnd else { throw WireError("\(remaining) unexpected bytes after \(what)") }
    }
}
