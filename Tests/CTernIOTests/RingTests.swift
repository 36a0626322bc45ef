import CTernIO
import Glibc
import Testing

/// A ring, or nil (and a printed reason) where the kernel refuses io_uring.
func makeRing() -> OpaquePointer? {
    var ring: OpaquePointer?
    let rc = tern_ring_create(64, &ring)
    if rc < 0 {
        print("SKIP io_uring tests: io_uring_setup refused with errno \(-rc) (\(String(cString: strerror(-rc))))")
        return nil
    }
    return ring
}

func temporaryDirectory(_ name: String) -> String {
    var template = Array("/tmp/tern-\(name)-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

func readWhole(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
        if n <= 0 { break }
        out += chunk[0..<n]
    }
    return out
}

/// Submits one batch and waits for its result.
func runBatch(_ ring: OpaquePointer?, id: UInt64, writes: [(Int32, [[UInt8]], UInt64)], syncs: [Int32]) -> tern_batch_result {
    // Keep every buffer alive until the batch is reaped.
    let buffers = writes.map { w in
        w.1.map { bytes -> UnsafeMutableRawBufferPointer in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 8)
            b.copyBytes(from: bytes)
            return UnsafeMutableRawBufferPointer(rebasing: b[0..<bytes.count])
        }
    }
    defer { buffers.joined().forEach { $0.deallocate() } }
    var iovecs: [tern_iovec] = buffers.joined().map { tern_iovec(base: $0.baseAddress, length: $0.count) }
    let rc: Int32 = iovecs.withUnsafeMutableBufferPointer { flat in
        var at = 0
        var ops: [tern_write] = []
        for (i, w) in writes.enumerated() {
            ops.append(tern_write(fd: w.0, iovec_count: UInt32(buffers[i].count), iovecs: flat.baseAddress! + at, offset: w.2))
            at += buffers[i].count
        }
        return tern_ring_submit_batch(ring, id, ops, UInt32(ops.count), syncs, UInt32(syncs.count))
    }
    #expect(rc == 0)
    var result = tern_batch_result()
    #expect(tern_ring_reap(ring, &result, 1, 1) == 1)
    #expect(tern_ring_batches_in_flight(ring) == 0)
    return result
}

@Suite("CTernIO: io_uring batches")
struct RingTests {
    @Test("a batch of vectored writes to two synced files (RWF_DSYNC, one chain) lands whole")
    func writesTwoFiles() throws {
        guard let ring = makeRing() else { return }
        defer { tern_ring_destroy(ring) }
        let dir = temporaryDirectory("ring")
        let a = open(dir + "/a", O_CREAT | O_RDWR, 0o644), b = open(dir + "/b", O_CREAT | O_RDWR, 0o644)
        defer { close(a); close(b) }
        let r = runBatch(ring, id: 42, writes: [(a, [Array("hello ".utf8), Array("world".utf8)], 0), (b, [Array("xyz".utf8)], 5)], syncs: [a, b])
        #expect(r.batch_id == 42 && r.result == 0 && r.rounds == 1)
        #expect(readWhole(dir + "/a") == Array("hello world".utf8))
        #expect(readWhole(dir + "/b") == [0, 0, 0, 0, 0] + Array("xyz".utf8))
    }

    @Test("a batch with an unsynced write (an index record) and a synced file no write covers completes in one round; a failing unsynced write fails the batch")
    func unsyncedWriteAndBareSync() throws {
        guard let ring = makeRing() else { return }
        defer { tern_ring_destroy(ring) }
        let dir = temporaryDirectory("ringmix")
        let data = open(dir + "/data", O_CREAT | O_RDWR, 0o644), index = open(dir + "/index", O_CREAT | O_RDWR, 0o644)
        let other = open(dir + "/other", O_CREAT | O_RDWR, 0o644)
        defer { close(data); close(index); close(other) }
        let r = runBatch(ring, id: 9, writes: [(data, [Array("entry".utf8)], 0), (index, [[7, 7, 7, 7]], 0)], syncs: [data, other])
        #expect(r.batch_id == 9 && r.result == 0 && r.rounds == 1)
        #expect(readWhole(dir + "/data") == Array("entry".utf8))
        #expect(readWhole(dir + "/index") == [7, 7, 7, 7])
        // A failing unsynced write still fails the batch.
        let readOnly = open(dir + "/ro", O_CREAT | O_RDONLY, 0o644)
        defer { close(readOnly) }
        let failed = runBatch(ring, id: 10, writes: [(data, [Array("more".utf8)], 5), (readOnly, [[1]], 0)], syncs: [data])
        #expect(failed.batch_id == 10 && failed.result == -EBADF)
    }

    @Test("a failing write fails the batch with its errno and cancels the sync")
    func failingWrite() throws {
        guard let ring = makeRing() else { return }
        defer { tern_ring_destroy(ring) }
        let dir = temporaryDirectory("ringfail")
        let fd = open(dir + "/ro", O_CREAT | O_RDONLY, 0o644)
        defer { close(fd) }
        let r = runBatch(ring, id: 7, writes: [(fd, [[1, 2, 3]], 0)], syncs: [fd])
        #expect(r.batch_id == 7 && r.result == -EBADF)
    }

    @Test("a short write on a nearly full filesystem is continued, then reports ENOSPC")
    func shortWriteThenNoSpace() throws {
        guard let ring = makeRing() else { return }
        defer { tern_ring_destroy(ring) }
        let dir = temporaryDirectory("ringfull")
        guard mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0 else {
            print("SKIP short-write test: cannot mount a small tmpfs here (errno \(errno))")
            return
        }
        defer { umount(dir) }
        let fd = open(dir + "/f", O_CREAT | O_RDWR, 0o644)
        defer { close(fd) }
        // 48 KiB fits, then a 32 KiB write gets only the 16 KiB left: a short write, after which
        // the shim must resubmit the remainder (round 2), which fails with ENOSPC.
        let first = runBatch(ring, id: 1, writes: [(fd, [[UInt8](repeating: 1, count: 48 << 10)], 0)], syncs: [fd])
        #expect(first.result == 0)
        let second = runBatch(
            ring, id: 2, writes: [(fd, [[UInt8](repeating: 2, count: 16 << 10), [UInt8](repeating: 3, count: 16 << 10)], 48 << 10)], syncs: [fd])
        #expect(second.result == -ENOSPC)
        #expect(second.rounds >= 2, "the short write should have been continued in a second round")
        #expect(readWhole(dir + "/f").count == 64 << 10)
    }

    @Test("a ring refuses a batch that can never fit")
    func tooBig() throws {
        guard let ring = makeRing() else { return }
        defer { tern_ring_destroy(ring) }
        let syncs = [Int32](repeating: 0, count: 200)
        #expect(tern_ring_submit_batch(ring, 1, nil, 0, syncs, 200) == -E2BIG)
    }

    @Test("the raw baseline loop runs and reports latencies")
    func rawLoop() throws {
        let dir = temporaryDirectory("raw")
        var latencies = [UInt64](repeating: 0, count: 1000)
        var elapsed = 0.0
        let n = tern_raw_write_sync_loop(dir, 4096, 1 << 20, 0.2, &latencies, 1000, &elapsed)
        #expect(n > 0)
        #expect(elapsed >= 0.2)
        #expect(latencies[0] > 0)
    }
}
