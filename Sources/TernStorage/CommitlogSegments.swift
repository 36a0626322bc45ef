// Truncation and retention (cutting the log after an index, deleting or recycling old
// segments), and the segment files and checkpoint behind them: creating and naming a segment,
// and writing and reading the checkpoint.

extension Commitlog {
    /// Removes every entry after `index` (a Raft conflict). Waits for the batch in flight first,
    /// then cuts staged entries in memory and durable ones on disk, durably, before returning.
    public func truncate(after index: UInt64) throws(StorageError) {
        precondition(index + 1 >= firstIndex, "truncate below the first index \(firstIndex)")
        guard index < lastIndex else { return }
        if let failure { throw StorageError(.failed, "log failed earlier: \(failure)") }
        while !inFlight.isEmpty { try pump(wait: true) }
        staged.trim(after: index)
        let onDiskAfter = durableIndex > index
        var removed: [Segment] = []
        while segments.count > 1, let last = segments.last, last.firstIndex > index {
            removed.append(segments.removeLast())
        }
        let oldEnd = segments.last?.writeOffset ?? 0
        do {
            try rewindLogicalEnd(to: index)
        } catch {
            failure = error  // the bookkeeping is half rewound: only a reopen can say where the log ends
            throw error
        }
        for s in removed { dropSegmentFiles(s) }
        if !removed.isEmpty { try device.syncDirectory(directory) }
        if onDiskAfter, let s = segments.last {
            try cutSegmentFiles(s, zeroingUpTo: oldEnd)
            durableIndex = min(durableIndex, index)
            try writeCheckpoint()
        }
        durableIndex = min(durableIndex, index)
    }

    /// Deletes whole segments whose entries all lie at or before `index` (retention). Never the
    /// segment being written, nor one with entries not yet durable. Returns how many went.
    @discardableResult
    public func deleteSegments(through index: UInt64) throws(StorageError) -> Int {
        var count = 0
        while segments.count > 1, let s = segments.first, s.entryCount > 0, s.lastIndex <= index, s.lastIndex <= durableIndex {
            segments.removeFirst()
            if recyclePool.count < options.recycledSegmentsMax {
                device.closeFile(s.file)
                device.closeFile(s.indexFile)
                let recycled = directory + "/recycle-" + Commitlog.segmentName(s.base)
                try device.renameFile(s.path, to: recycled)
                try device.removeFile(s.path + ".index")
                recyclePool.append(recycled)
            } else {
                dropSegmentFiles(s)
            }
            count += 1
        }
        if count > 0 { try device.syncDirectory(directory) }
        return count
    }

    /// The last index of the last segment that `deleteSegments(through: index)` would delete
    /// (whole, durable, not the segment being written); nil when none would go.
    public func lastIndexOfSegments(through index: UInt64) -> UInt64? {
        var found: UInt64?
        for s in segments.dropLast() {
            guard s.entryCount > 0, s.lastIndex <= index, s.lastIndex <= durableIndex else { break }
            found = s.lastIndex
        }
        return found
    }

    /// Retired segment files kept for reuse (each `segmentSizeBytes` on disk), and at most how many.
    public var recycledSegmentCount: Int { recyclePool.count }

    /// Each segment's first and last index, oldest first (a segment being written included).
    public var segmentRanges: [(first: UInt64, last: UInt64)] { segments.map { ($0.firstIndex, $0.lastIndex) } }

    /// Drops every entry and file of the log; the next entry appended is `nextIndex`. For a
    /// snapshot install, whose state covers everything before `nextIndex`. Waits for the batch
    /// in flight first; the files are gone, and the directory synced, when it returns.
    public func reset(nextIndex: UInt64) throws(StorageError) {
        precondition(nextIndex > 0)
        if let failure { throw StorageError(.failed, "log failed earlier: \(failure)") }
        while !inFlight.isEmpty { try pump(wait: true) }
        staged.reset()
        for s in segments { dropSegmentFiles(s) }
        segments.removeAll()
        try device.removeFile(directory + "/checkpoint")
        // Recycled segments go too: positions start again at 0, so an old segment file renamed
        // to a new segment's name could hold old entries at exactly the positions the new ones
        // take, and recovery would take a torn write followed by one of them for corruption
        // (simulator seed 64: a crash right after an install).
        recyclePool.removeAll()
        for name in try device.listDirectory(directory) where name.count == 20 || name.hasSuffix(".index") || name.hasPrefix("recycle-") {
            try device.removeFile(directory + "/" + name)
        }
        try device.syncDirectory(directory)
        checkpointSegmentBase = nil
        lastIndex = nextIndex - 1
        durableIndex = nextIndex - 1
        device.prepareFile(directory + "/" + Commitlog.segmentName(0), bytes: options.segmentSizeBytes)
    }

