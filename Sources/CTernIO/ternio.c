// The io_uring half of CTernIO: batches of linked writes + fdatasync, with the bookkeeping that
// turns a broken chain (short write, cancelled successors) into a re-submitted remainder, so the
// Swift side sees exactly one result per batch. Also the raw write+fdatasync baseline loop.
//
// Invariants:
//  - A batch's memory (its copied op and iovec arrays) is freed only after every operation of
//    every round it submitted has produced a completion; the kernel never holds a pointer we freed.
//  - A round is submitted only when no operation of the batch is in flight, so ops of one batch
//    never race each other; the chain link orders writes before the fdatasyncs.
#define _GNU_SOURCE
#include "CTernIO.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(tern_iovec) == sizeof(struct iovec), "tern_iovec must match struct iovec");
_Static_assert(offsetof(tern_iovec, base) == offsetof(struct iovec, iov_base), "iovec base");
_Static_assert(offsetof(tern_iovec, length) == offsetof(struct iovec, iov_len), "iovec length");

enum { TERN_MAX_BATCHES = 64 };

enum op_state { OP_PENDING = 0, OP_IN_FLIGHT = 1, OP_DONE = 2 };
enum op_kind { OP_WRITE = 0, OP_SYNC = 1 };

struct tern_op {
    uint8_t kind;
    uint8_t state;
    uint8_t dsync;        // a write to a file the batch syncs: RWF_DSYNC, no separate fsync
    uint8_t linked;       // part of the batch's ordered chain (data writes, then any fsync)
    int fd;
    uint64_t offset;      // where the unwritten remainder starts
    struct iovec *iov;    // first iovec not yet fully written (points into the batch's copy)
    uint32_t iov_count;   // iovecs left from `iov` on
    size_t remaining;     // bytes left to write
};

struct tern_batch {
    int in_use;
    uint64_t id;
    uint32_t op_count;
    uint32_t outstanding;  // ops of the current round without a completion yet
    uint32_t rounds;
    int32_t error;         // first real error, 0 if none
    struct tern_op *ops;
    struct iovec *iovecs;  // our copy; short writes advance into it
};

struct tern_ring {
    struct io_uring uring;
    uint32_t entries;
    uint32_t in_flight;  // batches submitted and not yet moved to `finished`
    struct tern_batch batches[TERN_MAX_BATCHES];
    tern_batch_result finished[TERN_MAX_BATCHES];
    uint32_t finished_count;
};

int tern_ring_create(uint32_t entries, tern_ring **out) {
    *out = NULL;
    if (entries < 8) entries = 8;
    tern_ring *ring = calloc(1, sizeof(*ring));
    if (!ring) return -ENOMEM;
    int rc = io_uring_queue_init(entries, &ring->uring, 0);
    if (rc < 0) {
        free(ring);
        return rc;  // -ENOSYS (no io_uring), -EPERM (disabled / seccomp), -ENOMEM (memlock)
    }
    ring->entries = entries;
    *out = ring;
    return 0;
}

static void batch_release(struct tern_batch *b) {
    free(b->ops);
    free(b->iovecs);
    memset(b, 0, sizeof(*b));
}

// Queues every unfinished op of the batch: the ordered ones (writes to synced files, each with
// RWF_DSYNC, then any fsync) as one linked chain, the rest (index writes, never synced) on their
// own. The caller submits.
static int batch_queue_round(tern_ring *ring, struct tern_batch *b, uint32_t slot) {
    uint32_t pending = 0, chain = 0;
    for (uint32_t i = 0; i < b->op_count; i++)
        if (b->ops[i].state != OP_DONE) {
            pending++;
            if (b->ops[i].linked) chain++;
        }
    if (pending == 0) return 0;
    if (io_uring_sq_space_left(&ring->uring) < pending) {
        int rc = io_uring_submit(&ring->uring);
        if (rc < 0) return rc;
        if (io_uring_sq_space_left(&ring->uring) < pending) return -EBUSY;
    }
    uint32_t queued = 0;
    for (uint32_t i = 0; i < b->op_count; i++) {
        struct tern_op *op = &b->ops[i];
        if (op->state == OP_DONE) continue;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->uring);
        if (!sqe) return -EBUSY;  // cannot happen: space was checked above
        if (op->kind == OP_WRITE)
            io_uring_prep_writev2(sqe, op->fd, op->iov, op->iov_count, op->offset, op->dsync ? RWF_DSYNC : 0);
        else
            io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
        if (op->linked) {
            queued++;
            if (queued < chain) sqe->flags |= IOSQE_IO_LINK;
        }
        io_uring_sqe_set_data64(sqe, ((uint64_t)slot << 32) | i);
        op->state = OP_IN_FLIGHT;
    }
    b->outstanding = pending;
    b->rounds++;
    return 0;
}

