// The POSIX device: a WriteBatch is carried out by one worker thread with pwritev + fdatasync, so
// `submit` never blocks the caller, exactly like the io_uring device. Used where the kernel refuses
// io_uring, and as the second backend every test runs against.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

public final class PosixDevice: PosixFiles, StorageDevice, @unchecked Sendable {
    public let backendName = "posix"

    // All three guarded by `condition`.
    private let condition = NSCondition()
    private var queued: [WriteBatch] = []
    private var finished: [BatchCompletion] = []
    private var stopping = false
    private var inFlight = 0  // touched only by the owner's thread
    private var worker: Thread?

    public override init() {
        super.init()
        let thread = Thread { [unowned self] in self.workerLoop() }
        thread.name = "tern-posix-io"
        worker = thread
        thread.start()
    }

    deinit {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    public var batchesInFlight: Int { inFlight }

    public func submit(_ batch: WriteBatch) throws(StorageError) {
        condition.lock()
        queued.append(batch)
        inFlight += 1
        condition.signal()
        condition.unlock()
    }

    public func reap(wait: Bool) throws(StorageError) -> [BatchCompletion] {
        condition.lock()
        while wait && finished.isEmpty && inFlight > 0 { condition.wait() }
        let done = finished
        finished.removeAll(keepingCapacity: true)
        condition.unlock()
        inFlight -= done.count
        return done
    }

    public func shutdown() {
        while inFlight > 0 { _ = try? reap(wait: true) }
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func workerLoop() {
        while true {
            condition.lock()
            while queued.isEmpty && !stopping { condition.wait() }
            if queued.isEmpty {  // stopping and drained
                condition.unlock()
                return
            }
            let batch = queued.removeFirst()
            condition.unlock()
            let error = execute(batch)
            condition.lock()
            finished.append(BatchCompletion(id: batch.id, error: error))
            condition.broadcast()
            condition.unlock()
        }
    }

    private func execute(_ batch: WriteBatch) -> StorageError? {
        for write in batch.writes {
            var vectors = write.pieces.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
            var offset = write.offset
            var first = 0
            while first < vectors.count {
                let n = vectors.withUnsafeMutableBufferPointer { all in
                    pwritev(write.file.handle, all.baseAddress! + first, Int32(all.count - first), off_t(offset))
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    return .system(errno, "pwritev \(write.file) at \(offset)")
                }
                if n == 0 { return StorageError(.io, "pwritev \(write.file) at \(offset) made no progress") }
                // A short write: skip what was written and go on with the rest.
                offset += n
                var left = n
                while left > 0 {
                    if left >= vectors[first].iov_len {
                        left -= vectors[first].iov_len
                        first += 1
                    } else {
                        vectors[first].iov_base += left
                        vectors[first].iov_len -= left
                        left = 0
                    }
                }
                while first < vectors.count && vectors[first].iov_len == 0 { first += 1 }
            }
        }
        for file in batch.syncFiles {
            while fdatasync(file.handle) != 0 {
                if errno == EINTR { continue }
                return .system(errno, "fdatasync \(file)")
            }
        }
        return nil
    }
}
