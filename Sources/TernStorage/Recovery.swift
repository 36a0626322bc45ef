// Recovery: turning whatever a crash left in the directory into a log whose every entry verifies.
// Rules (docs/storage.md, "Recovery"):
//  - Segments wholly before the checkpoint are trusted: their first entry is verified and their
//    index file is checked for completeness (rebuilt by a scan when it is short or damaged).
//  - From the checkpoint on, every entry is read and verified, and its index record rewritten.
//  - The first entry that does not verify is either a torn tail (no valid entry anywhere after it:
//    cut there) or corruption (a valid entry follows: refuse to open, naming file and offset,
//    unless `repairCorruption`, which cuts there and drops everything after).
//  - What was scanned is fdatasync'ed before the log reports it durable, since after a process
//    crash those bytes may sit only in the page cache.

/// Reads a segment file through a window, so a scan costs one pread per window, not per entry.
struct SegmentReader {
    let device: any StorageDevice
    let file: DeviceFile
    let windowBytes: Int
    private var buffer: UnsafeMutableRawBufferPointer
    private var windowStart = 0
    private var windowCount = 0

    init(device: any StorageDevice, file: DeviceFile, windowBytes: Int = 1 << 20) {
        self.device = device
        self.file = file
        self.windowBytes = windowBytes
        buffer = .allocate(byteCount: windowBytes, alignment: 8)
    }

    mutating func release() { buffer.deallocate() }

    /// Up to `count` bytes at `offset` (fewer at end of file). Valid until the next call.
    mutating func bytes(at offset: Int, count: Int) throws(StorageError) -> UnsafeRawBufferPointer {
        if offset < windowStart || offset + count > windowStart + windowCount {
            if count > buffer.count {
                buffer.deallocate()
                buffer = .allocate(byteCount: count, alignment: 8)
            }
            windowStart = offset
            windowCount = try device.read(file, at: offset, into: buffer)
        }
        let from = offset - windowStart
        let to = min(windowCount, from + count)
        return UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[from..<max(from, to)])
    }
}

extension Commitlog {
    /// Where a scan of one segment stopped.
    enum ScanEnd {
        case clean  // zeros or the end of the segment: nothing more was written
        case damaged(Int, String)  // offset of the first entry that does not verify, and why
    }

