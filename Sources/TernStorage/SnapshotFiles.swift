// Snapshot files: the broker's state at an applied index, written whole and atomically, the
// last two kept. What the body holds is the broker's business (TernBroker); this file only
// frames, checks and stores it.
//
// File `snapshot-<index, 20 digits>` (little-endian): magic "TSNP" u32, version 1 u8, 3 zero
// bytes, applied index u64, term of that entry u64, body length u64, body, CRC32C of everything
// before it u32. Written to `<name>.tmp`, fdatasync'ed, renamed into place, the directory
// fsync'ed; only then are older snapshots beyond the last two removed.

public struct SnapshotFile: Sendable {
    public var index: UInt64
    public var term: UInt64
    public var body: [UInt8]
    public init(index: UInt64, term: UInt64, body: [UInt8]) {
        self.index = index
        self.term = term
        self.body = body
    }
}

public final class SnapshotFiles {
    public let device: any StorageDevice
    public let directory: String
    /// Snapshots kept (the newest first); older ones are removed after a write.
    public let keep: Int
    static let magic: UInt32 = 0x504E_5354  // "TSNP" as bytes in the file
    static let headerBytes = 32

    public init(device: any StorageDevice, directory: String, keep: Int = 2) throws(StorageError) {
        precondition(keep >= 1)
        self.device = device
        self.directory = directory
        self.keep = keep
        try device.createDirectory(directory)
        // A write interrupted before its rename leaves a temporary file: never valid, removed.
        for name in try device.listDirectory(directory) where name.hasSuffix(".tmp") {
            try device.removeFile(directory + "/" + name)
        }
    }

    func path(_ index: UInt64) -> String { "\(directory)/snapshot-\(zeroPadded(index, 20))" }

    /// Whether snapshot `index` is on disk (whole or not).
    public func exists(_ index: UInt64) -> Bool { device.fileExists(path(index)) }

    /// Indexes of the snapshot files present, newest first (whether valid or not).
    public func indexes() throws(StorageError) -> [UInt64] {
        try device.listDirectory(directory).compactMap { name -> UInt64? in
            guard name.hasPrefix("snapshot-"), name.count == 29 else { return nil }
            return UInt64(name.dropFirst(9))
        }.sorted(by: >)
    }

    /// Reads and checks one snapshot; throws `.corruption` saying what is wrong.
    public func read(_ index: UInt64) throws(StorageError) -> SnapshotFile {
        let p = path(index)
        let file = try device.openFile(p, create: false)
        defer { device.closeFile(file) }
        let size = try device.fileSize(file)
        guard size >= SnapshotFiles.headerBytes + 4 else { throw StorageError(.corruption, "snapshot \(p) is \(size) bytes, shorter than its header") }
        let b = try device.read(file, at: 0, count: size)
        func u32(_ at: Int) -> UInt32 { b.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
        func u64(_ at: Int) -> UInt64 { b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
        guard u32(0) == SnapshotFiles.magic, b[4] == 1 else { throw StorageError(.corruption, "snapshot \(p) has no snapshot header (magic or version)") }
        let length = u64(24)
        guard length == UInt64(size - SnapshotFiles.headerBytes - 4) else {
            throw StorageError(.corruption, "snapshot \(p) says its body is \(length) bytes; the file holds \(size - SnapshotFiles.headerBytes - 4)")
        }
        let crc = b.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<(size - 4)])) }
        guard u32(size - 4) == crc else { throw StorageError(.corruption, "snapshot \(p) fails its checksum") }
        guard u64(8) == index else { throw StorageError(.corruption, "snapshot \(p) holds index \(u64(8))") }
        return SnapshotFile(index: index, term: u64(16), body: Array(b[SnapshotFiles.headerBytes..<(size - 4)]))
    }

    /// Writes a snapshot durably, then removes the oldest beyond `keep`. Returns the indexes
    /// removed.
    @discardableResult
    public func write(_ s: SnapshotFile, durably: Bool = true) throws(StorageError) -> [UInt64] {
        var bytes = [UInt8](repeating: 0, count: SnapshotFiles.headerBytes)
        bytes.withUnsafeMutableBytes { p in
            p.storeBytes(of: SnapshotFiles.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            p[4] = 1
            p.storeBytes(of: s.index.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: s.term.littleEndian, toByteOffset: 16, as: UInt64.self)
            p.storeBytes(of: UInt64(s.body.count).littleEndian, toByteOffset: 24, as: UInt64.self)
        }
        bytes += s.body
        let crc = bytes.withUnsafeBytes { crc32c($0) }
        withUnsafeBytes(of: crc.littleEndian) { bytes.append(contentsOf: $0) }
        let p = path(s.index)
        let file = try device.openFile(p + ".tmp", create: true)
        do {
            try device.truncate(file, bytes: 0)
            try device.writeNow(file, at: 0, array: bytes)
            if durably { try device.syncNow(file) }
        } catch {
            device.closeFile(file)
            try? device.removeFile(p + ".tmp")
            throw error
        }
        device.closeFile(file)
        try device.renameFile(p + ".tmp", to: p)
        try device.syncDirectory(directory)
        var removed: [UInt64] = []
        for old in try indexes().dropFirst(keep) {
            try device.removeFile(path(old))
            removed.append(old)
        }
        if !removed.isEmpty { try device.syncDirectory(directory) }
        return removed
    }
}

extension SnapshotFiles {
    /// Moves a snapshot that could not be used aside (`<name>.unusable`), out of `indexes()`,
    /// kept for inspection.
    public func setAside(_ index: UInt64) throws(StorageError) {
        try device.renameFile(path(index), to: path(index) + ".unusable")
        try device.syncDirectory(directory)
    }

    /// Removes a snapshot that no longer fits this node's files (a newer state was installed).
    public func remove(_ index: UInt64) throws(StorageError) {
        try device.removeFile(path(index))
        try device.syncDirectory(directory)
    }
}
