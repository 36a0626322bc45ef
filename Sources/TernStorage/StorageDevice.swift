// The storage device interface: everything the commitlog does to files goes through it, so the
// simulator can substitute a device with a simulated page cache, torn writes and crashes.
//
// Two kinds of operation:
//  - Writes that must become durable go out as a `WriteBatch` (vectored writes to one or more
//    files, then fdatasync of some files). `submit` returns at once; the outcome comes back later
//    from `reap` as a `BatchCompletion`. The caller keeps the batch's memory alive until then.
//  - Everything else (open, read, size, preallocate, truncate, rename, directory sync and the rare
//    synchronous write) completes before returning. These are metadata or recovery operations,
//    off the append path, and a simulated device can make them instant.

/// A file opened on a device. For the real devices this is the file descriptor.
public struct DeviceFile: Hashable, Sendable, CustomStringConvertible {
    public let handle: Int32
    public init(handle: Int32) { self.handle = handle }
    public var description: String { "file#\(handle)" }
}

/// One vectored write at an absolute offset. The pieces are written back to back.
public struct BatchWrite: @unchecked Sendable {
    public var file: DeviceFile
    public var offset: Int
    public var pieces: [UnsafeRawBufferPointer]

    public init(file: DeviceFile, offset: Int, pieces: [UnsafeRawBufferPointer]) {
        self.file = file
        self.offset = offset
        self.pieces = pieces
    }

    public var byteCount: Int { pieces.reduce(0) { $0 + $1.count } }
}

/// Writes, then an fdatasync of each file in `syncFiles`, ordered so that no sync starts before
/// every write has finished. Complete when the last sync returned.
public struct WriteBatch: @unchecked Sendable {
    public var id: UInt64
    public var writes: [BatchWrite]
    public var syncFiles: [DeviceFile]

    public init(id: UInt64, writes: [BatchWrite], syncFiles: [DeviceFile]) {
        self.id = id
        self.writes = writes
        self.syncFiles = syncFiles
    }
}

/// The outcome of a submitted batch.
public struct BatchCompletion: Sendable {
    public var id: UInt64
    /// nil when every write and sync succeeded.
    public var error: StorageError?
    public init(id: UInt64, error: StorageError?) {
        self.id = id
        self.error = error
    }
}

/// A device the commitlog can live on. Not thread-safe: one owner drives it.
public protocol StorageDevice: AnyObject {
    /// "io_uring", "posix" or "simulated": what `--io` resolved to.
    var backendName: String { get }

    func openFile(_ path: String, create: Bool) throws(StorageError) -> DeviceFile
    func closeFile(_ file: DeviceFile)
    func fileSize(_ file: DeviceFile) throws(StorageError) -> Int
    /// Reserves `bytes` for the file (fallocate), so later writes below that size change no size.
    func preallocate(_ file: DeviceFile, bytes: Int) throws(StorageError)
    func truncate(_ file: DeviceFile, bytes: Int) throws(StorageError)
    /// Reads up to `buffer.count` bytes at `offset`; returns how many were read (short at EOF).
    func read(_ file: DeviceFile, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int
    /// Writes synchronously (not durable until `syncNow`). For recovery and metadata only.
    func writeNow(_ file: DeviceFile, at offset: Int, bytes: UnsafeRawBufferPointer) throws(StorageError)
    /// fdatasync, blocking. For metadata changes (truncation, checkpoints), not the append path.
    func syncNow(_ file: DeviceFile) throws(StorageError)

    func fileExists(_ path: String) -> Bool
    func listDirectory(_ path: String) throws(StorageError) -> [String]
    func createDirectory(_ path: String) throws(StorageError)
    func removeFile(_ path: String) throws(StorageError)
    func renameFile(_ from: String, to: String) throws(StorageError)
    /// Makes creations, removals and renames in the directory durable.
    func syncDirectory(_ path: String) throws(StorageError)

    /// Starts making `path` a file of `bytes` zeros, synced, in the background. Zeros actually
    /// written, not fallocate: on ext4 a write into a fallocated (unwritten) extent makes the next
    /// fdatasync journal the extent conversion, about 5x slower than overwriting (docs/storage.md).
    func prepareFile(_ path: String, bytes: Int)
    /// Opens a file `prepareFile` made, waiting for it if needed; nil when none was started for `path`.
    func openPreparedFile(_ path: String) throws(StorageError) -> DeviceFile?

    /// Whether `openPreparedFile(path)` would return without waiting: no preparation was started
    /// for `path`, or it has finished.
    func preparationFinished(_ path: String) -> Bool
    /// Hands a preparation started for `path` to `newPath` (when `newPath` has none): opening
    /// `newPath` then takes its file. For when appends overtake the zero-filling.
    func movePreparation(_ path: String, to newPath: String)

    /// Waits until background preparations finished (benchmarks call it before timing).
    func waitForBackgroundWork()

    /// A descriptor that becomes readable when a batch may have finished (an eventfd), so that
    /// the owner can wait for disk completions and other work at once (the server's event loop
    /// reads it, which resets it, then reaps); -1 when the device has none (the owner then
    /// waits in `reap`).
    var completionDescriptor: Int32 { get }

    /// Asks the kernel to drop the file's cached pages (they are clean: written and synced).
    func dropCachedPages(_ file: DeviceFile)

    /// Starts a batch. Its memory must stay valid until `reap` reports it.
    func submit(_ batch: WriteBatch) throws(StorageError)
    /// Returns finished batches. With `wait`, blocks until at least one finished, unless none is in flight.
    func reap(wait: Bool) throws(StorageError) -> [BatchCompletion]
    /// Batches submitted and not yet returned by `reap`.
    var batchesInFlight: Int { get }
    /// Waits for every batch in flight and stops background work.
    func shutdown()
}

extension StorageDevice {
    /// `writeNow` for a byte array (the closure-based `withUnsafeBytes` does not carry typed throws).
    public func writeNow(_ file: DeviceFile, at offset: Int, array: [UInt8]) throws(StorageError) {
        var failure: StorageError?
        array.withUnsafeBytes { bytes in
            do throws(StorageError) { try writeNow(file, at: offset, bytes: bytes) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Reads up to `count` bytes at `offset` into a new array (shorter at end of file).
    public func read(_ file: DeviceFile, at offset: Int, count: Int) throws(StorageError) -> [UInt8] {
        var failure: StorageError?
        var bytes = [UInt8](repeating: 0, count: count)
        let got = bytes.withUnsafeMutableBytes { buffer -> Int in
            do throws(StorageError) { return try read(file, at: offset, into: buffer) } catch { failure = error; return 0 }
        }
        if let failure { throw failure }
        bytes.removeLast(count - got)
        return bytes
    }
}
