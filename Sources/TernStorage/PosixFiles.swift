// File operations shared by the two real devices (io_uring and POSIX). Both use ordinary file
// descriptors; they differ only in how a WriteBatch reaches the disk.
#if canImport(Glibc)
import Glibc
#endif

/// Synchronous POSIX file operations, with EINTR retried and every other errno mapped to StorageError.
public class PosixFiles {
    public init() {}
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