int tern_ring_submit_batch(tern_ring *ring, uint64_t batch_id, const tern_write *writes,
                           uint32_t write_count, const int *sync_fds, uint32_t sync_count) {
    uint32_t op_count = write_count + sync_count;
    if (op_count == 0 || op_count > ring->entries) return -E2BIG;
    uint32_t slot = TERN_MAX_BATCHES;
    for (uint32_t i = 0; i < TERN_MAX_BATCHES; i++)
        if (!ring->batches[i].in_use) { slot = i; break; }
    if (slot == TERN_MAX_BATCHES) return -EBUSY;

    size_t iov_total = 0;
    for (uint32_t i = 0; i < write_count; i++) iov_total += writes[i].iovec_count;
    struct tern_batch *b = &ring->batches[slot];
    b->ops = calloc(op_count, sizeof(struct tern_op));
    b->iovecs = calloc(iov_total ? iov_total : 1, sizeof(struct iovec));
    if (!b->ops || !b->iovecs) {
        batch_release(b);
        return -ENOMEM;
    }
    b->in_use = 1;
    b->id = batch_id;
    b->op_count = op_count;
    size_t iov_at = 0;
    for (uint32_t i = 0; i < write_count; i++) {
        struct tern_op *op = &b->ops[i];
        op->kind = OP_WRITE;
        op->fd = writes[i].fd;
        op->offset = writes[i].offset;
        op->iov = &b->iovecs[iov_at];
        op->iov_count = writes[i].iovec_count;
        for (uint32_t v = 0; v < writes[i].iovec_count; v++) {
            b->iovecs[iov_at].iov_base = (void *)writes[i].iovecs[v].base;
            b->iovecs[iov_at].iov_len = writes[i].iovecs[v].length;
            op->remaining += writes[i].iovecs[v].length;
            iov_at++;
        }
        if (op->remaining == 0) op->state = OP_DONE;
        // A write to a file the batch syncs carries the sync itself (RWF_DSYNC: data and the
        // metadata needed to read it, as fdatasync), which spares a linked fsync and its hand-off
        // through io_uring's workers. Such writes stay in order in one chain, so that a process
        // killed midway leaves a prefix across files too.
        for (uint32_t f = 0; f < sync_count; f++)
            if (sync_fds[f] == op->fd) op->dsync = op->linked = 1;
    }
    // Files to sync that no write of the batch covers get an fsync at the end of the chain.
    uint32_t syncs = 0;
    for (uint32_t f = 0; f < sync_count; f++) {
        int covered = 0;
        for (uint32_t i = 0; i < write_count; i++)
            if (b->ops[i].dsync && b->ops[i].remaining > 0 && b->ops[i].fd == sync_fds[f]) covered = 1;
        if (covered) continue;
        struct tern_op *op = &b->ops[write_count + syncs++];
        op->kind = OP_SYNC;
        op->fd = sync_fds[f];
        op->linked = 1;
    }
    b->op_count = write_count + syncs;
    int rc = batch_queue_round(ring, b, slot);
    if (rc < 0) {
        batch_release(b);
        return rc;
    }
    ring->in_flight++;
    rc = io_uring_submit(&ring->uring);
    if (rc < 0) {
        // Nothing reached the kernel; the SQEs stay queued and would go out with the next submit,
        // so they must not point at memory we free. Fail hard instead of guessing.
        fprintf(stderr, "tern: io_uring_submit failed with %d after queueing a batch\n", rc);
        abort();
    }
    return 0;
}

// Advances a write op by `written` bytes, dropping iovecs that are complete.
static void op_advance(struct tern_op *op, size_t written) {
    op->remaining -= written;
    op->offset += written;
    while (written > 0 && op->iov_count > 0) {
        if (written >= op->iov->iov_len) {
            written -= op->iov->iov_len;
            op->iov++;
            op->iov_count--;
        } else {
            op->iov->iov_base = (char *)op->iov->iov_base + written;
            op->iov->iov_len -= written;
            written = 0;
        }
    }
    while (op->iov_count > 0 && op->iov->iov_len == 0) {
        op->iov++;
        op->iov_count--;
    }
}

static void handle_cqe(tern_ring *ring, uint64_t data, int32_t res) {
    uint32_t slot = (uint32_t)(data >> 32), index = (uint32_t)data;
    if (slot >= TERN_MAX_BATCHES || !ring->batches[slot].in_use || index >= ring->batches[slot].op_count) {
        fprintf(stderr, "tern: io_uring completion for unknown op %llu\n", (unsigned long long)data);
        abort();
    }
    struct tern_batch *b = &ring->batches[slot];
    struct tern_op *op = &b->ops[index];
    op->state = OP_PENDING;
    if (res == -ECANCELED || res == -EINTR || res == -EAGAIN) {
        // Cancelled because an earlier op of the chain broke it (short write or error), or
        // interrupted: the op did nothing and goes out again in the next round.
    } else if (res < 0) {
        if (b->error == 0) b->error = res;
        op->state = OP_DONE;
    } else if (op->kind == OP_WRITE) {
        if (res == 0 && op->remaining > 0) {
            if (b->error == 0) b->error = -EIO;  // no progress: treat as an I/O error, not a loop
            op->state = OP_DONE;
        } else {
            op_advance(op, (size_t)res);
            if (op->remaining == 0) op->state = OP_DONE;  // else: short write, rest goes next round
        }
    } else {
        op->state = OP_DONE;  // fdatasync returned 0
    }
    b->outstanding--;
    if (b->outstanding > 0) return;

    int unfinished = 0;
    for (uint32_t i = 0; i < b->op_count; i++)
        if (b->ops[i].state != OP_DONE) unfinished = 1;
    if (unfinished && b->error == 0) {
        int rc = batch_queue_round(ring, b, slot);
        if (rc == 0) return;
        b->error = rc;
    }
    ring->finished[ring->finished_count++] =
        (tern_batch_result){.batch_id = b->id, .result = b->error, .rounds = b->rounds};
    ring->in_flight--;
    batch_release(b);
}