    func recover() throws(StorageError) {
        let names = try device.listDirectory(directory)
        try device.removeFile(directory + "/checkpoint.tmp")
        let bases = names.filter { $0.count == 20 && $0.allSatisfy(\.isNumber) }.compactMap { UInt64($0) }.sorted()
        for name in names where name.hasPrefix("recycle-") {
            let path = directory + "/" + name
            let file = try device.openFile(path, create: false)
            defer { device.closeFile(file) }
            let size = try device.fileSize(file)
            if size == options.segmentSizeBytes && recyclePool.count < options.recycledSegmentsMax {
                recyclePool.append(path)
            } else {
                try device.removeFile(path)
            }
        }
        for name in names where name.hasSuffix(".prep") {
            try device.removeFile(directory + "/" + name)  // a segment being prepared when we stopped
        }
        for name in names where name.hasSuffix(".index") && !names.contains(String(name.dropLast(6))) {
            try device.removeFile(directory + "/" + name)  // index of a segment already deleted
        }
        guard !bases.isEmpty else { return }
        let checkpoint = readCheckpoint()
        let segmentSize = options.segmentSizeBytes

        for base in bases {
            guard base % UInt64(segmentSize) == 0 else {
                throw StorageError(
                    .invalidArgument,
                    "segment \(Commitlog.segmentName(base)) does not start at a multiple of the configured segment size \(segmentSize); was the log written with another size?"
                )
            }
            let path = directory + "/" + Commitlog.segmentName(base)
            let file = try device.openFile(path, create: false)
            let indexFile: DeviceFile
            do {
                indexFile = try device.openFile(path + ".index", create: true)
            } catch {
                device.closeFile(file)
                throw error
            }
            let s = Segment(base: base, path: path, file: file, indexFile: indexFile, firstIndex: (segments.last?.lastIndex ?? 0) + 1)
            segments.append(s)
            if try device.fileSize(file) > segmentSize {
                throw StorageError(
                    .invalidArgument, "\(path) is larger than the configured segment size \(segmentSize); was the log written with another size?")
            }
        }

        var k = 0
        while k < segments.count {
            let s = segments[k]
            let previous = k > 0 ? segments[k - 1] : nil
            let end: ScanEnd
            if let cp = checkpoint, cp.position >= s.base + UInt64(segmentSize) {
                end = try recoverTrusted(s, previous: previous)
            } else if let cp = checkpoint, cp.position > s.base, try trustPrefix(s, previous: previous, nextIndex: cp.nextIndex, position: cp.position) {
                end = try scan(s, fromOffset: Int(cp.position - s.base), expectedIndex: cp.nextIndex)
            } else if k == 0, let cp = checkpoint, cp.position == s.base {
                // The checkpoint names the first index even when the log is empty (truncated to
                // nothing after retention), so indexes never go backwards across a restart.
                end = try scan(s, fromOffset: 0, expectedIndex: cp.nextIndex)
            } else {
                end = try scan(s, fromOffset: 0, expectedIndex: previous.map { $0.lastIndex + 1 })
            }
            if case .damaged(let offset, let why) = end {
                if offset == 0, k > 0, why.hasPrefix("index ") {
                    // The segment does not continue the previous one: the gap is at the end of
                    // the previous segment (its part of a batch never reached the disk).
                    try resolveDamage(segmentAt: k - 1, offset: previous!.writeOffset, reason: "the next segment starts with \(why)", checkpoint: checkpoint)
                } else {
                    try resolveDamage(segmentAt: k, offset: offset, reason: why, checkpoint: checkpoint)
                }
                break
            }
            if s.entryCount == 0 && k > 0 {
                // An empty segment (created just before a crash). Anything after it would be a gap.
                if let found = try findValidEntry(afterSegment: k, offset: -EntryFormat.alignment) {
                    try resolveDamage(segmentAt: k, offset: 0, reason: "segment is empty but \(found.description) holds a valid entry", checkpoint: checkpoint)
                }
                for extra in segments[(k + 1)...] { dropSegmentFiles(extra) }
                segments.removeSubrange((k + 1)...)
                break
            }
            k += 1
        }
        if let last = segments.last {
            lastIndex = last.lastIndex
            do {
                try device.preallocate(last.file, bytes: segmentSize)
            } catch let e where e.code == .noSpace {
                // A log that filled its disk must still open (to serve reads, and to let
                // retention free space): its last segment then grows as it is written, as one
                // written before its zero-filling finished does. Seen when such a segment was
                // the last one at a disk-full stop (RecoveryTests.diskFull, under load).
                recoveryReport.append("the last segment \(last.path) could not be preallocated (\(e)); it grows as it is written")
            }
        }
        durableIndex = lastIndex
        writeCheckpointIfPossible()
    }

    /// A segment entirely before the checkpoint: checks its first entry and that its index file
    /// covers every entry, rescanning it when not.
    private func recoverTrusted(_ s: Segment, previous: Segment?) throws(StorageError) -> ScanEnd {
        var reader = SegmentReader(device: device, file: s.file, windowBytes: 64 << 10)
        defer { reader.release() }
        let head = try reader.bytes(at: 0, count: EntryFormat.headerBytes)
        guard let h = EntryFormat.header(head) else { return try scan(s, fromOffset: 0, expectedIndex: previous.map { $0.lastIndex + 1 }) }
        s.firstIndex = h.index
        let records = try device.fileSize(s.indexFile) / IndexRecord.bytes
        if records > 0, let last = try? readRecord(s, slot: records - 1) {
            let end = Int(last.position - s.base) + Int(last.storedSize)
            let next = try reader.bytes(at: end, count: EntryFormat.headerBytes)
            let complete = end + EntryFormat.headerBytes > options.segmentSizeBytes || next.count < EntryFormat.headerBytes || next.allSatisfy { $0 == 0 }
            if complete, (try? readRecord(s, slot: 0))?.position == s.base {
                s.entryCount = records
                s.writeOffset = end
                return .clean
            }
        }
        recoveryReport.append("rebuilt the index of \(s.path) (short or damaged index file)")
        return try scan(s, fromOffset: 0, expectedIndex: previous.map { $0.lastIndex + 1 })
    }

