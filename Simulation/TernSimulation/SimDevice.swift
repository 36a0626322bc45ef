// A simulated disk behind the real StorageDevice interface, so the real commitlog runs on it.
//
// Model: every file has `data` (what reads see: the page cache) and `durable` (what survives a
// crash). A write batch lands in `data` when submitted and is remembered as pending; its
// completion, scheduled by the world after a drawn fsync latency, makes the synced files'
// `data` durable. A crash throws away what is not durable, except that a torn prefix of the
// pending writes (in order, cut at a 512-byte sector) may reach the disk: the prefix model that
// docs/storage.md states. Metadata operations (create, rename, remove, truncate) are durable at
// once: a simplification (real file systems journal them, and the commitlog syncs the directory
// after each).
import TernStorage

final class SimFile {
    var data: [UInt8] = []
    var durable: [UInt8] = []
    /// Writes since the last sync of this file, oldest first: (offset, bytes).
    var pending: [(Int, [UInt8])] = []
}

public final class SimDevice: StorageDevice {
    public let backendName = "simulated"
    var files: [String: SimFile] = [:]
    var handles: [Int32: String] = [:]
    var nextHandle: Int32 = 3
    var inFlight: [WriteBatch] = []
    var completed: [BatchCompletion] = []
    var prepared: [String: Int] = [:]
    /// Called on submit with the batch id; the world returns when it will complete.
    var schedule: (UInt64) -> Void = { _ in }
    /// Bit flips on read: the world sets a probability; `random` draws from the world's seed.
    var readFlipProbability = 0.0
    var random: () -> Double = { 1 }
    public internal(set) var flipsInjected = 0
    /// While set, every write that needs space fails with ENOSPC (a full disk).
    var full = false
    var noSpaceInjected = 0
    var failedBatches: Set<UInt64> = []

    private func checkSpace(_ what: String) throws(StorageError) {
        if full {
            noSpaceInjected += 1
            throw StorageError(.noSpace, "\(what): No space left on device (simulated)", errno: 28)
        }
    }

    public init() {}

    private func file(_ f: DeviceFile) -> SimFile {
        guard let path = handles[f.handle], let file = files[path] else { preconditionFailure("unknown \(f)") }
        return file
    }

    public func openFile(_ path: String, create: Bool) throws(StorageError) -> DeviceFile {
        if files[path] == nil {
            guard create else { throw StorageError(.invalidArgument, "open \(path): no such file", errno: 2) }
            files[path] = SimFile()
        }
        let h = nextHandle
        nextHandle += 1
        handles[h] = path
        return DeviceFile(handle: h)
    }

    public func closeFile(_ f: DeviceFile) { handles[f.handle] = nil }

    public func fileSize(_ f: DeviceFile) throws(StorageError) -> Int { file(f).data.count }

    private static func resize(_ bytes: inout [UInt8], _ size: Int) {
        if bytes.count < size { bytes.append(contentsOf: repeatElement(0, count: size - bytes.count)) } else { bytes.removeLast(bytes.count - size) }
    }

    public func preallocate(_ f: DeviceFile, bytes: Int) throws(StorageError) {
        let s = file(f)
        if s.data.count < bytes { SimDevice.resize(&s.data, bytes) }
        if s.durable.count < bytes { SimDevice.resize(&s.durable, bytes) }
    }

    public func truncate(_ f: DeviceFile, bytes: Int) throws(StorageError) {
        traceHook?("truncate \(handles[f.handle] ?? "?") to \(bytes)")
        let s = file(f)
        SimDevice.resize(&s.data, bytes)
        SimDevice.resize(&s.durable, bytes)
        s.pending.removeAll { $0.0 >= bytes }
    }

    public func read(_ f: DeviceFile, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int {
        let s = file(f)
        guard offset < s.data.count else { return 0 }
        let n = min(buffer.count, s.data.count - offset)
        s.data.withUnsafeBytes { src in buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n) }
        if n > 0 && readFlipProbability > 0 && random() < readFlipProbability {
            let at = Int(random() * Double(n * 8))
            buffer[at / 8] ^= UInt8(1 << (at % 8))
            flipsInjected += 1
        }
        return n
    }

    public func writeNow(_ f: DeviceFile, at offset: Int, bytes: UnsafeRawBufferPointer) throws(StorageError) {
        if offset + bytes.count > file(f).data.count { try checkSpace("write \(handles[f.handle] ?? "?")") }
        traceHook?("writeNow \(handles[f.handle] ?? "?") at \(offset) len \(bytes.count)")
        write(file(f), at: offset, Array(bytes))
    }

    private func write(_ s: SimFile, at offset: Int, _ bytes: [UInt8]) {
        if s.data.count < offset + bytes.count { SimDevice.resize(&s.data, offset + bytes.count) }
        s.data.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        s.pending.append((offset, bytes))
    }

    public func syncNow(_ f: DeviceFile) throws(StorageError) { sync(file(f)) }

    private func sync(_ s: SimFile) {
        s.durable = s.data
        s.pending.removeAll()
    }

    public func fileExists(_ path: String) -> Bool { files[path] != nil }

    public func listDirectory(_ path: String) throws(StorageError) -> [String] {
        let prefix = path + "/"
        return files.keys.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
            .map { String($0.dropFirst(prefix.count)) }.sorted()
    }

    public func createDirectory(_ path: String) throws(StorageError) {}

