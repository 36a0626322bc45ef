// The commitlog: Tern's Raft log and message store in one. It owns a directory of segment files
// (named by the physical position of their first byte, preallocated to a fixed size), one index
// file per segment (Raft index -> position, size, term) and a checkpoint file.
//
// What it guarantees:
//  - `durableIndex` only moves past an entry after a device batch holding that entry's bytes
//    completed its fdatasync. Appends are never reported durable from memory.
//  - Appends that arrive while a batch is in flight go out together in the next batch (group
//    commit): at most one batch is in flight, and it carries everything staged when it left.
//  - Every read verifies the entry's CRC, position, index and term.
// What it must never do: block on the append path (the only blocking calls are in recovery,
// segment roll-over, truncation, retention and close), or trust an unchecked byte.

/// Tunables of a commitlog. Defaults are production values; tests use tiny segments.
public struct CommitlogOptions: Sendable {
    /// Size every segment file is preallocated to. Entries never straddle segments.
    public var segmentSizeBytes: Int = 1 << 30
    /// Largest entry body accepted.
    public var maxEntryBodyBytes: Int = 16 << 20
    /// On a corrupt entry followed by valid ones, cut the log at the corrupt entry instead of
    /// refusing to open. Loses the entries after it on this node; Raft re-replicates them.
    public var repairCorruption: Bool = false
    /// Segments retired by retention that are kept (renamed, not deleted) to become future
    /// segments: reusing written blocks spares zero-filling a new file (docs/storage.md).
    public var recycledSegmentsMax: Int = 4

    public init(segmentSizeBytes: Int = 1 << 30, maxEntryBodyBytes: Int = 16 << 20, repairCorruption: Bool = false, recycledSegmentsMax: Int = 4) {
        self.segmentSizeBytes = segmentSizeBytes
        self.maxEntryBodyBytes = maxEntryBodyBytes
        self.repairCorruption = repairCorruption
        self.recycledSegmentsMax = recycledSegmentsMax
    }
}

/// Counters for benchmarks and metrics.
public struct CommitlogStats: Sendable {
    public var batches = 0
    public var entriesWritten = 0
    public var bytesWritten = 0
    public var segmentsCreated = 0
    public var segmentsRecycled = 0
    /// Segments written as growing files because their zero-filling had not finished.
    public var segmentsUnprepared = 0
}

final class Segment {
    let base: UInt64           // physical position of the file's first byte; also its name
    let path: String
    let file: DeviceFile
    let indexFile: DeviceFile
    var firstIndex: UInt64     // index of its first entry (or of the next entry, when empty)
    var entryCount: Int        // entries, staged ones included
    var writeOffset: Int       // end of its last entry, staged ones included

    init(base: UInt64, path: String, file: DeviceFile, indexFile: DeviceFile, firstIndex: UInt64) {
        self.base = base
        self.path = path
        self.file = file
        self.indexFile = indexFile
        self.firstIndex = firstIndex
        self.entryCount = 0
        self.writeOffset = 0
    }

    var lastIndex: UInt64 { firstIndex + UInt64(entryCount) - 1 }  // firstIndex - 1 when empty
    func contains(_ i: UInt64) -> Bool { i >= firstIndex && i < firstIndex + UInt64(entryCount) }
}

public final class Commitlog {
    public let directory: String
    public let device: any StorageDevice
    public let options: CommitlogOptions
    /// What recovery found and did, one line each (torn tails cut, indexes rebuilt, repairs).
    public internal(set) var recoveryReport: [String] = []
    public private(set) var stats = CommitlogStats()

