// The io_uring device: a WriteBatch becomes one submission of linked SQEs (writev..., fdatasync...)
// through the CTernIO shim, which also finishes short writes and re-issues cancelled links.
// Completions are reaped by the owner's thread; nothing runs inline in the kernel's context.
import CTernIO

#if canImport(Glibc)
    import Glibc
#endif

public final class UringDevice: PosixFiles, StorageDevice {
    public let backendName = "io_uring"
    private var ring: OpaquePointer?
    private var results = [tern_batch_result](repeating: tern_batch_result(), count: 64)

    /// Opens a ring. Throws `.unsupported` when the kernel refuses io_uring (ENOSYS, EPERM, or the
    /// kernel.io_uring_disabled sysctl).
    public init(entries: UInt32 = 256) throws(StorageError) {
        if tern_io_uring_disabled_by_sysctl() != 0 {
            throw StorageError(.unsupported, "io_uring is disabled by kernel.io_uring_disabled", errno: EPERM)
        }
        if let forced = getenv("TERN_TEST_REFUSE_IO_URING"), String(cString: forced) == "1" {
            // Test hook: behave as a kernel under a seccomp filter that answers EPERM.
            throw StorageError(.unsupported, "io_uring_setup refused (TERN_TEST_REFUSE_IO_URING=1)", errno: EPERM)
        }
        var created: OpaquePointer?
        let rc = tern_ring_create(entries, &created)
        if rc < 0 { throw .system(-rc, "io_uring_setup") }
        ring = created
        let fd = tern_eventfd_create()
        if fd >= 0 && tern_ring_register_eventfd(created, fd) == 0 {
            completionDescriptor = fd
        } else {
            if fd >= 0 { close(fd) }
            completionDescriptor = -1
        }
        super.init()
    }

    deinit {
        tern_ring_destroy(ring)
        if completionDescriptor >= 0 { close(completionDescriptor) }
    }

    /// Counts every completion the ring posts.
    public let completionDescriptor: Int32

    public var batchesInFlight: Int { Int(tern_ring_batches_in_flight(ring)) }

    public func submit(_ batch: WriteBatch) throws(StorageError) {
        var vectors: [tern_iovec] = []
        vectors.reserveCapacity(batch.writes.reduce(0) { $0 + $1.pieces.count })
        for write in batch.writes {
            for piece in write.pieces { vectors.append(tern_iovec(base: piece.baseAddress, length: piece.count)) }
        }
        let syncs = batch.syncFiles.map { $0.handle }
        let rc: Int32 = vectors.withUnsafeBufferPointer { flat in
            var writes: [tern_write] = []
            var at = 0
            for write in batch.writes {
                writes.append(
                    tern_write(
                        fd: write.file.handle, iovec_count: UInt32(write.pieces.count),
                        iovecs: flat.baseAddress! + at, offset: UInt64(write.offset)))
                at += write.pieces.count
            }
            return writes.withUnsafeBufferPointer { w in
                syncs.withUnsafeBufferPointer { s in
                    tern_ring_submit_batch(ring, batch.id, w.baseAddress, UInt32(w.count), s.baseAddress, UInt32(s.count))
                }
            }
        }
        if rc < 0 { throw .system(-rc, "io_uring submit of batch \(batch.id)") }
    }

    public func reap(wait: Bool) throws(StorageError) -> [BatchCompletion] {
        let n = results.withUnsafeMutableBufferPointer { out in
            tern_ring_reap(ring, out.baseAddress, UInt32(out.count), wait ? 1 : 0)
        }
        if n < 0 { throw .system(-n, "io_uring wait") }
        var done: [BatchCompletion] = []
        done.reserveCapacity(Int(n))
        for r in results[0..<Int(n)] {
            let error: StorageError? = r.result == 0 ? nil : .system(-r.result, "io_uring batch \(r.batch_id)")
            done.append(BatchCompletion(id: r.batch_id, error: error))
        }
        return done
    }

    public func shutdown() {
        waitForPreparations()
        while batchesInFlight > 0 { _ = try? reap(wait: true) }
    }
}

/// Which device `--io` asks for.
public enum IOBackendChoice: String, CaseIterable, Sendable {
    case auto, uring, posix
}

/// Opens the device `choice` names. With `.auto`, tries io_uring and falls back to POSIX when the
/// kernel refuses it, calling `log` with one line that says so and why.
/// `openUring` is how the io_uring device is made; tests pass one that fails like a refusing kernel.
public func makeStorageDevice(
    _ choice: IOBackendChoice, log: (String) -> Void,
    openUring: () throws(StorageError) -> UringDevice = { () throws(StorageError) in try UringDevice() }
) throws(StorageError) -> any StorageDevice {
    switch choice {
    case .posix:
        return PosixDevice()
    case .uring:
        return try openUring()
    case .auto:
        do {
            return try openUring()
        } catch let error where error.code == .unsupported {
            log("io_uring unavailable (\(error.message)); using the POSIX backend (pwritev + fdatasync)")
            return PosixDevice()
        }
    }
}