    public func removeFile(_ path: String) throws(StorageError) {
        if files[path] != nil { traceHook?("remove \(path)") }
        files[path] = nil
    }

    public func renameFile(_ from: String, to: String) throws(StorageError) {
        guard let f = files[from] else { throw StorageError(.invalidArgument, "rename \(from): no such file", errno: 2) }
        files[to] = f
        files[from] = nil
        for (h, p) in handles where p == from { handles[h] = to }
    }

    public func syncDirectory(_ path: String) throws(StorageError) {}

    public func prepareFile(_ path: String, bytes: Int) {
        guard prepared[path] == nil else { return }
        let f = SimFile()
        f.data = [UInt8](repeating: 0, count: bytes)
        f.durable = f.data
        files[path + ".prep"] = f
        prepared[path] = bytes
    }

    public func openPreparedFile(_ path: String) throws(StorageError) -> DeviceFile? {
        guard let bytes = prepared.removeValue(forKey: path) else { return nil }
        if full {
            files[path + ".prep"] = nil
            try checkSpace("prepare \(path)")
        }
        if files[path + ".prep"] == nil {
            // Removed by a recovery of the same directory meanwhile: make it again.
            let f = SimFile()
            f.data = [UInt8](repeating: 0, count: bytes)
            f.durable = f.data
            files[path + ".prep"] = f
        }
        try renameFile(path + ".prep", to: path)
        return try openFile(path, create: false)
    }

    /// Which segments' preparations are still running when the log rolls over to them (the
    /// commitlog then writes those as growing files). A function of the path, not a draw from the
    /// world's random stream, so that it leaves every other choice of a seed as it was.
    var preparationLags: (String) -> Bool = { _ in false }

    public func preparationFinished(_ path: String) -> Bool {
        prepared[path] == nil || !preparationLags(path)
    }

    public func movePreparation(_ path: String, to newPath: String) {
        guard prepared[newPath] == nil, let bytes = prepared.removeValue(forKey: path) else { return }
        prepared[newPath] = bytes
        if let f = files.removeValue(forKey: path + ".prep") { files[newPath + ".prep"] = f }
    }

    public func waitForBackgroundWork() {}
    /// The simulator delivers completions as events; nothing to wait on.
    public var completionDescriptor: Int32 { -1 }
    /// No page cache to drop: a simulated crash decides what survives.
    public func dropCachedPages(_ file: DeviceFile) {}

    var traceHook: ((String) -> Void)?

    public func submit(_ batch: WriteBatch) throws(StorageError) {
        if full && batch.writes.contains(where: { $0.offset + $0.byteCount > file($0.file).data.count }) {
            // The page cache takes the bytes; allocation fails at writeback: the batch fails.
            noSpaceInjected += 1
            failedBatches.insert(batch.id)
        }
        for w in batch.writes {
            var bytes: [UInt8] = []
            for piece in w.pieces { bytes.append(contentsOf: piece) }
            traceHook?("batch \(batch.id) write \(handles[w.file.handle] ?? "?") at \(w.offset) len \(bytes.count)")
            write(file(w.file), at: w.offset, bytes)
        }
        inFlight.append(batch)
        schedule(batch.id)
    }

    /// The world's event: batch `id` finished. Its synced files become durable.
    func complete(_ id: UInt64) {
        guard let k = inFlight.firstIndex(where: { $0.id == id }) else { return }
        let batch = inFlight.remove(at: k)
        if failedBatches.remove(id) != nil {
            completed.append(BatchCompletion(id: id, error: StorageError(.noSpace, "batch \(id): No space left on device (simulated)", errno: 28)))
            return
        }
        for f in batch.syncFiles where handles[f.handle] != nil { sync(file(f)) }
        completed.append(BatchCompletion(id: id, error: nil))
    }

    public func reap(wait: Bool) throws(StorageError) -> [BatchCompletion] {
        if wait && completed.isEmpty {
            // The caller blocks until the disk finishes: in simulation, finish it now.
            if let first = inFlight.first { complete(first.id) }
        }
        let done = completed
        completed.removeAll()
        return done
    }

    public var batchesInFlight: Int { inFlight.count + completed.count }

    public func shutdown() {}

    /// A power loss: unsynced data is lost, except a torn prefix of the pending writes.
    /// `tear` draws how many pending writes (and sectors of the last) reach the disk.
    func crash(tear: (Int) -> Int) {
        for path in files.keys.sorted() {
            let f = files[path]!
            var durable = f.durable
            let sectors = f.pending.map { ($0.1.count + 511) / 512 }
            let total = sectors.reduce(0, +)
            var keep = total > 0 ? tear(total + 1) : 0  // sectors that made it, in write order
            for (offset, bytes) in f.pending where keep > 0 {
                let n = min(bytes.count, keep * 512)
                if durable.count < offset + n { SimDevice.resize(&durable, offset + n) }
                durable.replaceSubrange(offset..<(offset + n), with: bytes[0..<n])
                keep -= (n + 511) / 512
            }
            f.durable = durable
            f.data = durable
            f.pending.removeAll()
        }
        handles.removeAll()
        inFlight.removeAll()
        completed.removeAll()
        prepared.removeAll()
        failedBatches.removeAll()
    }

    /// The disk is replaced: every file is gone.
    func wipe() {
        files.removeAll()
        handles.removeAll()
        inFlight.removeAll()
        completed.removeAll()
        prepared.removeAll()
    }
}
