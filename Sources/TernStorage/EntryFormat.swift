// The on-disk format of one commitlog entry and one index record (docs/storage.md has the byte
// map). All integers are little-endian. An entry is a fixed 40-byte header, the body, and zero
// padding to a multiple of 8 bytes, so entries start at 8-byte-aligned offsets and recovery can
// look for a valid header after a damaged one without testing every byte.
import CTernIO

/// A Raft log entry as the commitlog stores it.
public struct LogEntry: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    /// What the body is: the commitlog stores the byte, Raft and the broker give it meaning.
    public var type: UInt8
    public var body: [UInt8]

    public init(index: UInt64, term: UInt64, type: UInt8 = 0, body: [UInt8]) {
        self.index = index
        self.term = term
        self.type = type
        self.body = body
    }
}

/// CRC32C over bytes, continuing from `crc`.
@inlinable
public func crc32c(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    tern_crc32c(crc, bytes.baseAddress, bytes.count)
}

enum EntryFormat {
    static let magic: UInt32 = 0x4E52_4554  // "TERN" in file order
    static let version: UInt8 = 1
    static let headerBytes = 40
    static let alignment = 8

    // Header field offsets.
    static let magicOffset = 0  // u32
    static let versionOffset = 4  // u8
    static let typeOffset = 5  // u8
    static let reservedOffset = 6  // u16, zero
    static let bodyLengthOffset = 8  // u32
    static let crcOffset = 12  // u32: CRC32C of the header with this field zero, then the body
    static let termOffset = 16  // u64
    static let indexOffset = 24  // u64
    static let positionOffset = 32  // u64: the entry's own physical position in the log

    /// Bytes the entry occupies on disk, padding included.
    static func storedSize(bodyLength: Int) -> Int {
        (headerBytes + bodyLength + alignment - 1) / alignment * alignment
    }

    /// Writes header, body and padding at `destination`, which must hold `storedSize` bytes.
    static func encode(_ entry: LogEntry, position: UInt64, into destination: UnsafeMutableRawBufferPointer) {
        let size = storedSize(bodyLength: entry.body.count)
        precondition(destination.count >= size, "entry buffer too small")
        let base = destination.baseAddress!
        base.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        base.storeBytes(of: magic.littleEndian, toByteOffset: magicOffset, as: UInt32.self)
        base.storeBytes(of: version, toByteOffset: versionOffset, as: UInt8.self)
        base.storeBytes(of: entry.type, toByteOffset: typeOffset, as: UInt8.self)
        base.storeBytes(of: UInt32(entry.body.count).littleEndian, toByteOffset: bodyLengthOffset, as: UInt32.self)
        base.storeBytes(of: entry.term.littleEndian, toByteOffset: termOffset, as: UInt64.self)
        base.storeBytes(of: entry.index.littleEndian, toByteOffset: indexOffset, as: UInt64.self)
        base.storeBytes(of: position.littleEndian, toByteOffset: positionOffset, as: UInt64.self)
        entry.body.withUnsafeBytes { body in
            if body.count > 0 { (base + headerBytes).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        }
        let crc = checksum(UnsafeRawBufferPointer(start: base, count: headerBytes + entry.body.count))
        base.storeBytes(of: crc.littleEndian, toByteOffset: crcOffset, as: UInt32.self)
    }

    /// CRC of an encoded entry (header + body, no padding), treating the CRC field as zero.
    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = crc32c(UnsafeRawBufferPointer(rebasing: bytes[0..<crcOffset]))
        let zero: UInt32 = 0
        crc = withUnsafeBytes(of: zero) { crc32c($0, continuing: crc) }
        return crc32c(UnsafeRawBufferPointer(rebasing: bytes[(crcOffset + 4)...]), continuing: crc)
    }

    /// What a header says, before the body is checked.
    struct Header: Equatable {
        var type: UInt8
        var bodyLength: Int
        var crc: UInt32
        var term: UInt64
        var index: UInt64
        var position: UInt64
        var storedSize: Int { EntryFormat.storedSize(bodyLength: bodyLength) }
    }

    /// Parses a header; nil when the magic or version is wrong (not an entry start).
    static func header(_ bytes: UnsafeRawBufferPointer) -> Header? {
        guard bytes.count >= headerBytes else { return nil }
        guard UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: magicOffset, as: UInt32.self)) == magic,
            bytes[versionOffset] == version
        else { return nil }
        return Header(
            type: bytes[typeOffset],
            bodyLength: Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: bodyLengthOffset, as: UInt32.self))),
            crc: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: crcOffset, as: UInt32.self)),
            term: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: termOffset, as: UInt64.self)),
            index: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: indexOffset, as: UInt64.self)),
            position: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: positionOffset, as: UInt64.self)))
    }

    /// Checks a whole stored entry (at least header + body bytes) and returns its header when the
    /// magic, version, stated position and CRC all hold.
    static func verify(_ bytes: UnsafeRawBufferPointer, expectedPosition: UInt64) -> Header? {
        guard let h = header(bytes), h.position == expectedPosition,
            bytes.count >= headerBytes + h.bodyLength
        else { return nil }
        guard checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(headerBytes + h.bodyLength)])) == h.crc else { return nil }
        return h
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, header h: Header) -> LogEntry {
        LogEntry(
            index: h.index, term: h.term, type: h.type,
            body: [UInt8](UnsafeRawBufferPointer(rebasing: bytes[headerBytes..<(headerBytes + h.bodyLength)])))
    }
}

/// One index-file record: where entry `index` lives. Record i of a segment's index file describes
/// the segment's i-th entry. 24 bytes: position u64, term u64, stored size u32, CRC32C of the
/// first 20 bytes u32. An all-zero record fails its CRC, so unwritten space reads as "absent".
struct IndexRecord: Equatable {
    static let bytes = 24
    var position: UInt64
    var term: UInt64
    var storedSize: UInt32

    func encode(into destination: UnsafeMutableRawPointer) {
        destination.storeBytes(of: position.littleEndian, toByteOffset: 0, as: UInt64.self)
        destination.storeBytes(of: term.littleEndian, toByteOffset: 8, as: UInt64.self)
        destination.storeBytes(of: storedSize.littleEndian, toByteOffset: 16, as: UInt32.self)
        let crc = crc32c(UnsafeRawBufferPointer(start: destination, count: 20))
        destination.storeBytes(of: crc.littleEndian, toByteOffset: 20, as: UInt32.self)
    }

    /// nil when the record's CRC does not hold (never written, torn, or damaged).
    static func decode(_ source: UnsafeRawBufferPointer) -> IndexRecord? {
        guard source.count >= bytes else { return nil }
        let crc = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 20, as: UInt32.self))
        guard crc32c(UnsafeRawBufferPointer(rebasing: source[0..<20])) == crc else { return nil }
        return IndexRecord(
            position: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
            term: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
            storedSize: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
    }
}