    var segments: [Segment] = []
    /// Paths of retired segment files waiting to be reused, oldest first.
    var recyclePool: [String] = []
    /// Segments in the log (for benchmarks and metrics).
    public var segmentCount: Int { segments.count }
    var staged = Stage()
    /// Batches at the device, oldest first; at most `maxBatchesInFlight`.
    var inFlight: [Stage] = []
    var spares: [Stage] = []
    /// One batch at a time. Two in flight were faster (storage ratio 0.83-1.00 against 0.73-0.75),
    /// but the device runs them concurrently: a process killed meanwhile (SIGKILL; io_uring
    /// cancels what has not run) can keep the later batch's entries and lose the tail of the
    /// earlier one, a hole followed by valid entries, which recovery must call corruption (it
    /// cannot tell it from damage to durable data). Found by `tern chaos` (seed 101,
    /// docs/chaos.md); `CommitlogTests.oneBatchInFlight` guards it. Within a batch the segment
    /// writes are one linked chain, each durable before the next starts (docs/storage.md), so a
    /// kill leaves a prefix.
    static let maxBatchesInFlight = 1
    var nextBatchID: UInt64 = 1
    var failure: StorageError?
    var checkpointSegmentBase: UInt64?
    /// Segments below this base were dropped from the page cache.
    var cacheKeptFrom: UInt64 = 0

    /// Index of the last entry appended (durable or not); 0 when the log is empty.
    public internal(set) var lastIndex: UInt64 = 0
    /// Every entry up to here is on disk (fdatasync completed). Invariant: durableIndex <= lastIndex.
    public internal(set) var durableIndex: UInt64 = 0

    /// Index of the first entry still in the log (lastIndex + 1 when empty).
    public var firstIndex: UInt64 { segments.first?.firstIndex ?? lastIndex + 1 }
    /// True while a batch is at the device.
    public var isFlushing: Bool { !inFlight.isEmpty }

    /// Opens (creating if needed) the log in `directory` and recovers it: see docs/storage.md.
    /// Throws `.corruption` naming the file and offset when a damaged entry is followed by valid
    /// ones and `options.repairCorruption` is off.
    public init(directory: String, device: any StorageDevice, options: CommitlogOptions = CommitlogOptions()) throws(StorageError) {
        precondition(options.segmentSizeBytes >= 4096 && options.segmentSizeBytes % EntryFormat.alignment == 0,
                     "segment size must be a multiple of 8 and at least 4096")
        self.directory = directory
        self.device = device
        var opts = options
        opts.maxEntryBodyBytes = min(opts.maxEntryBodyBytes, opts.segmentSizeBytes - EntryFormat.headerBytes - EntryFormat.alignment)
        self.options = opts
        try device.createDirectory(directory)
        try recover()
        // An empty log: start zero-filling its first segment now, not at the first append.
        if segments.isEmpty { device.prepareFile(directory + "/" + Commitlog.segmentName(0), bytes: options.segmentSizeBytes) }
    }

    // MARK: Appending

    /// Stages `entries` (indexes must continue `lastIndex`) and, when no batch is in flight, sends
    /// them to the device at once. They are durable when `durableIndex` reaches them, after `pump`
    /// or `handle` processed the batch's completion. Either all entries are staged or none.
    public func append(_ entries: [LogEntry]) throws(StorageError) {
        if let failure { throw StorageError(.failed, "log failed earlier: \(failure)") }
        for e in entries where e.body.count > options.maxEntryBodyBytes {
            throw StorageError(.invalidArgument, "entry \(e.index) body is \(e.body.count) bytes, limit \(options.maxEntryBodyBytes)")
        }
        let before = lastIndex
        let segmentsBefore = segments.count
        do {
            for e in entries { try stage(e) }
        } catch {
            // Undo the partial append: drop staged entries and any segment this call created.
            staged.trim(after: before)
            while segments.count > segmentsBefore, let s = segments.last { dropSegmentFiles(s); segments.removeLast() }
            do {
                try rewindLogicalEnd(to: before)
            } catch let rewind {
                failure = rewind  // cannot tell where the log ends: reopen to find out
            }
            throw error
        }
        try submitIfDue()
    }

