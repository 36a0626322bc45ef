// Consume queues on disk: per queue, files of fixed-size rows, one row per message in queue
// order (RocketMQ's ConsumeQueue idea). A row says where the message is in the commitlog; a
// pull reads rows here and the message from the log. The broker appends rows as it applies
// entries; they are written through the storage device without fdatasync, and synced only when
// a broker snapshot is taken, which then records each queue's bounds. A restart from that
// snapshot cuts every queue back to its recorded end (rows past it came from entries that are
// applied again) and checks the last row kept; anything missing or damaged makes the node
// rebuild from the log instead. Memory holds, per queue, its bounds and the rows not yet
// written (at most `flushRows`), and a bounded set of open files.
//
// Files: `<directory>/<created 20 digits>-<queue 10 digits>-<first offset 20 digits>`, each
// holding `rowsPerFile` rows at most. `created` is the index of the entry that created the queue
// (a topic's creation, or the update that added queues), so that a topic deleted and created
// again never shares files with its earlier self, and names need no escaping.
//
// Row (32 bytes, little-endian): entry index u64 and slot (the message's id), stored index u64
// (the entry holding its bytes), position in that entry's body u32, slot u16, zero u16, tag hash
// u32, CRC32C of bytes 0..<28 u32. An all-zero row fails its CRC, so a row never written reads
// as damage, not as a message.

/// One row of a consume queue. `entryIndex` and `slot` are the message's id; `storedIndex` is
/// the entry that holds its bytes now: the same entry, or, for a message delivered later than it
/// was stored (a released delayed message, a committed half message), the entry that released it
/// with a copy (`carried`), so that retention judges the bytes by when they were last written.
public struct QueueRow: Equatable, Sendable {
    public var entryIndex: UInt64
    public var storedIndex: UInt64
    public var position: UInt32
    public var slot: UInt16
    public var tagHash: UInt32
    public init(entryIndex: UInt64, storedIndex: UInt64? = nil, position: UInt32, slot: UInt16, tagHash: UInt32) {
        self.entryIndex = entryIndex
        self.storedIndex = storedIndex ?? entryIndex
        self.position = position
        self.slot = slot
        self.tagHash = tagHash
    }
    public var carried: Bool { storedIndex != entryIndex }

    /// Whether every row encoded in `bytes` (whole rows) passes its checksum.
    public static func allValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { b in (0..<(b.count / QueueRow.bytes)).allSatisfy { QueueRow.decode(b, at: $0 * QueueRow.bytes) != nil } }
    }
    public static let bytes = 32

    /// Appends the encoded row to `b` (in place: no allocation per row).
    func encode(into b: inout [UInt8]) {
        let at = b.count
        b.append(contentsOf: repeatElement(0, count: QueueRow.bytes))
        b.withUnsafeMutableBytes { whole in
            let p = UnsafeMutableRawBufferPointer(rebasing: whole[at..<(at + QueueRow.bytes)])
            p.storeBytes(of: entryIndex.littleEndian, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: storedIndex.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: position.littleEndian, toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: slot.littleEndian, toByteOffset: 20, as: UInt16.self)
            p.storeBytes(of: tagHash.littleEndian, toByteOffset: 24, as: UInt32.self)
            let crc = crc32c(UnsafeRawBufferPointer(rebasing: p[0..<28]))
            p.storeBytes(of: crc.littleEndian, toByteOffset: 28, as: UInt32.self)
        }
    }

    /// The row at `at` in `b`, nil when its checksum fails.
    static func decode(_ b: UnsafeRawBufferPointer, at: Int) -> QueueRow? {
        let crc = crc32c(UnsafeRawBufferPointer(rebasing: b[at..<(at + 28)]))
        guard UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 28, as: UInt32.self)) == crc else { return nil }
        return QueueRow(
            entryIndex: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self)),
            storedIndex: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)),
            position: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 16, as: UInt32.self)),
            slot: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: at + 20, as: UInt16.self)),
            tagHash: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 24, as: UInt32.self)))
    }
}

