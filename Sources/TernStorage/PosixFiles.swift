import CTernIO
import Foundation

// File operations shared by the two real devices (io_uring and POSIX). Both use ordinary file
// descriptors; they differ only in how a WriteBatch reaches the disk.
#if canImport(Glibc)
    import Glibc
#endif

/// Synchronous POSIX file operations, with EINTR retried and every other errno mapped to StorageError.
public class PosixFiles {
    public init() {}

    /// Background preparations by final path. Each runs on its own short-lived thread: one per
    /// segment, so about one a second at full speed with 1 GiB segments.
    private var preparations: [String: Preparation] = [:]

    private final class Preparation: @unchecked Sendable {
        let bytes: Int
        /// Where the zeros are written; renamed to the segment's name when opened.
        let temporary: String
        init(bytes: Int, temporary: String) {
            self.bytes = bytes
            self.temporary = temporary
        }
        let condition = NSCondition()
        var done = false  // guarded by condition
        var error: StorageError?  // guarded by condition
    }

    public func prepareFile(_ path: String, bytes: Int) {
        guard preparations[path] == nil else { return }
        let preparation = Preparation(bytes: bytes, temporary: path + ".prep")
        preparations[path] = preparation
        let thread = Thread {
            let error = PosixFiles.writeZeroFile(preparation.temporary, bytes: bytes)
            preparation.condition.lock()
            preparation.done = true
            preparation.error = error
            preparation.condition.broadcast()
            preparation.condition.unlock()
        }
        thread.name = "tern-segment-prep"
        thread.start()
    }

    public func openPreparedFile(_ path: String) throws(StorageError) -> DeviceFile? {
        guard let preparation = preparations.removeValue(forKey: path) else { return nil }
        preparation.condition.lock()
        while !preparation.done { preparation.condition.wait() }
        let error = preparation.error
        preparation.condition.unlock()
        if let error {
            try? removeFile(preparation.temporary)
            throw error
        }
        if !fileExists(preparation.temporary) {
            // Removed while it was being made (recovery of the same directory in this process
            // clears leftovers): make it again, here.
            if let error = PosixFiles.writeZeroFile(preparation.temporary, bytes: preparation.bytes) { throw error }
        }
        try renameFile(preparation.temporary, to: path)
        return try openFile(path, create: false)
    }

    public func preparationFinished(_ path: String) -> Bool {
        guard let preparation = preparations[path] else { return true }
        preparation.condition.lock()
        defer { preparation.condition.unlock() }
        return preparation.done
    }

    public func movePreparation(_ path: String, to newPath: String) {
        guard preparations[newPath] == nil, let preparation = preparations.removeValue(forKey: path) else { return }
        preparations[newPath] = preparation
    }

    /// Waits for every background preparation to end. Files prepared and never opened stay as
    /// `*.prep`; the next recovery of their directory removes them.
    func waitForPreparations() {
        waitForBackgroundWork()
        preparations.removeAll()
    }

    public func waitForBackgroundWork() {
        for (_, preparation) in preparations {
            preparation.condition.lock()
            while !preparation.done { preparation.condition.wait() }
            preparation.condition.unlock()
        }
    }