int tern_ring_reap(tern_ring *ring, tern_batch_result *out, uint32_t capacity, int wait) {
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring->uring, head, cqe) {
            handle_cqe(ring, io_uring_cqe_get_data64(cqe), cqe->res);
            seen++;
        }
        if (seen) {
            io_uring_cq_advance(&ring->uring, seen);
            // Rounds re-queued by handle_cqe go to the kernel now.
            if (io_uring_sq_ready(&ring->uring) > 0) {
                int rc = io_uring_submit(&ring->uring);
                if (rc < 0) return rc;
            }
        }
        if (ring->finished_count > 0 || !wait || ring->in_flight == 0) break;
        int rc = io_uring_wait_cqe(&ring->uring, &cqe);
        if (rc < 0 && rc != -EINTR) return rc;
    }
    uint32_t n = ring->finished_count < capacity ? ring->finished_count : capacity;
    memcpy(out, ring->finished, n * sizeof(tern_batch_result));
    memmove(ring->finished, ring->finished + n, (ring->finished_count - n) * sizeof(tern_batch_result));
    ring->finished_count -= n;
    return (int)n;
}

uint32_t tern_ring_batches_in_flight(const tern_ring *ring) {
    return ring->in_flight + ring->finished_count;
}

void tern_ring_destroy(tern_ring *ring) {
    if (!ring) return;
    tern_batch_result sink[TERN_MAX_BATCHES];
    while (ring->in_flight > 0) {
        if (tern_ring_reap(ring, sink, TERN_MAX_BATCHES, 1) < 0) break;
    }
    io_uring_queue_exit(&ring->uring);
    free(ring);
}

int tern_io_uring_disabled_by_sysctl(void) {
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    if (!f) return 0;  // older kernels have no such switch
    int value = 0;
    if (fscanf(f, "%d", &value) != 1) value = 0;
    fclose(f);
    // 1: only processes in kernel.io_uring_group may create rings; 2: nobody may. Root passes 1.
    if (value == 2) return 1;
    if (value == 1 && geteuid() != 0) return 1;
    return 0;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t tern_raw_write_sync_loop(const char *directory, size_t block_bytes, size_t file_bytes,
                                 double seconds, uint64_t *latencies_ns, size_t latency_capacity,
                                 double *elapsed_seconds) {
    if (block_bytes == 0 || file_bytes < block_bytes) return -EINVAL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tern-raw-baseline.%d", directory, (int)getpid());
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    int64_t result = 0;
    void *buffer = NULL;
    if (posix_memalign(&buffer, 4096, block_bytes) != 0) {
        result = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < block_bytes; i++) ((unsigned char *)buffer)[i] = (unsigned char)(i * 131 + 7);
    // Fill and sync the whole file first, so the loop measures in-place overwrites only.
    for (size_t off = 0; off + block_bytes <= file_bytes; off += block_bytes) {
        if (pwrite(fd, buffer, block_bytes, (off_t)off) != (ssize_t)block_bytes) {
            result = -errno;
            goto out;
        }
    }
    if (fsync(fd) != 0) {
        result = -errno;
        goto out;
    }
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    size_t off = 0;
    int64_t count = 0;
    for (;;) {
        uint64_t a = now_ns();
        if (a >= end) break;
        if (pwrite(fd, buffer, block_bytes, (off_t)off) != (ssize_t)block_bytes || fdatasync(fd) != 0) {
            result = -errno;
            goto out;
        }
        uint64_t b = now_ns();
        if ((size_t)count < latency_capacity) latencies_ns[count] = b - a;
        count++;
        off += block_bytes;
        if (off + block_bytes > file_bytes) off = 0;
    }
    *elapsed_seconds = (double)(now_ns() - start) / 1e9;
    result = count;
out:
    free(buffer);
    close(fd);
    unlink(path);
    return result;
}

void tern_stdout_line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

int tern_open_direct(const char *path) {
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_DIRECT, 0644);
    return fd < 0 ? -errno : fd;
}

int tern_ring_register_eventfd(tern_ring *ring, int fd) {
    return io_uring_register_eventfd(&ring->uring, fd);
}

int tern_eventfd_create(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

void tern_eventfd_signal(int fd) {
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR) {}
}