    /// Sends the staged batch when the device has room for it (one batch at a time).
    private func submitIfDue() throws(StorageError) {
        if !staged.isEmpty && inFlight.count < Commitlog.maxBatchesInFlight { try submitStaged() }
    }

    private func stage(_ e: LogEntry) throws(StorageError) {
        precondition(e.index == lastIndex + 1 || (segments.isEmpty && lastIndex == 0),
                     "append of index \(e.index) after \(lastIndex): indexes must be contiguous")
        let size = EntryFormat.storedSize(bodyLength: e.body.count)
        var segment: Segment
        if let last = segments.last {
            segment = last
            if segment.writeOffset + size > options.segmentSizeBytes {
                segment = try createSegment(base: segment.base + UInt64(options.segmentSizeBytes), firstIndex: e.index)
            }
        } else {
            segment = try createSegment(base: 0, firstIndex: e.index)
        }
        if segment.entryCount == 0 { segment.firstIndex = e.index }
        let position = segment.base + UInt64(segment.writeOffset)
        let dataOffset = staged.data.reserve(size)
        EntryFormat.encode(e, position: position, into: UnsafeMutableRawBufferPointer(start: staged.data.base + dataOffset, count: size))
        let indexOffset = staged.index.reserve(IndexRecord.bytes)
        IndexRecord(position: position, term: e.term, storedSize: UInt32(size)).encode(into: staged.index.base + indexOffset)
        staged.add(Stage.Entry(
            index: e.index, term: e.term, position: position, storedSize: size,
            dataFile: segment.file, dataFileOffset: segment.writeOffset, dataArenaOffset: dataOffset,
            indexFile: segment.indexFile, indexFileOffset: segment.entryCount * IndexRecord.bytes, indexArenaOffset: indexOffset))
        segment.writeOffset += size
        segment.entryCount += 1
        lastIndex = e.index
    }

    private func submitStaged() throws(StorageError) {
        precondition(inFlight.count < Commitlog.maxBatchesInFlight, "too many batches in flight")
        guard !staged.isEmpty else { return }
        let id = nextBatchID
        nextBatchID += 1
        staged.batchID = id
        let batch = staged.makeBatch(id: id, segmentSizeBytes: options.segmentSizeBytes)
        do {
            try device.submit(batch)
        } catch {
            failure = error
            throw error
        }
        stats.batches += 1
        stats.entriesWritten += staged.entries.count
        stats.bytesWritten += staged.data.count
        staged.completed = false
        inFlight.append(staged)
        staged = spares.popLast() ?? Stage()
    }

    // MARK: Completions

    /// Reaps the device (blocking for one completion when `wait` and a batch is in flight),
    /// processes what finished, and returns `durableIndex`.
    @discardableResult
    public func pump(wait: Bool) throws(StorageError) -> UInt64 {
        guard !inFlight.isEmpty else { return durableIndex }
        for completion in try device.reap(wait: wait) { try handle(completion) }
        return durableIndex
    }

    /// Processes one completion of a batch this log submitted: advances `durableIndex` over
    /// every batch completed in order (a batch's fdatasync covers its own writes only, so a later
    /// batch finishing first proves nothing about an earlier one) and sends what is staged.
    /// A failed batch fails the log: nothing after the last successful sync can be trusted until
    /// the log is reopened (recovery reads what really is on disk).
    public func handle(_ completion: BatchCompletion) throws(StorageError) {
        guard let flight = inFlight.first(where: { $0.batchID == completion.id }) else {
            preconditionFailure("completion for batch \(completion.id), which this log does not have in flight")
        }
        flight.completed = true
        if let error = completion.error {
            // The log now ends at the last durable entry: the failed batch, the ones after it and
            // what was staged are forgotten in memory (reads stop there too). Their files stay as
            // they are; the reopen's recovery decides what of them is really on disk.
            failure = error
            while inFlight.contains(where: { !$0.completed }) {
                for other in (try? device.reap(wait: true)) ?? [] {
                    inFlight.first(where: { $0.batchID == other.id })?.completed = true
                }
            }
            for stage in inFlight { stage.reset(); spares.append(stage) }
            inFlight.removeAll()
            staged.trim(after: durableIndex)
            while segments.count > 1, let last = segments.last, last.firstIndex > durableIndex {
                device.closeFile(last.file)
                device.closeFile(last.indexFile)
                segments.removeLast()
            }
            try? rewindLogicalEnd(to: durableIndex)  // the log is failed either way; reopen decides
            throw error
        }
        while let first = inFlight.first, first.completed {
            inFlight.removeFirst()
            if let last = first.lastIndex { durableIndex = max(durableIndex, last) }
            first.reset()
            spares.append(first)
        }
        try checkpointIfSegmentChanged()
        try submitIfDue()
    }