/// Names one queue's files: the entry that created the queue, and its number in the topic.
public struct QueueFileKey: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var created: UInt64
    public var queueID: UInt32
    public init(created: UInt64, queueID: UInt32) {
        self.created = created
        self.queueID = queueID
    }
    public static func < (a: QueueFileKey, b: QueueFileKey) -> Bool { (a.created, a.queueID) < (b.created, b.queueID) }
    public var description: String { "queue \(queueID) created at \(created)" }
}

/// A queue's bounds as a snapshot records them.
public struct QueueFileBounds: Equatable, Sendable {
    public var key: QueueFileKey
    public var minOffset: UInt64
    public var maxOffset: UInt64
    public init(key: QueueFileKey, minOffset: UInt64, maxOffset: UInt64) {
        self.key = key
        self.minOffset = minOffset
        self.maxOffset = maxOffset
    }
}

public final class ConsumeQueueFiles {
    public let device: any StorageDevice
    public let directory: String
    public let rowsPerFile: UInt64
    /// Rows kept in memory per queue before they are written.
    public let flushRows: Int
    /// Files kept open at once, at most (the least recently used is closed first).
    public let maxOpenFiles: Int

    struct Queue {
        var minOffset: UInt64
        /// Rows below this are in the files.
        var written: UInt64
        /// Encoded rows from `written` on.
        var tail: [UInt8] = []
        var maxOffset: UInt64 { written + UInt64(tail.count / QueueRow.bytes) }
    }
    var queues: [QueueFileKey: Queue] = [:]
    /// Open files by path, with their last use (a counter, so eviction is deterministic).
    var open: [String: (file: DeviceFile, used: UInt64)] = [:]
    var useCounter: UInt64 = 0
    /// Files written since the last `sync`.
    var unsynced: Set<String> = []
    /// The files that exist, by queue: their first offsets, ascending (listed once at start,
    /// then kept up to date, so clean-up never lists the directory).
    var fileBases: [QueueFileKey: [UInt64]] = [:]

    public init(device: any StorageDevice, directory: String, rowsPerFile: UInt64 = 1 << 18, flushRows: Int = 170, maxOpenFiles: Int = 64) throws(StorageError)
    {
        precondition(rowsPerFile > 0 && flushRows > 0 && maxOpenFiles > 0)
        self.device = device
        self.directory = directory
        self.rowsPerFile = rowsPerFile
        self.flushRows = flushRows
        self.maxOpenFiles = maxOpenFiles
        try device.createDirectory(directory)
    }

    deinit { for (_, f) in open { device.closeFile(f.file) } }

    func path(_ key: QueueFileKey, base: UInt64) -> String {
        "\(directory)/\(zeroPadded(key.created, 20))-\(zeroPadded(UInt64(key.queueID), 10))-\(zeroPadded(base, 20))"
    }

    static func parse(_ name: String) -> (key: QueueFileKey, base: UInt64)? {
        let parts = name.split(separator: "-")
        guard parts.count == 3, parts[0].count == 20, parts[1].count == 10, parts[2].count == 20,
            let c = UInt64(parts[0]), let q = UInt32(parts[1]), let b = UInt64(parts[2])
        else { return nil }
        return (QueueFileKey(created: c, queueID: q), b)
    }

    private func handle(_ path: String, create: Bool) throws(StorageError) -> DeviceFile {
        useCounter += 1
        if let f = open[path] {
            open[path]!.used = useCounter
            return f.file
        }
        if open.count >= maxOpenFiles, let victim = open.min(by: { $0.value.used < $1.value.used }) {
            device.closeFile(victim.value.file)
            open[victim.key] = nil
        }
        let f = try device.openFile(path, create: create)
        open[path] = (f, useCounter)
        return f
    }

    private func close(_ path: String) {
        if let f = open.removeValue(forKey: path) { device.closeFile(f.file) }
    }

    // MARK: Queues

    /// A new, empty queue starting at `offset`.
    public func create(_ key: QueueFileKey, at offset: UInt64 = 0) {
        precondition(queues[key] == nil, "\(key) exists")
        queues[key] = Queue(minOffset: offset, written: offset)
    }