    /// For the checkpoint's segment: true when the index records before the checkpoint are
    /// intact, so the scan can start at the checkpoint; sets the segment's first index and count.
    private func trustPrefix(_ s: Segment, previous: Segment?, nextIndex: UInt64, position: UInt64) throws(StorageError) -> Bool {
        guard let first = try? readRecord(s, slot: 0), first.position == s.base else { return false }
        var reader = SegmentReader(device: device, file: s.file, windowBytes: 64 << 10)
        defer { reader.release() }
        guard let h = EntryFormat.header(try reader.bytes(at: 0, count: EntryFormat.headerBytes)) else { return false }
        if let previous, h.index != previous.lastIndex + 1 { return false }
        guard nextIndex > h.index else { return false }
        let count = Int(nextIndex - h.index)
        guard let last = try? readRecord(s, slot: count - 1), last.position + UInt64(last.storedSize) == position else { return false }
        // The entry just before the checkpoint must still verify; if it does not, durable data was
        // damaged and a full scan of the segment decides what happened.
        let whole = try reader.bytes(at: Int(last.position - s.base), count: Int(last.storedSize))
        guard let lh = EntryFormat.verify(whole, expectedPosition: last.position), lh.index == nextIndex - 1 else {
            recoveryReport.append("the entry before the checkpoint in \(s.path) does not verify; rescanning the segment")
            return false
        }
        s.firstIndex = h.index
        s.entryCount = count
        s.writeOffset = Int(position - s.base)
        return true
    }

    private func readRecord(_ s: Segment, slot: Int) throws(StorageError) -> IndexRecord? {
        let bytes = try device.read(s.indexFile, at: slot * IndexRecord.bytes, count: IndexRecord.bytes)
        guard bytes.count == IndexRecord.bytes else { return nil }
        return bytes.withUnsafeBytes { IndexRecord.decode($0) }
    }

    /// Verifies entries of `s` from `fromOffset` on, rewriting their index records, and sets the
    /// segment's count and end. `expectedIndex` nil means "whatever the first entry says".
    private func scan(_ s: Segment, fromOffset: Int, expectedIndex: UInt64?) throws(StorageError) -> ScanEnd {
        let segmentSize = options.segmentSizeBytes
        var reader = SegmentReader(device: device, file: s.file)
        defer { reader.release() }
        var offset = fromOffset
        var slot = fromOffset == 0 ? 0 : s.entryCount
        if fromOffset == 0 { s.entryCount = 0 }
        var expected = expectedIndex
        var previousTerm: UInt64 = 0
        if slot > 0, let r = try readRecord(s, slot: slot - 1) { previousTerm = r.term }
        var records = [UInt8]()
        let recordsStart = slot * IndexRecord.bytes
        var result = ScanEnd.clean
        while offset + EntryFormat.headerBytes <= segmentSize {
            let head = try reader.bytes(at: offset, count: EntryFormat.headerBytes)
            if head.allSatisfy({ $0 == 0 }) { break }  // never written (or the file ends here)
            if head.count < EntryFormat.headerBytes {
                result = .damaged(offset, "the file ends inside an entry header")
                break
            }
            guard let h = EntryFormat.header(head) else {
                result = .damaged(offset, "no entry header (bad magic or version)")
                break
            }
            guard offset + h.storedSize <= segmentSize else {
                result = .damaged(offset, "entry length \(h.bodyLength) runs past the segment end")
                break
            }
            let whole = try reader.bytes(at: offset, count: EntryFormat.headerBytes + h.bodyLength)
            guard EntryFormat.verify(whole, expectedPosition: s.base + UInt64(offset)) != nil else {
                result = .damaged(offset, "checksum or position mismatch")
                break
            }
            if let e = expected, h.index != e {
                result = .damaged(offset, "index \(h.index) where \(e) was expected")
                break
            }
            if h.term < previousTerm {
                result = .damaged(offset, "term \(h.term) after term \(previousTerm)")
                break
            }
            if slot == 0 { s.firstIndex = h.index }
            let at = records.count
            records.append(contentsOf: repeatElement(0, count: IndexRecord.bytes))
            records.withUnsafeMutableBytes { b in
                IndexRecord(position: s.base + UInt64(offset), term: h.term, storedSize: UInt32(h.storedSize)).encode(into: b.baseAddress! + at)
            }
            previousTerm = h.term
            expected = h.index + 1
            offset += h.storedSize
            slot += 1
        }
        if let e = expected, slot == 0 { s.firstIndex = e }
        s.entryCount = slot
        s.writeOffset = offset
        if !records.isEmpty {
            // Write only from the first record that differs: an intact index costs no write, so a
            // log on a full disk still opens when its index is whole.
            let existing = try device.read(s.indexFile, at: recordsStart, count: records.count)
            var same = 0
            while same < existing.count && existing[same] == records[same] { same += 1 }
            let from = same / IndexRecord.bytes * IndexRecord.bytes
            if from < records.count {
                try device.writeNow(s.indexFile, at: recordsStart + from, array: Array(records[from...]))
            }
        }
        try device.truncate(s.indexFile, bytes: slot * IndexRecord.bytes)
        try device.syncNow(s.indexFile)
        try device.syncNow(s.file)  // what we scanned may have been only in the page cache
        return result
    }