    /// Creates `path` holding `bytes` zeros, fdatasync'ed. Runs off the owner's thread.
    /// The zeros go out with O_DIRECT where the file system allows it: through the page cache
    /// they cost more CPU than the log's own writes (perf: 40% of both cores in the kernel's
    /// page-cache copy at 100 MB/s of batched sends, docs/benchmarks.md). A tail that is not a
    /// whole number of 4 KiB blocks is written through the page cache.
    static func writeZeroFile(_ path: String, bytes: Int) -> StorageError? {
        let direct = tern_open_direct(path)
        let fd = direct >= 0 ? direct : open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o644)
        if fd < 0 { return .system(errno, "create \(path)") }
        defer { close(fd) }
        // Reserve first so that a full disk fails here, at once, rather than midway.
        let rc = posix_fallocate(fd, 0, off_t(bytes))
        if rc != 0 { unlink(path); return .system(rc, "fallocate \(path)") }
        let chunk = 1 << 20
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0, count: chunk)
        var offset = 0
        // Writes zeros on `fd` from `offset` up to `end`; nil or the error (the file is removed).
        func fill(_ fd: Int32, to end: Int, _ what: String) -> StorageError? {
            while offset < end {
                let n = pwrite(fd, zeros, min(chunk, end - offset), off_t(offset))
                if n < 0 {
                    if errno == EINTR { continue }
                    let error = StorageError.system(errno, "\(what) \(path)")
                    unlink(path)
                    return error
                }
                offset += n
            }
            return nil
        }
        if direct >= 0, let error = fill(fd, to: bytes & ~4095, "zero-fill (O_DIRECT)") { return error }
        let buffered = direct >= 0 && offset < bytes ? open(path, O_WRONLY | O_CLOEXEC) : fd
        if buffered < 0 { unlink(path); return .system(errno, "open \(path)") }
        defer { if buffered != fd { close(buffered) } }
        if let error = fill(buffered, to: bytes, "zero-fill") { return error }
        if fdatasync(buffered) != 0 { unlink(path); return .system(errno, "fdatasync \(path)") }
        return nil
    }

    public func dropCachedPages(_ file: DeviceFile) {
        _ = posix_fadvise(file.handle, 0, 0, POSIX_FADV_DONTNEED)  // advice only: nothing to do on failure
    }

    public func openFile(_ path: String, create: Bool) throws(StorageError) -> DeviceFile {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = open(path, flags, 0o644)
        if fd < 0 { throw .system(errno, "open \(path)") }
        return DeviceFile(handle: fd)
    }

    public func closeFile(_ file: DeviceFile) {
        _ = close(file.handle)  // close errors after fdatasync carry no information we could act on
    }

    public func fileSize(_ file: DeviceFile) throws(StorageError) -> Int {
        var info = stat()
        if fstat(file.handle, &info) != 0 { throw .system(errno, "fstat \(file)") }
        return Int(info.st_size)
    }

    public func preallocate(_ file: DeviceFile, bytes: Int) throws(StorageError) {
        // posix_fallocate returns the error instead of setting errno. EOPNOTSUPP: the filesystem has
        // no fallocate (glibc then emulates it by writing, which is still correct).
        let rc = posix_fallocate(file.handle, 0, off_t(bytes))
        if rc != 0 { throw .system(rc, "fallocate \(file) to \(bytes) bytes") }
    }

    public func truncate(_ file: DeviceFile, bytes: Int) throws(StorageError) {
        while ftruncate(file.handle, off_t(bytes)) != 0 {
            if errno == EINTR { continue }
            throw .system(errno, "ftruncate \(file) to \(bytes)")
        }
    }

    public func read(_ file: DeviceFile, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(file.handle, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .system(errno, "pread \(file) at \(offset + done)")
            }
            if n == 0 { break }  // end of file
            done += n
        }
        return done
    }

    public func writeNow(_ file: DeviceFile, at offset: Int, bytes: UnsafeRawBufferPointer) throws(StorageError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(file.handle, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .system(errno, "pwrite \(file) at \(offset + done)")
            }
            done += n
        }
    }

    public func syncNow(_ file: DeviceFile) throws(StorageError) {
        // EIO here means the page cache lost data we wrote: the caller must not trust anything
        // since the last successful sync, so it is reported, never retried.
        while fdatasync(file.handle) != 0 {
            if errno == EINTR { continue }
            throw .system(errno, "fdatasync \(file)")
        }
    }

    public func fileExists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public func listDirectory(_ path: String) throws(StorageError) -> [String] {
        guard let dir = opendir(path) else { throw .system(errno, "opendir \(path)") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public func createDirectory(_ path: String) throws(StorageError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw .system(errno, "mkdir \(prefix)") }
        }
    }

    public func removeFile(_ path: String) throws(StorageError) {
        if unlink(path) != 0 && errno != ENOENT { throw .system(errno, "unlink \(path)") }
    }

    public func renameFile(_ from: String, to: String) throws(StorageError) {
        if rename(from, to) != 0 { throw .system(errno, "rename \(from) to \(to)") }
    }

    public func syncDirectory(_ path: String) throws(StorageError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw .system(errno, "open directory \(path)") }
        defer { close(fd) }
        if fsync(fd) != 0 { throw .system(errno, "fsync directory \(path)") }
    }
}