    /// Forgets the queue. Its rows held in memory are written first, and its files stay until
    /// `collect`: a snapshot not yet written, or one still kept, may name them.
    public func remove(_ key: QueueFileKey) throws(StorageError) {
        try flush(key)
        queues[key] = nil
    }

    /// Rows below `offset` are gone (retention); their files go at the next `collect` that no
    /// kept snapshot stops.
    public func raiseMinimum(_ key: QueueFileKey, to offset: UInt64) {
        guard let q = queues[key] else { return }
        queues[key]!.minOffset = min(max(q.minOffset, offset), q.maxOffset)
    }

    /// Bytes of the rows the queues hold (minimum to maximum), and of the files of removed
    /// queues (kept until `collect`), counted whole. What retention can shrink: rows below a
    /// queue's minimum go with whole files, later, and are not counted.
    public var storedBytes: UInt64 {
        var rows: UInt64 = 0
        for q in queues.values { rows += q.maxOffset - q.minOffset }
        for (key, bases) in fileBases where queues[key] == nil { rows += UInt64(bases.count) * rowsPerFile }
        return rows * UInt64(QueueRow.bytes)
    }

    public func bounds(_ key: QueueFileKey) -> (min: UInt64, max: UInt64)? { queues[key].map { ($0.minOffset, $0.maxOffset) } }

    public var allBounds: [QueueFileBounds] {
        queues.keys.sorted().map { QueueFileBounds(key: $0, minOffset: queues[$0]!.minOffset, maxOffset: queues[$0]!.maxOffset) }
    }

    /// Appends a row; returns its offset.
    @discardableResult
    public func append(_ key: QueueFileKey, _ row: QueueRow) throws(StorageError) -> UInt64 {
        guard queues[key] != nil else { preconditionFailure("append to unknown \(key)") }
        let offset = queues[key]!.maxOffset
        row.encode(into: &queues[key]!.tail)
        if queues[key]!.tail.count >= flushRows * QueueRow.bytes { try flush(key) }
        return offset
    }

    /// Writes the queue's rows held in memory.
    func flush(_ key: QueueFileKey) throws(StorageError) {
        guard var q = queues[key], !q.tail.isEmpty else { return }
        var done = 0
        while done < q.tail.count {
            let offset = q.written + UInt64(done / QueueRow.bytes)
            let base = offset - offset % rowsPerFile
            let rows = min(Int(base + rowsPerFile - offset), (q.tail.count - done) / QueueRow.bytes)
            let p = path(key, base: base)
            let f = try handle(p, create: true)
            if fileBases[key]?.last.map({ $0 < base }) ?? true { fileBases[key, default: []].append(base) }
            let bytes = Array(q.tail[done..<(done + rows * QueueRow.bytes)])
            try device.writeNow(f, at: Int(offset - base) * QueueRow.bytes, array: bytes)
            unsynced.insert(p)
            done += rows * QueueRow.bytes
        }
        q.written = q.maxOffset
        q.tail = []
        queues[key] = q
    }

    /// Writes every queue's rows held in memory and makes every file written since the last
    /// call durable (before a snapshot names their bounds).
    public func sync(durably: Bool = true) throws(StorageError) {
        for key in queues.keys.sorted() { try flush(key) }
        guard durably else { return }
        for p in unsynced.sorted() {
            try device.syncNow(try handle(p, create: false))
        }
        if !unsynced.isEmpty { try device.syncDirectory(directory) }
        unsynced = []
    }