    /// Puts segment bookkeeping back to "the log ends at `index`". Reads the entry's index record
    /// when it is not in memory, so it can fail like any read (a damaged record).
    func rewindLogicalEnd(to index: UInt64) throws(StorageError) {
        lastIndex = index
        guard let s = segments.last else { return }
        if index < s.firstIndex {
            s.entryCount = 0
            s.writeOffset = 0
            s.firstIndex = index + 1
            return
        }
        s.entryCount = Int(index - s.firstIndex + 1)
        if let (_, e) = memoryEntry(index) {
            s.writeOffset = Int(e.position - s.base) + e.storedSize
        } else {
            let r = try readIndexRecords(s, from: index, through: index)[0]
            s.writeOffset = Int(r.position - s.base) + Int(r.storedSize)
        }
    }

    /// Makes `s`'s files end where its bookkeeping says: writes zeros over the data from
    /// `writeOffset` to `zeroingUpTo` (so recovery cannot find the cut entries, and the blocks stay
    /// written for fast fdatasync), or, when that end is unknown (`nil`, a torn region), truncates
    /// the file there and preallocates it again. Then cuts the index file; both synced.
    func cutSegmentFiles(_ s: Segment, zeroingUpTo end: Int?) throws(StorageError) {
        if let end {
            if end > s.writeOffset {
                try device.writeNow(s.file, at: s.writeOffset, array: [UInt8](repeating: 0, count: end - s.writeOffset))
            }
        } else {
            try device.truncate(s.file, bytes: s.writeOffset)
            try device.preallocate(s.file, bytes: options.segmentSizeBytes)
        }
        try device.syncNow(s.file)
        try device.truncate(s.indexFile, bytes: s.entryCount * IndexRecord.bytes)
        try device.syncNow(s.indexFile)
    }

    func dropSegmentFiles(_ s: Segment) {
        device.closeFile(s.file)
        device.closeFile(s.indexFile)
        try? device.removeFile(s.path)
        try? device.removeFile(s.path + ".index")
    }

    static func segmentName(_ base: UInt64) -> String { zeroPadded(base, 20) }

    /// Opens the segment at `base`, zero-filled and synced, then starts preparing the one after it
    /// in the background, so a roll-over normally finds its file ready.
    func createSegment(base: UInt64, firstIndex: UInt64) throws(StorageError) -> Segment {
        let path = directory + "/" + Commitlog.segmentName(base)
        let nextPath = directory + "/" + Commitlog.segmentName(base + UInt64(options.segmentSizeBytes))
        let file: DeviceFile
        if !device.preparationFinished(path) {
            // Appends overtook the zero-filling (sustained writes faster than the disk zero-fills
            // a segment): rather than stall every append until it ends, write this segment as a
            // growing file (each fdatasync then also journals its size) and give the preparation
            // to the next segment.
            device.movePreparation(path, to: nextPath)
            file = try device.openFile(path, create: true)
            try device.truncate(file, bytes: 0)
            stats.segmentsUnprepared += 1
        } else if let prepared = try device.openPreparedFile(path) {
            file = prepared
        } else if let recycled = recyclePool.first {
            // Old entries stay in it; they name another position, so they never verify, and
            // every batch writes a zero header after the log's end (Stage.makeBatch).
            try device.renameFile(recycled, to: path)
            recyclePool.removeFirst()
            file = try device.openFile(path, create: false)
            stats.segmentsRecycled += 1
        } else {
            device.prepareFile(path, bytes: options.segmentSizeBytes)
            guard let made = try device.openPreparedFile(path) else { preconditionFailure("device did not prepare \(path)") }
            file = made
        }
        let indexFile: DeviceFile
        do {
            indexFile = try device.openFile(path + ".index", create: true)
        } catch {
            device.closeFile(file)
            try? device.removeFile(path)
            throw error
        }
        let segment = Segment(base: base, path: path, file: file, indexFile: indexFile, firstIndex: firstIndex)
        do {
            try device.syncDirectory(directory)
        } catch {
            dropSegmentFiles(segment)
            throw error
        }
        segments.append(segment)
        stats.segmentsCreated += 1
        if recyclePool.isEmpty {
            device.prepareFile(nextPath, bytes: options.segmentSizeBytes)
        }
        return segment
    }

