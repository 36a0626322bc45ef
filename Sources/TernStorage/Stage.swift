// Group commit's buffers. A Stage holds encoded entries and their index records that are waiting
// to be written; the commitlog keeps one stage filling while the previous one is in flight, and
// swaps them when the device reports the flight done. Steady state allocates nothing: arenas keep
// their capacity across reuse.

/// A growable, manually managed byte buffer. Its memory must not move while the kernel holds a
/// pointer into it, so the commitlog only grows the arena of the stage that is not in flight.
final class ByteArena {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    private(set) var count = 0

    init(capacity: Int = 64 << 10) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
    }

    deinit { base.deallocate() }

    /// Appends `bytes` uninitialised bytes and returns their offset.
    func reserve(_ bytes: Int) -> Int {
        if count + bytes > capacity {
            var grown = capacity * 2
            while count + bytes > grown { grown *= 2 }
            let moved = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 4096)
            moved.copyMemory(from: base, byteCount: count)
            base.deallocate()
            base = moved
            capacity = grown
        }
        defer { count += bytes }
        return count
    }

    func shrink(to newCount: Int) {
        precondition(newCount <= count, "arena shrink beyond its end")
        count = newCount
    }

    func bytes(at offset: Int, count length: Int) -> UnsafeRawBufferPointer {
        precondition(offset + length <= count, "arena read past its end")
        return UnsafeRawBufferPointer(start: base + offset, count: length)
    }
}

/// Entries encoded and waiting for (or in) one write batch.
final class Stage {
    struct Entry {
        var index: UInt64
        var term: UInt64
        var position: UInt64
        var storedSize: Int
        var dataFile: DeviceFile
        var dataFileOffset: Int
        var dataArenaOffset: Int
        var indexFile: DeviceFile
        var indexFileOffset: Int
        var indexArenaOffset: Int
    }

    /// Zeros written after a file's last entry: at least a header's worth, up to a 4 KiB page
    /// boundary.
    nonisolated(unsafe) static let zeros: UnsafeRawBufferPointer = {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: Stage.page + EntryFormat.headerBytes, alignment: 8)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
        return UnsafeRawBufferPointer(bytes)
    }()
    static let page = 4096

    /// How many zeros follow a run ending at file offset `end`: up to the next page boundary
    /// (and past it when fewer than a header's bytes are left), never past the segment.
    static func padding(after end: Int, segmentSizeBytes: Int) -> Int {
        var stop = (end + page - 1) / page * page
        if stop - end < EntryFormat.headerBytes { stop += page }
        return max(0, min(stop, segmentSizeBytes) - end)
    }

    let data = ByteArena()
    let index = ByteArena(capacity: 8 << 10)
    private(set) var entries: [Entry] = []
    var batchID: UInt64 = 0
    /// Set when the device reported this stage's batch finished (possibly before an older one).
    var completed = false

    var isEmpty: Bool { entries.isEmpty }
    var firstIndex: UInt64? { entries.first?.index }
    var lastIndex: UInt64? { entries.last?.index }

    func add(_ entry: Entry) {
        if let last = entries.last { precondition(entry.index == last.index + 1, "stage indexes must be contiguous") }
        entries.append(entry)
    }

    func entry(at i: UInt64) -> Entry? {
        guard let first = entries.first?.index, i >= first, i - first < UInt64(entries.count) else { return nil }
        return entries[Int(i - first)]
    }

    /// Drops entries after `i` and the bytes they occupied. Only for a stage not in flight.
    func trim(after i: UInt64) {
        while let last = entries.last, last.index > i {
            data.shrink(to: last.dataArenaOffset)
            index.shrink(to: last.indexArenaOffset)
            entries.removeLast()
        }
    }

    func reset() {
        entries.removeAll(keepingCapacity: true)
        data.shrink(to: 0)
        index.shrink(to: 0)
    }

    /// One batch: a write per run of entries that are adjacent both in a file and in the arena,
    /// the index records likewise, then a sync of every segment file written. Index files are not
    /// synced here: recovery rebuilds their tail from the segments (docs/storage.md).
    func makeBatch(id: UInt64, segmentSizeBytes: Int) -> WriteBatch {
        precondition(!entries.isEmpty, "empty batch")
        var writes: [BatchWrite] = []
        var syncFiles: [DeviceFile] = []
        func coalesce(file: DeviceFile, fileOffset: Int, arenaOffset: Int, length: Int, into runs: inout [(DeviceFile, Int, Int, Int)]) {
            if let last = runs.last, last.0 == file, last.1 + last.3 == fileOffset, last.2 + last.3 == arenaOffset {
                runs[runs.count - 1].3 += length
            } else {
                runs.append((file, fileOffset, arenaOffset, length))
            }
        }
        var dataRuns: [(DeviceFile, Int, Int, Int)] = []
        var indexRuns: [(DeviceFile, Int, Int, Int)] = []
        for e in entries {
            coalesce(file: e.dataFile, fileOffset: e.dataFileOffset, arenaOffset: e.dataArenaOffset, length: e.storedSize, into: &dataRuns)
            coalesce(file: e.indexFile, fileOffset: e.indexFileOffset, arenaOffset: e.indexArenaOffset, length: IndexRecord.bytes, into: &indexRuns)
            if syncFiles.last != e.dataFile { syncFiles.append(e.dataFile) }
        }
        for (k, run) in dataRuns.enumerated() {
            var pieces = [data.bytes(at: run.2, count: run.3)]
            // After the last entry written to each segment, zeros: at least a header, so that
            // recovery's scan stops there even in a recycled segment whose old bytes follow (also
            // at a segment's end when the batch rolls over to the next), and up to the page
            // boundary, so that the kernel never reads a page from disk to complete a partial
            // write into it (zero-filled segments are written around the page cache). The next
            // batch overwrites them.
            let endsFile = k == dataRuns.count - 1 || dataRuns[k + 1].0 != run.0
            if endsFile {
                let pad = Stage.padding(after: run.1 + run.3, segmentSizeBytes: segmentSizeBytes)
                if pad >= EntryFormat.headerBytes { pieces.append(UnsafeRawBufferPointer(rebasing: Stage.zeros[0..<pad])) }
            }
            writes.append(BatchWrite(file: run.0, offset: run.1, pieces: pieces))
        }
        for run in indexRuns { writes.append(BatchWrite(file: run.0, offset: run.1, pieces: [index.bytes(at: run.2, count: run.3)])) }
        return WriteBatch(id: id, writes: writes, syncFiles: syncFiles)
    }
}
