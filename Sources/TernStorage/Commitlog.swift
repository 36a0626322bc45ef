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
//
// This file holds the log's state, opening it, appending and batch completions; reading is in
// CommitlogReading.swift, truncation, retention, segments and checkpoints in CommitlogSegments.swift.

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
    let base: UInt64  // physical position of the file's first byte; also its name
    let path: String
    let file: DeviceFile
    let indexFile: DeviceFile
    var firstIndex: UInt64  // index of its first entry (or of the next entry, when empty)
    var entryCount: Int  // entries, staged ones included
    var writeOffset: Int  // end of its last entry, staged ones included

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
    public internal(set) var stats = CommitlogStats()

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
    static let checkpointMagic: UInt32 = 0x504B_4354  // "TCKP"

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
        precondition(
            options.segmentSizeBytes >= 4096 && options.segmentSizeBytes % EntryFormat.alignment == 0,
            "segment size must be a multiple of 8 and at least 4096")
        self.directory = directory
        self.device = device
        var opts = options
        opts.maxEntryBodyBytes = min(opts.maxEntryBodyBytes, opts.segmentSizeBytes - EntryFormat.headerBytes - EntryFormat.alignment)
        self.options = opts
        try device.createDirectory(directory)
        do {
            try recover()
        } catch {
            // The segments opened before recovery gave up: their descriptors are not leaked
            // (the fuzzer's recovery target ran out of them; Fuzz/corpus/recovery).
            for s in segments {
                device.closeFile(s.file)
                device.closeFile(s.indexFile)
            }
            segments.removeAll()
            throw error
        }
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
        precondition(
            e.index == lastIndex + 1 || (segments.isEmpty && lastIndex == 0),
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
        staged.add(
            Stage.Entry(
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

    // MARK: Closing

    /// Writes out what is staged, waits for it, records a checkpoint and closes the files. The
    /// device stays open (its owner shuts it down).
    public func close() throws(StorageError) {
        defer {
            for s in segments {
                device.closeFile(s.file)
                device.closeFile(s.indexFile)
            }
            segments.removeAll()
        }
        if failure == nil {
            try flush()
            if !segments.isEmpty { writeCheckpointIfPossible() }
        } else {
            while !inFlight.isEmpty { _ = try? pump(wait: true) }
        }
    }
}