    /// Blocks until nothing is in flight and nothing is staged.
    public func flush() throws(StorageError) {
        if let failure { throw StorageError(.failed, "log failed earlier: \(failure)") }
        while !staged.isEmpty || !inFlight.isEmpty {
            if !staged.isEmpty && inFlight.count < Commitlog.maxBatchesInFlight {
                try submitStaged()
            } else {
                try pump(wait: true)
            }
        }
    }

    // MARK: Reading

    /// Entries from `index` on, as many as fit in `maxBytes` of stored size but at least one,
    /// none when `index` is past the end. Throws `.invalidArgument` below `firstIndex` and
    /// `.corruption` when a checksum does not hold.
    public func read(from index: UInt64, maxBytes: Int) throws(StorageError) -> [LogEntry] {
        guard index <= lastIndex else { return [] }
        guard index >= firstIndex else {
            throw StorageError(.invalidArgument, "index \(index) is before the first index \(firstIndex) (compacted)")
        }
        var out: [LogEntry] = []
        var used = 0
        var i = index
        while i <= lastIndex {
            if let (stage, e) = memoryEntry(i) {
                if !out.isEmpty && used + e.storedSize > maxBytes { break }
                let bytes = stage.data.bytes(at: e.dataArenaOffset, count: e.storedSize)
                guard let h = EntryFormat.verify(bytes, expectedPosition: e.position) else {
                    preconditionFailure("staged entry \(i) fails its own checksum")
                }
                out.append(EntryFormat.decode(bytes, header: h))
                used += e.storedSize
                i += 1
                continue
            }
            let segment = try segmentContaining(i)
            let upTo = min(segment.lastIndex, lastDurableOrWrittenIndex(), i + 255)
            let records = try readIndexRecords(segment, from: i, through: upTo)
            var take = 0
            var bytes = 0
            for r in records {
                if (take > 0 || !out.isEmpty) && used + bytes + Int(r.storedSize) > maxBytes { break }
                bytes += Int(r.storedSize)
                take += 1
            }
            if take == 0 { break }
            let start = records[0].position
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 8)
            defer { buffer.deallocate() }
            let got = try device.read(segment.file, at: Int(start - segment.base), into: buffer)
            var at = 0
            for (k, r) in records.prefix(take).enumerated() {
                let idx = i + UInt64(k)
                guard got >= at + Int(r.storedSize),
                      let h = EntryFormat.verify(UnsafeRawBufferPointer(rebasing: buffer[at..<(at + Int(r.storedSize))]), expectedPosition: r.position),
                      h.index == idx, h.term == r.term, h.storedSize == Int(r.storedSize)
                else {
                    throw StorageError(.corruption, "entry \(idx) in \(segment.path) at offset \(r.position - segment.base) fails its checksum or does not match the index")
                }
                out.append(EntryFormat.decode(UnsafeRawBufferPointer(rebasing: buffer[at...]), header: h))
                at += Int(r.storedSize)
            }
            used += bytes
            i += UInt64(take)
            if used >= maxBytes { break }
        }
        return out
    }

    /// Term of the entry at `index`, or nil when no such entry is in the log.
    public func term(at index: UInt64) throws(StorageError) -> UInt64? {
        guard index >= firstIndex, index <= lastIndex else { return nil }
        if let (_, e) = memoryEntry(index) { return e.term }
        let segment = try segmentContaining(index)
        return try readIndexRecords(segment, from: index, through: index)[0].term
    }

    /// Term of the last entry, 0 for an empty log.
    public func lastTerm() throws(StorageError) -> UInt64 { try term(at: lastIndex) ?? 0 }

    /// The staged or in-flight copy of entry `i`, and its stage.
    private func memoryEntry(_ i: UInt64) -> (Stage, Stage.Entry)? {
        if let e = staged.entry(at: i) { return (staged, e) }
        for stage in inFlight { if let e = stage.entry(at: i) { return (stage, e) } }
        return nil
    }

    /// Entries below the staged and in-flight ones are written (their batch completed).
    private func lastDurableOrWrittenIndex() -> UInt64 {
        if let f = inFlight.first?.firstIndex { return f - 1 }
        if let s = staged.firstIndex { return s - 1 }
        return lastIndex
    }

    func segmentContaining(_ i: UInt64) throws(StorageError) -> Segment {
        var lo = 0, hi = segments.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if segments[mid].firstIndex <= i { lo = mid } else { hi = mid - 1 }
        }
        guard !segments.isEmpty, segments[lo].contains(i) else {
            throw StorageError(.invalidArgument, "no segment holds index \(i)")
        }
        return segments[lo]
    }

    func readIndexRecords(_ s: Segment, from: UInt64, through: UInt64) throws(StorageError) -> [IndexRecord] {
        precondition(from <= through && s.contains(from) && s.contains(through), "index record range outside segment")
        let count = Int(through - from + 1)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count * IndexRecord.bytes, alignment: 8)
        defer { buffer.deallocate() }
        let offset = Int(from - s.firstIndex) * IndexRecord.bytes
        let got = try device.read(s.indexFile, at: offset, into: buffer)
        var records: [IndexRecord] = []
        records.reserveCapacity(count)
        for k in 0..<count {
            let slice = UnsafeRawBufferPointer(rebasing: buffer[(k * IndexRecord.bytes)..<min(got, (k + 1) * IndexRecord.bytes)])
            guard let r = IndexRecord.decode(slice) else {
                throw StorageError(.corruption, "index record for entry \(from + UInt64(k)) of \(s.path) is missing or damaged")
            }
            records.append(r)
        }
        return records
    }

    // MARK: Truncation and retention

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

    /// Puts segment bookkeeping back to "the log ends at `index`". Reads the entry's index record
    /// when it is not in memory, so it can fail like any read (a damaged record).
    private func rewindLogicalEnd(to index: UInt64) throws(StorageError) {
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

    // MARK: Segments and checkpoints

    static func segmentName(_ base: UInt64) -> String {
        let digits = String(base)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// Opens the segment at `base`, zero-filled and synced, then starts preparing the one after it
    /// in the background, so a roll-over normally finds its file ready.
    private func createSegment(base: UInt64, firstIndex: UInt64) throws(StorageError) -> Segment {
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
    private func checkpointIfSegmentChanged() throws(StorageError) {
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

    static let checkpointMagic: UInt32 = 0x504B_4354  // "TCKP"

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
            return (UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                    UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
        }
    }

    // MARK: Closing

    /// Writes out what is staged, waits for it, records a checkpoint and closes the files. The
    /// device stays open (its owner shuts it down).
    public func close() throws(StorageError) {
        if failure == nil {
            try flush()
            if !segments.isEmpty { writeCheckpointIfPossible() }
        } else {
            while !inFlight.isEmpty { _ = try? pump(wait: true) }
        }
        for s in segments {
            device.closeFile(s.file)
            device.closeFile(s.indexFile)
        }
        segments.removeAll()
    }
}