    /// Decides between a torn tail and corruption at (`segments[k]`, `offset`), and cuts the log
    /// there when that is allowed. A valid entry after the damage means corruption, except when
    /// every valid entry after it lies in later segment files that the checkpoint never saw
    /// durable: a batch that spans two segments writes two files, and a crash may keep the later
    /// file's part and lose the earlier one's. Such entries were never acknowledged (the batch's
    /// fdatasync, or an earlier batch's, did not complete, or the checkpoint, written before the
    /// durable end moves into a new segment is reported, would name that segment), so they are a
    /// torn tail.
    private func resolveDamage(segmentAt k: Int, offset: Int, reason: String, checkpoint: (nextIndex: UInt64, position: UInt64)?) throws(StorageError) {
        let s = segments[k]
        if let found = try findValidEntry(afterSegment: k, offset: offset) {
            let message = "\(s.path) offset \(offset): \(reason); but a valid entry follows at \(found.description)"
            let laterFileNeverDurable = found.segment > k && (checkpoint.map { $0.position <= segments[k + 1].base } ?? true)
            if laterFileNeverDurable {
                recoveryReport.append("cut a torn tail across segment files at \(message), beyond the checkpointed durable end")
            } else {
                guard options.repairCorruption else {
                    throw StorageError(
                        .corruption,
                        "\(message). Refusing to open: this is corruption, not a torn write. Restart with repair enabled (tern: --repair) to cut the log at offset \(offset); entries after it are then lost on this node and must come back from its peers."
                    )
                }
                recoveryReport.append("repaired: cut the log at \(message)")
            }
        } else {
            recoveryReport.append("cut a torn tail at \(s.path) offset \(offset) (\(reason))")
        }
        for extra in segments[(k + 1)...] { dropSegmentFiles(extra) }
        segments.removeSubrange((k + 1)...)
        try device.syncDirectory(directory)
        try cutSegmentFiles(s, zeroingUpTo: nil)
    }

    /// The first place after (`segments[k]`, `offset`) holding an entry that verifies, searched at
    /// every 8-byte boundary; nil when there is none.
    func findValidEntry(afterSegment k: Int, offset: Int) throws(StorageError) -> (segment: Int, offset: Int, description: String)? {
        var start = offset + EntryFormat.alignment
        for j in k..<segments.count {
            let s = segments[j]
            if j > k { start = 0 }
            var reader = SegmentReader(device: device, file: s.file)
            defer { reader.release() }
            var at = start
            let size = min(options.segmentSizeBytes, try device.fileSize(s.file))
            while at + EntryFormat.headerBytes <= size {
                let head = try reader.bytes(at: at, count: EntryFormat.headerBytes)
                if let h = EntryFormat.header(head), at + EntryFormat.headerBytes + h.bodyLength <= size {
                    let whole = try reader.bytes(at: at, count: EntryFormat.headerBytes + h.bodyLength)
                    if EntryFormat.verify(whole, expectedPosition: s.base + UInt64(at)) != nil { return (j, at, "\(s.path) offset \(at)") }
                }
                at += EntryFormat.alignment
            }
        }
        return nil
    }
}
