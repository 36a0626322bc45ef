// CTernIO: the only C in Tern. Two jobs:
//  1. An opaque handle over an io_uring (liburing), used to submit a *batch*: several vectored
//     writes, possibly to several files, followed by fdatasync of some files, all linked into one
//     chain so the sync runs only after every write finished. The shim finishes short writes and
//     re-issues operations cancelled by a broken chain, and reports one result per batch.
//  2. CRC32C (Castagnoli), with the SSE4.2 instruction where the CPU has it and a table otherwise.
// A third, small job: the raw write+fdatasync loop that the storage benchmark uses as its baseline,
// kept in C so the baseline carries no Swift overhead.
//
// This header deliberately does not include <liburing.h>: liburing's headers pull in <sys/socket.h>
// declarations that clash with other Clang modules (swift-nio's shims) over fd_set. Everything that
// touches liburing lives in ternio.c.
#ifndef CTERNIO_H
#define CTERNIO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// An io_uring with the shim's batch bookkeeping. Opaque: only ternio.c sees liburing.
typedef struct tern_ring tern_ring;

/// One contiguous piece of a vectored write. Same layout as `struct iovec` (checked in ternio.c).
typedef struct tern_iovec {
    const void *base;
    size_t length;
} tern_iovec;

/// One vectored write at an absolute file offset.
typedef struct tern_write {
    int fd;
    uint32_t iovec_count;
    const tern_iovec *iovecs;
    uint64_t offset;
} tern_write;

/// The outcome of one batch: 0 when every write completed in full and every fdatasync succeeded,
/// otherwise the first negative errno seen (-EIO, -ENOSPC, ...).
typedef struct tern_batch_result {
    uint64_t batch_id;
    int32_t result;
    uint32_t rounds;  // submissions the batch needed: 1 normally, more after a short write
} tern_batch_result;

/// Creates a ring with `entries` submission slots. Returns 0, or a negative errno (-ENOSYS when the
/// kernel lacks io_uring, -EPERM when it is disabled or filtered by seccomp, -ENOMEM).
int tern_ring_create(uint32_t entries, tern_ring **out);

/// Waits for every batch still in flight, then releases the ring. Buffers handed to submitted
/// batches stay in use until this returns.
void tern_ring_destroy(tern_ring *ring);

/// Queues and submits one batch: `write_count` writes, then an fdatasync of each of `sync_fds`,
/// linked (IOSQE_IO_LINK) in that order. The writes' iovec arrays and the memory they point at must
/// stay valid until the batch is reported by tern_ring_reap (the shim copies the arrays of
/// `tern_write` and `tern_iovec` themselves). Returns 0, -E2BIG if the batch can never fit the
/// ring, -EBUSY if too many batches are in flight, or the errno of io_uring_submit.
int tern_ring_submit_batch(tern_ring *ring, uint64_t batch_id, const tern_write *writes,
                           uint32_t write_count, const int *sync_fds, uint32_t sync_count);

/// Reaps completions and reports finished batches into `out` (at most `capacity`). With
/// `wait` non-zero, blocks until at least one batch finished (returns 0 at once when nothing is in
/// flight). Returns the number of results written, or a negative errno from the kernel.
int tern_ring_reap(tern_ring *ring, tern_batch_result *out, uint32_t capacity, int wait);

/// Batches submitted and not yet reported.
uint32_t tern_ring_batches_in_flight(const tern_ring *ring);

/// 1 when /proc/sys/kernel/io_uring_disabled says io_uring is off for this process, else 0.
int tern_io_uring_disabled_by_sysctl(void);

/// CRC32C of `length` bytes, continuing from `crc` (start with 0). Uses SSE4.2 when present.
uint32_t tern_crc32c(uint32_t crc, const void *data, size_t length);
/// The table implementation, always; exported so tests can check both paths agree.
uint32_t tern_crc32c_table(uint32_t crc, const void *data, size_t length);
/// 1 when tern_crc32c uses the SSE4.2 instruction.
int tern_crc32c_hardware(void);

/// Raw baseline for the storage benchmark: in `directory`, preallocates and fills a file of
/// `file_bytes`, syncs it, then loops pwrite(`block_bytes`) + fdatasync over it in place for
/// `seconds`, recording each iteration's latency in nanoseconds into `latencies_ns` (up to
/// `latency_capacity`). Returns the number of iterations (>= 0) or a negative errno. The file is
/// removed before returning.
int64_t tern_raw_write_sync_loop(const char *directory, size_t block_bytes, size_t file_bytes,
                                 double seconds, uint64_t *latencies_ns, size_t latency_capacity,
                                 double *elapsed_seconds);

/* Makes `fd` (an eventfd) count every completion the ring posts. Returns 0 or a negative errno. */
int tern_ring_register_eventfd(tern_ring *ring, int fd);

/* A non-blocking, close-on-exec eventfd, or a negative errno. */
int tern_eventfd_create(void);
/* Adds one to the eventfd's counter (wakes a poller). */
void tern_eventfd_signal(int fd);

/* Opens (creating, truncating) `path` for writing with O_DIRECT: writes bypass the page cache.
   Returns the descriptor or a negative errno (-EINVAL where the file system refuses O_DIRECT). */
int tern_open_direct(const char *path);

/* Makes standard output line-buffered (progress lines appear at once when piped). */
void tern_stdout_line_buffered(void);

#ifdef __cplusplus
}
#endif

#endif