    /// Once the durable end has moved into a newer segment, records it in the checkpoint so the
    /// next open verifies only what was written after it.
    ///
    /// Segments wholly before the durable end are then dropped from the page cache: their pages
    /// are clean, and a log written faster than memory would otherwise fill the cache until the
    /// kernel's reclaim, not the disk, set the pace (a 10 M message backlog on three nodes here:
    /// from about 130k to 10k messages/s once the cache was full). Readers behind the newest
    /// segment read from disk, with readahead.
    func checkpointIfSegmentChanged() throws(StorageError) {
        guard durableIndex >= firstIndex, let s = try? segmentContaining(durableIndex) else { return }
        if checkpointSegmentBase != s.base {
            writeCheckpointIfPossible()
            for older in segments where older.base < s.base && older.base >= cacheKeptFrom { device.dropCachedPages(older.file) }
            cacheKeptFrom = s.base
        }
    }

    /// A checkpoint only saves recovery work, and an old one stays safe (recovery verifies the
    /// entry before it), so failing to write one (a full disk) is reported, not fatal.
    func writeCheckpointIfPossible() {
        do {
            try writeCheckpoint()
        } catch {
            recoveryReport.append("could not write a checkpoint: \(error)")
        }
    }

    /// Checkpoint file: 32 bytes. magic "TCKP" u32, version u8, 3 zero bytes, next index u64,
    /// position u64 (where the entry after the durable end starts), CRC32C of bytes 0..<24, u32
    /// zero. Written to a temporary file, synced, renamed over the old one, directory synced.
    /// Index files of every segment up to the checkpoint are synced first.
    func writeCheckpoint() throws(StorageError) {
        let durable = min(durableIndex, lastIndex)
        var position: UInt64 = 0
        var base: UInt64 = 0
        if durable >= firstIndex {
            let s = try segmentContaining(durable)
            let r = try readIndexRecords(s, from: durable, through: durable)[0]
            position = r.position + UInt64(r.storedSize)
            base = s.base
            for seg in segments where seg.base <= s.base { try device.syncNow(seg.indexFile) }
        } else if let s = segments.first {
            base = s.base
            position = s.base
        }
        var bytes = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeMutableBytes { b in
            b.storeBytes(of: Commitlog.checkpointMagic.littleEndian, toByteOffset: 0, as: UInt32.self)
            b[4] = 1
            b.storeBytes(of: (durable + 1).littleEndian, toByteOffset: 8, as: UInt64.self)
            b.storeBytes(of: position.littleEndian, toByteOffset: 16, as: UInt64.self)
            let crc = crc32c(UnsafeRawBufferPointer(rebasing: b[0..<24]))
            b.storeBytes(of: crc.littleEndian, toByteOffset: 24, as: UInt32.self)
        }
        let path = directory + "/checkpoint", temporary = path + ".tmp"
        let file = try device.openFile(temporary, create: true)
        do {
            try device.truncate(file, bytes: 0)
            try device.writeNow(file, at: 0, array: bytes)
            try device.syncNow(file)
        } catch {
            device.closeFile(file)
            throw error
        }
        device.closeFile(file)
        try device.renameFile(temporary, to: path)
        try device.syncDirectory(directory)
        checkpointSegmentBase = base
    }

    /// (next index, position) from the checkpoint file, nil when absent or damaged.
    func readCheckpoint() -> (nextIndex: UInt64, position: UInt64)? {
        let path = directory + "/checkpoint"
        guard device.fileExists(path), let file = try? device.openFile(path, create: false) else { return nil }
        defer { device.closeFile(file) }
        guard let bytes = try? device.read(file, at: 0, count: 32), bytes.count == 32 else { return nil }
        return bytes.withUnsafeBytes { b -> (UInt64, UInt64)? in
            guard UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == Commitlog.checkpointMagic, b[4] == 1,
                UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 24, as: UInt32.self)) == crc32c(UnsafeRawBufferPointer(rebasing: b[0..<24]))
            else { return nil }
            return (
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
            )
        }
    }
}

/// `value` in decimal, zero-padded to `width` digits (file names that sort by number).
func zeroPadded(_ value: UInt64, _ width: Int) -> String {
    let digits = String(value)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}
