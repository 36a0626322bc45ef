import CTernIO
import Foundation

// The POSIX device: a WriteBatch is carried out by one worker thread with pwritev + fdatasync, so
// `submit` never blocks the caller, exactly like the io_uring device. Used where the kernel refuses
// io_uring, and as the second backend every test runs against.
#if canImport(Glibc)
    import Glibc
#endif

public final class PosixDevice: PosixFiles, StorageDevice {
    public let backendName = "posix"

    /// What the device and its worker thread share. The thread holds it strongly, so the device
    /// can go away first; the thread then sees `stopping` and ends.
    private final class Shared: @unchecked Sendable {
        let condition = NSCondition()
        /// Signalled by the worker after each batch.
        let completions = tern_eventfd_create()
        // Guarded by `condition`.
        var queued: [WriteBatch] = []
        var finished: [BatchCompletion] = []
        var stopping = false
    }

    private let shared = Shared()
    private var inFlight = 0  // touched only by the owner's thread

    public override init() {
        super.init()
        let shared = self.shared
        let thread = Thread { PosixDevice.workerLoop(shared) }
        thread.name = "tern-posix-io"
        thread.start()
    }

    deinit {
        stop()
        if shared.completions >= 0 { close(shared.completions) }
    }

    public var completionDescriptor: Int32 { shared.completions >= 0 ? shared.completions : -1 }

    public var batchesInFlight: Int { inFlight }

    public func submit(_ batch: WriteBatch) throws(StorageError) {
        shared.condition.lock()
        shared.queued.append(batch)
        inFlight += 1
        shared.condition.signal()
        shared.condition.unlock()
    }

    public func reap(wait: Bool) throws(StorageError) -> [BatchCompletion] {
        shared.condition.lock()
        while wait && shared.finished.isEmpty && inFlight > 0 { shared.condition.wait() }
        let done = shared.finished
        shared.finished.removeAll(keepingCapacity: true)
        shared.condition.unlock()
        inFlight -= done.count
        return done
    }

    public func shutdown() {
        waitForPreparations()
        while inFlight > 0 { _ = try? reap(wait: true) }
        stop()
    }

    private func stop() {
        shared.condition.lock()
        shared.stopping = true
        shared.condition.broadcast()
        shared.condition.unlock()
    }

    private static func workerLoop(_ shared: Shared) {
        while true {
            shared.condition.lock()
            while shared.queued.isEmpty && !shared.stopping { shared.condition.wait() }
            if shared.queued.isEmpty {  // stopping and drained
                shared.condition.unlock()
                return
            }
            let batch = shared.queued.removeFirst()
            shared.condition.unlock()
            let error = execute(batch)
            shared.condition.lock()
            shared.finished.append(BatchCompletion(id: batch.id, error: error))
            shared.condition.broadcast()
            shared.condition.unlock()
            if shared.completions >= 0 { tern_eventfd_signal(shared.completions) }
        }
    }

    private static func execute(_ batch: WriteBatch) -> StorageError? {
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
