// Reading the commitlog: entries and terms by index, from memory while their batch is staged or
// in flight, else from the segment files through their index files, every entry verified.

extension Commitlog {
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
                    throw StorageError(
                        .corruption, "entry \(idx) in \(segment.path) at offset \(r.position - segment.base) fails its checksum or does not match the index")
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
    func memoryEntry(_ i: UInt64) -> (Stage, Stage.Entry)? {
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
}