    /// `count` rows from `offset` (fewer at the queue's end). Throws `.corruption` for a row that
    /// fails its checksum or is missing.
    public func rows(_ key: QueueFileKey, from offset: UInt64, count: Int) throws(StorageError) -> [QueueRow] {
        guard let q = queues[key], offset >= q.minOffset, offset < q.maxOffset, count > 0 else { return [] }
        let end = min(q.maxOffset, offset + UInt64(count))
        var out: [QueueRow] = []
        out.reserveCapacity(Int(end - offset))
        var at = offset
        while at < min(end, q.written) {
            let base = at - at % rowsPerFile
            let n = Int(min(min(end, q.written), base + rowsPerFile) - at)
            let p = path(key, base: base)
            // An open file exists (no stat per read on the pull path).
            guard open[p] != nil || device.fileExists(p) else {
                throw StorageError(.corruption, "consume queue file \(p) is missing (rows \(at)..<\(at + UInt64(n)))")
            }
            let bytes = try device.read(try handle(p, create: false), at: Int(at - base) * QueueRow.bytes, count: n * QueueRow.bytes)
            var failed: UInt64?
            bytes.withUnsafeBytes { b in
                for k in 0..<(b.count / QueueRow.bytes) {
                    guard let r = QueueRow.decode(b, at: k * QueueRow.bytes) else {
                        failed = at + UInt64(k)
                        return
                    }
                    out.append(r)
                }
            }
            if let failed { throw StorageError(.corruption, "consume queue file \(p): row \(failed) fails its checksum") }
            guard bytes.count == n * QueueRow.bytes else {
                throw StorageError(.corruption, "consume queue file \(p) ends at row \(base + UInt64(bytes.count / QueueRow.bytes)), before \(at + UInt64(n))")
            }
            at += UInt64(n)
        }
        if at < end {
            q.tail.withUnsafeBytes { b in
                for o in at..<end {
                    out.append(QueueRow.decode(b, at: Int(o - q.written) * QueueRow.bytes)!)
                }
            }
        }
        return out
    }

    /// Rows `offset..<offset + count` of a queue's files, as encoded there, whether or not the
    /// queue is still live: for sending a snapshot's queues to a follower (every row a snapshot
    /// counts was synced before it was written). Throws `.corruption` when they are not there.
    public func storedRows(_ key: QueueFileKey, from offset: UInt64, count: Int) throws(StorageError) -> [UInt8] {
        var out: [UInt8] = []
        var at = offset
        let end = offset + UInt64(count)
        while at < end {
            let base = at - at % rowsPerFile
            let n = Int(min(end, base + rowsPerFile) - at)
            let p = path(key, base: base)
            guard device.fileExists(p) else { throw StorageError(.corruption, "consume queue file \(p) is missing") }
            let bytes = try device.read(try handle(p, create: false), at: Int(at - base) * QueueRow.bytes, count: n * QueueRow.bytes)
            guard bytes.count == n * QueueRow.bytes else { throw StorageError(.corruption, "consume queue file \(p) ends before row \(at + UInt64(n))") }
            out += bytes
            at += UInt64(n)
        }
        return out
    }

    /// Adds encoded rows (checked) to a queue created for them (a snapshot install).
    public func importRows(_ key: QueueFileKey, _ encoded: [UInt8]) throws(StorageError) {
        guard encoded.count % QueueRow.bytes == 0 else { throw StorageError(.corruption, "\(encoded.count) bytes are not whole rows") }
        var rows: [QueueRow] = []
        var bad = false
        encoded.withUnsafeBytes { b in
            for k in 0..<(b.count / QueueRow.bytes) {
                guard let r = QueueRow.decode(b, at: k * QueueRow.bytes) else {
                    bad = true
                    return
                }
                rows.append(r)
            }
        }
        if bad { throw StorageError(.corruption, "a row of \(key) fails its checksum") }
        for r in rows { try append(key, r) }
    }

    public func row(_ key: QueueFileKey, at offset: UInt64) throws(StorageError) -> QueueRow? {
        try rows(key, from: offset, count: 1).first
    }

    // MARK: Start-up and clean-up

    /// Names of the files in the directory, parsed; other names are ignored.
    func listed() throws(StorageError) -> [(name: String, key: QueueFileKey, base: UInt64)] {
        try device.listDirectory(directory).compactMap { n in ConsumeQueueFiles.parse(n).map { (n, $0.key, $0.base) } }
    }

