// A fault hook for chaos tests on real processes: wraps a device and, as a control file says,
// makes batches slow (the completion waits, as a slow fsync does) or fails them with ENOSPC
// (a full disk), or reports every segment preparation unfinished (the log then writes growing
// files). Only `tern serve --fault-file PATH` installs it; without that flag no node has it. The
// file holds one line: empty (no fault), "slow MS", "full" or "unprepared". It is read at most
// every 100 ms, when it changed.
#if canImport(Glibc)
    import Glibc
#endif

public final class FaultHookDevice: StorageDevice {
    let inner: any StorageDevice
    let controlPath: String
    private var lastCheck: UInt64 = 0
    private var lastModified: (Int, Int) = (-1, -1)
    private var slowMillis: UInt32 = 0
    private var full = false
    private var unprepared = false

    public init(_ inner: any StorageDevice, controlPath: String) {
        self.inner = inner
        self.controlPath = controlPath
    }

    public var backendName: String { inner.backendName + " (with fault hook \(controlPath))" }

    private func refresh() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let now = UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
        guard now >= lastCheck + 100 else { return }
        lastCheck = now
        var st = stat()
        guard stat(controlPath, &st) == 0 else {
            slowMillis = 0
            full = false
            unprepared = false
            return
        }
        let modified = (Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec))
        guard modified != lastModified else { return }
        lastModified = modified
        guard let f = fopen(controlPath, "r") else { return }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 64)
        let line = fgets(&buffer, 64, f) != nil ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\n" })
        full = words.first == "full"
        unprepared = words.first == "unprepared"
        slowMillis = words.first == "slow" && words.count > 1 ? UInt32(words[1]) ?? 0 : 0
    }

    public func submit(_ batch: WriteBatch) throws(StorageError) {
        refresh()
        if full { throw StorageError(.noSpace, "write batch: no space left on device (fault hook)") }
        try inner.submit(batch)
    }

    public func reap(wait: Bool) throws(StorageError) -> [BatchCompletion] {
        let done = try inner.reap(wait: wait)
        refresh()
        if !done.isEmpty && slowMillis > 0 { usleep(slowMillis * 1000) }
        return done
    }

    public func openFile(_ path: String, create: Bool) throws(StorageError) -> DeviceFile { try inner.openFile(path, create: create) }
    public func closeFile(_ file: DeviceFile) { inner.closeFile(file) }
    public func fileSize(_ file: DeviceFile) throws(StorageError) -> Int { try inner.fileSize(file) }
    public func preallocate(_ file: DeviceFile, bytes: Int) throws(StorageError) {
        refresh()
        if full { throw StorageError(.noSpace, "preallocate: no space left on device (fault hook)") }
        try inner.preallocate(file, bytes: bytes)
    }
    public func truncate(_ file: DeviceFile, bytes: Int) throws(StorageError) { try inner.truncate(file, bytes: bytes) }
    public func read(_ file: DeviceFile, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int {
        try inner.read(file, at: offset, into: buffer)
    }
    public func writeNow(_ file: DeviceFile, at offset: Int, bytes: UnsafeRawBufferPointer) throws(StorageError) {
        try inner.writeNow(file, at: offset, bytes: bytes)
    }
    public func syncNow(_ file: DeviceFile) throws(StorageError) { try inner.syncNow(file) }
    public func fileExists(_ path: String) -> Bool { inner.fileExists(path) }
    public func listDirectory(_ path: String) throws(StorageError) -> [String] { try inner.listDirectory(path) }
    public func createDirectory(_ path: String) throws(StorageError) { try inner.createDirectory(path) }
    public func removeFile(_ path: String) throws(StorageError) { try inner.removeFile(path) }
    public func renameFile(_ from: String, to: String) throws(StorageError) { try inner.renameFile(from, to: to) }
    public func syncDirectory(_ path: String) throws(StorageError) { try inner.syncDirectory(path) }
    public func prepareFile(_ path: String, bytes: Int) { inner.prepareFile(path, bytes: bytes) }
    public func openPreparedFile(_ path: String) throws(StorageError) -> DeviceFile? { try inner.openPreparedFile(path) }
    public func preparationFinished(_ path: String) -> Bool {
        refresh()
        return !unprepared && inner.preparationFinished(path)
    }
    public func movePreparation(_ path: String, to newPath: String) { inner.movePreparation(path, to: newPath) }
    public func waitForBackgroundWork() { inner.waitForBackgroundWork() }
    public var batchesInFlight: Int { inner.batchesInFlight }
    public var completionDescriptor: Int32 { inner.completionDescriptor }
    public func dropCachedPages(_ file: DeviceFile) { inner.dropCachedPages(file) }
    public func shutdown() { inner.shutdown() }
}
