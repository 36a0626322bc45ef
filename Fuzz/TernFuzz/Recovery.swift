// Commitlog recovery over damaged bytes: the input becomes segment files (and an index file) in
// a scratch directory, and the log is opened as a node opens it at start.
import Glibc
import TernStorage

extension Fuzz {
    /// Segment size of the fuzzed logs: the smallest the log accepts.
    public static let segmentBytes = 4096

    /// Bytes 0..<4096: segment 0; the next 4096: segment 4096; the rest: segment 0's index file.
    /// Opening must either fail with a `StorageError` or give a log whose every entry, first to
    /// last, reads back; with repair on, a log that opens must read back the same way.
    public static func recovery(_ bytes: [UInt8]) {
        let dir = scratch.path
        let files = [
            ("00000000000000000000", Array(bytes.prefix(segmentBytes))),
            ("00000000000000004096", Array(bytes.dropFirst(segmentBytes).prefix(segmentBytes))),
            ("00000000000000000000.index", Array(bytes.dropFirst(2 * segmentBytes))),
        ]
        for repair in [false, true] {
            clear(dir)
            for (name, content) in files where !content.isEmpty || name.hasSuffix("0000") { write(dir + "/" + name, content) }
            var options = CommitlogOptions(segmentSizeBytes: segmentBytes, maxEntryBodyBytes: segmentBytes, repairCorruption: repair)
            options.recycledSegmentsMax = 0
            let log: Commitlog
            do {
                log = try Commitlog(directory: dir, device: scratch.device, options: options)
            } catch {
                scratch.device.waitForBackgroundWork()
                continue
            }
            var next = log.firstIndex
            while next <= log.lastIndex {
                let entries: [LogEntry]
                do {
                    entries = try log.read(from: next, maxBytes: 1 << 16)
                } catch {
                    fatalError("recovery opened a log (repair \(repair)) whose entry \(next) does not read: \(error)")
                }
                guard let first = entries.first, first.index == next else { fatalError("reading from \(next) returned \(entries.first?.index ?? 0)") }
                for (k, e) in entries.enumerated() where e.index != next + UInt64(k) { fatalError("entries out of order after \(next)") }
                next += UInt64(entries.count)
            }
            try? log.close()
            scratch.device.waitForBackgroundWork()
        }
    }

    /// One scratch directory and device per process.
    nonisolated(unsafe) static let scratch: (path: String, device: PosixDevice) = {
        var template = Array("/tmp/tern-fuzz-recovery-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        return (path, PosixDevice())
    }()

    static func clear(_ dir: String) {
        guard let d = opendir(dir) else { return }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { unlink(dir + "/" + name) }
        }
    }

    static func write(_ path: String, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { fatalError("cannot create \(path): errno \(errno)") }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { fatalError("short write to \(path)") }
    }

    /// Removes the scratch directory (the replay tool calls it at exit).
    public static func removeScratch() {
        clear(scratch.path)
        rmdir(scratch.path)
    }
}