    /// Restores the queues a snapshot names: files past each queue's end are cut, and the last row
    /// kept is checked. Returns what is wrong, or nil when every queue is whole; the caller then
    /// falls back to an older snapshot or a rebuild.
    public func restore(_ bounds: [QueueFileBounds]) throws(StorageError) -> String? {
        for (_, f) in open { device.closeFile(f.file) }
        open = [:]
        queues = [:]
        unsynced = []
        let files = try listed()
        fileBases = [:]
        for f in files { fileBases[f.key, default: []].append(f.base) }
        for key in fileBases.keys { fileBases[key]!.sort() }
        if let odd = files.first(where: { $0.base % rowsPerFile != 0 }) {
            return "consume queue file \(odd.name) does not start at a multiple of \(rowsPerFile) rows (written with another file size?)"
        }
        for b in bounds {
            queues[b.key] = Queue(minOffset: b.minOffset, written: b.maxOffset)
            for f in files where f.key == b.key && f.base >= b.maxOffset { try device.removeFile(directory + "/" + f.name) }
            fileBases[b.key]?.removeAll { $0 >= b.maxOffset }
            guard b.maxOffset > b.minOffset else { continue }
            // Every file the queue's rows need is there and whole up to where the next begins.
            var at = b.minOffset - b.minOffset % rowsPerFile
            while at + rowsPerFile < b.maxOffset {
                let p = path(b.key, base: at)
                guard device.fileExists(p) else { return "consume queue file \(p) (\(b.key)) is missing" }
                let size = try device.fileSize(try handle(p, create: false))
                guard size >= Int(rowsPerFile) * QueueRow.bytes else {
                    return "consume queue file \(p) holds \(size / QueueRow.bytes) of its \(rowsPerFile) rows"
                }
                at += rowsPerFile
            }
            let last = b.maxOffset - 1
            let base = last - last % rowsPerFile
            let p = path(b.key, base: base)
            guard device.fileExists(p) else { return "consume queue file \(p) (\(b.key)) is missing" }
            let f = try handle(p, create: false)
            let want = Int(b.maxOffset - base) * QueueRow.bytes
            let size = try device.fileSize(f)
            guard size >= want else {
                return "consume queue file \(p) holds \(size / QueueRow.bytes) rows, fewer than the \(want / QueueRow.bytes) the snapshot counts"
            }
            if size > want {
                try device.truncate(f, bytes: want)
                try device.syncNow(f)
            }
            // Read twice before giving up: a read error need not be in the file, and a snapshot
            // given up on for it can cost the member its log (simulator seed 1703: two members
            // set their snapshots aside over read bit flips, dropped their compacted logs to
            // rejoin, and no leader could be elected again).
            var ok = false
            for _ in 0..<2 where !ok {
                let bytes = try device.read(f, at: want - QueueRow.bytes, count: QueueRow.bytes)
                ok = bytes.withUnsafeBytes { QueueRow.decode($0, at: 0) } != nil
            }
            if !ok { return "consume queue file \(p): its last row (\(last)) fails its checksum, read twice" }
        }
        return nil
    }

    /// Removes the files of queues in none of `keep` (queues deleted, or created after the
    /// snapshot being restored) and files wholly below the lowest minimum `keep` gives their
    /// queue. `keep` must include every live queue (the snapshots kept name them).
    public func collect(keeping keep: [QueueFileBounds]) throws(StorageError) {
        var lowest: [QueueFileKey: UInt64] = [:]
        for b in keep { lowest[b.key] = min(lowest[b.key] ?? .max, b.minOffset) }
        for key in fileBases.keys.sorted() {
            let low = lowest[key] ?? .max
            precondition(queues[key] == nil || lowest[key] != nil, "collect would remove the files of live \(key)")
            for base in fileBases[key]! where base + rowsPerFile <= low {
                let p = path(key, base: base)
                close(p)
                unsynced.remove(p)
                try device.removeFile(p)
            }
            fileBases[key]!.removeAll { $0 + rowsPerFile <= low }
            if fileBases[key]!.isEmpty { fileBases[key] = nil }
        }
    }

    /// Removes every file (a rebuild from the log starts here).
    public func wipe() throws(StorageError) {
        for (_, f) in open { device.closeFile(f.file) }
        open = [:]
        queues = [:]
        unsynced = []
        fileBases = [:]
        for f in try listed() { try device.removeFile(directory + "/" + f.name) }
        try device.syncDirectory(directory)
    }
}
