// Snapshot installs, the node's part (Raft's part: RaftSnapshots.swift). A follower whose next
// entry the leader's log no longer has (retention compacted it) receives a stream: the leader's
// latest written snapshot, the rows of every queue it names, and the leader's log base (the
// last entry compacted away and its term). The follower writes the stream to a file as it
// arrives, answers each chunk with how much it holds contiguously, and once the stream is
// whole and synced: writes the queue files and the snapshot file (synced), then resets its log
// to continue after the base (the base recorded first), loads the state, and acknowledges the
// base to Raft. Entries between the base and the snapshot's index then arrive as appends and
// are stored but not applied again (their effect is in the snapshot); reads that touch entries
// wait until the log holds the snapshot's index committed (`stateReadable`).
//
// Stream (little-endian): magic "TINS" u32, version 1 u8, 3 zero bytes, snapshot index u64,
// snapshot term u64, base index u64, base term u64, body length u64, body CRC32C u32, queue
// count u32, per queue (created u64, queue u32, min u64, max u64), header CRC32C u32 (of the
// header before it); then the snapshot body; then each queue's rows min..<max (32 bytes each,
// each with its own CRC), in header order.
//
// The leader sends chunks of `installChunkBytes`, at most `installWindow` ahead of what the
// follower acknowledged, and resends from the acknowledged offset when a second passes without
// progress. A follower that receives offset 0 of the stream it is already receiving answers
// with what it holds, so a restarted transfer resumes. A follower that restarts drops its
// partial stream (it cannot tell which of its bytes reached the disk).
import TernBroker
import TernProtocol
import TernRaft
import TernStorage

struct OutgoingInstall {
    var index: UInt64
    /// The log base the stream carries: compaction stays below it while the stream is out.
    var base: UInt64
    var header: [UInt8]
    var body: [UInt8]
    var queues: [QueueFileBounds]
    var total: UInt64
    /// What the follower holds; what was sent.
    var acked: UInt64 = 0
    var sent: UInt64 = 0
    var lastProgress: UInt64
}

struct IncomingInstall {
    var leader: NodeID
    var index: UInt64
    var total: UInt64
    var stored: UInt64 = 0
    var file: DeviceFile
}

extension Node {
    static let installChunkBytes = 512 << 10
    static let installWindow: UInt64 = 4
    static let installMagic: UInt32 = 0x534E_4954  // "TINS" as bytes in the stream
    var installPath: String { directory + "/install-stream" }

    /// Reads that touch stored entries are answered only once the log holds the applied state's
    /// index committed (after an install, or a restart from a snapshot the log did not reach).
    var stateReadable: Bool { replica.raft.commitIndex >= broker.appliedIndex }

    // MARK: Leader

    /// Raft asked for a snapshot for `peer`: start a stream of the latest written snapshot.
    func startInstall(to peer: NodeID, into out: inout NodeOutput) {
        guard isLeader, lastSnapshotIndex > 0 else {
            out.notices.append("\(peer) needs a snapshot, but none is written yet")
            return
        }
        do {
            let file = try snapshots.read(lastSnapshotIndex)
            let base = replica.log.firstIndex - 1
            guard let baseTerm = try storage({ () throws(LogFailure) in try replica.raftLog.term(at: base) }), base <= file.index else {
                out.notices.append("\(peer) needs a snapshot, but snapshot \(file.index) does not cover the log's base \(base)")
                return
            }
            let queues = try Broker.queueBounds(inSnapshot: file.body)
            var w = WireWriter(capacity: 64 + queues.count * 28)
            w.u32(Node.installMagic)
            w.u8(1)
            w.u8(0)
            w.u16(0)
            w.u64(file.index)
            w.u64(file.term)
            w.u64(base)
            w.u64(baseTerm)
            w.u64(UInt64(file.body.count))
            w.u32(file.body.withUnsafeBytes { crc32c($0) })
            w.u32(UInt32(queues.count))
            for q in queues {
                w.u64(q.key.created)
                w.u32(q.key.queueID)
                w.u64(q.minOffset)
                w.u64(q.maxOffset)
            }
            var header = w.bytes
            let crc = header.withUnsafeBytes { crc32c($0) }
            withUnsafeBytes(of: crc.littleEndian) { header.append(contentsOf: $0) }
            let rows = queues.reduce(UInt64(0)) { $0 + ($1.maxOffset - $1.minOffset) * UInt64(QueueRow.bytes) }
            let install = OutgoingInstall(
                index: file.index, base: base, header: header, body: file.body, queues: queues, total: UInt64(header.count + file.body.count) + rows,
                lastProgress: now)
            installsOut[peer] = install
            out.notices.append(
                "\(peer) needs entries before \(replica.log.firstIndex), compacted here: sending snapshot \(file.index) (\(install.total) bytes)")
            sendInstallChunks(to: peer, into: &out)
        } catch {
            out.notices.append("cannot send a snapshot to \(peer): \(error)")
            installsOut[peer] = nil
        }
    }

    /// The bytes of the stream at `offset`, at most `count`.
    func installBytes(_ t: OutgoingInstall, at offset: UInt64, count: Int) throws(StorageError) -> [UInt8] {
        var out: [UInt8] = []
        var at = offset
        let end = min(t.total, offset + UInt64(count))
        let h = UInt64(t.header.count), b = UInt64(t.body.count)
        if at < h {
            out += t.header[Int(at)..<Int(min(end, h))]
            at = min(end, h)
        }
        if at < end && at < h + b {
            out += t.body[Int(at - h)..<Int(min(end, h + b) - h)]
            at = min(end, h + b)
        }
        var start = h + b
        for q in t.queues where at < end {
            let bytes = (q.maxOffset - q.minOffset) * UInt64(QueueRow.bytes)
            if at < start + bytes {
                let firstRow = (at - start) / UInt64(QueueRow.bytes)
                let lastRow = (min(end, start + bytes) - start + UInt64(QueueRow.bytes) - 1) / UInt64(QueueRow.bytes)
                let rows = try queueFiles.storedRows(q.key, from: q.minOffset + firstRow, count: Int(lastRow - firstRow))
                let skip = Int(at - start - firstRow * UInt64(QueueRow.bytes))
                let take = Int(min(end, start + bytes) - at)
                out += rows[skip..<(skip + take)]
                at += UInt64(take)
            }
            start += bytes
        }
        return out
    }

    func sendInstallChunks(to peer: NodeID, into out: inout NodeOutput) {
        guard var t = installsOut[peer] else { return }
        let window = Node.installWindow * UInt64(Node.installChunkBytes)
        do {
            while t.sent < t.total && t.sent < t.acked + window {
                let data = try installBytes(t, at: t.sent, count: Node.installChunkBytes)
                out.messages.append(replica.raft.message(to: peer, .snapshotChunk(index: t.index, offset: t.sent, total: t.total, data: data)))
                t.sent += UInt64(data.count)
            }
            installsOut[peer] = t
        } catch {
            out.notices.append("cannot send snapshot \(t.index) to \(peer): \(error)")
            installsOut[peer] = nil
        }
    }

    func installProgress(_ p: SnapshotProgress, into out: inout NodeOutput) {
        guard var t = installsOut[p.peer], t.index == p.index else { return }
        if p.nextOffset >= t.total {
            installsOut[p.peer] = nil
            return
        }
        if p.nextOffset < t.acked { t.sent = p.nextOffset }  // the follower lost what it held: from there
        if p.nextOffset != t.acked {
            t.acked = p.nextOffset
            t.lastProgress = now
        }
        t.sent = max(t.sent, t.acked)
        installsOut[p.peer] = t
        sendInstallChunks(to: p.peer, into: &out)
    }

    /// Leader, every tick: resend from what a follower acknowledged when a second passed
    /// without progress; forget everything when no longer leader.
    func retryInstalls(into out: inout NodeOutput) {
        if let i = installIn, replica.raft.leader != i.leader || isLeader {
            // The leader sending it is gone: its stream will not complete.
            device.closeFile(i.file)
            installIn = nil
            try? device.removeFile(installPath)
        }
        guard isLeader else {
            installsOut = [:]
            return
        }
        for peer in installsOut.keys.sorted() {
            guard var t = installsOut[peer], now >= t.lastProgress + 1_000 else { continue }
            t.sent = t.acked
            t.lastProgress = now
            installsOut[peer] = t
            sendInstallChunks(to: peer, into: &out)
        }
    }

    // MARK: Follower

    func receiveChunk(_ c: SnapshotChunk, into out: inout NodeOutput) throws(StorageError) {
        if var i = installIn, i.index == c.index, i.leader == c.from, i.total == c.total {
            if c.offset <= i.stored && c.offset + UInt64(c.data.count) > i.stored {
                let skip = Int(i.stored - c.offset)
                try device.writeNow(i.file, at: Int(i.stored), array: Array(c.data[skip...]))
                i.stored += UInt64(c.data.count - skip)
                installIn = i
            }
        } else if let done = lastInstall, done.leader == c.from, done.index == c.index, done.total == c.total {
            // The stream installed already: a chunk sent before the last answer arrived, or the
            // leader asking again because Raft's acknowledgement of the install was lost. Both
            // answers again: the stream's, and Raft's acknowledgement of the base (helper review:
            // without it the leader stayed `installing` and the follower was shut out).
            try absorb(replica.acknowledgeSnapshotChunk(to: c.from, index: c.index, nextOffset: c.total), into: &out)
            if replica.log.lastIndex >= done.base.index { try absorb(replica.installedSnapshot(base: done.base), into: &out) }
            return
        } else if c.offset == 0 {
            if let old = installIn { device.closeFile(old.file) }
            let file = try device.openFile(installPath, create: true)
            try device.truncate(file, bytes: 0)
            installIn = IncomingInstall(leader: c.from, index: c.index, total: c.total, file: file)
            return try receiveChunk(c, into: &out)
        } else {
            try absorb(replica.acknowledgeSnapshotChunk(to: c.from, index: c.index, nextOffset: 0), into: &out)
            return
        }
        guard let i = installIn else { return }
        if i.stored == i.total {
            try device.syncNow(i.file)
            installIn = nil
            let problem = try install(i, into: &out)
            device.closeFile(i.file)
            try device.removeFile(installPath)
            if let problem {
                out.notices.append("snapshot \(i.index) from \(i.leader) was not installed: \(problem)")
                try absorb(replica.acknowledgeSnapshotChunk(to: c.from, index: c.index, nextOffset: 0), into: &out)
                return
            }
            try absorb(replica.acknowledgeSnapshotChunk(to: c.from, index: c.index, nextOffset: i.total), into: &out)
        } else {
            try absorb(replica.acknowledgeSnapshotChunk(to: c.from, index: c.index, nextOffset: i.stored), into: &out)
        }
    }

    /// Installs a whole, synced stream. Returns what is wrong with it, if anything.
    func install(_ i: IncomingInstall, into out: inout NodeOutput) throws(StorageError) -> String? {
        let head = try device.read(i.file, at: 0, count: 56)
        guard head.count == 56 else { return "the stream is shorter than its header" }
        var r = WireReader(head)
        guard (try? r.u32()) == Node.installMagic, (try? r.u8()) == 1 else { return "the stream has no install header" }
        _ = try? r.u8()
        _ = try? r.u16()
        guard let index = try? r.u64(), let term = try? r.u64(), let base = try? r.u64(), let baseTerm = try? r.u64(),
            let bodyLength = try? r.u64(), let bodyCRC = try? r.u32(), let count = try? r.u32()
        else { return "the stream's header does not decode" }
        let headerBytes = 56 + Int(count) * 28
        let header = try device.read(i.file, at: 0, count: headerBytes + 4)
        guard header.count == headerBytes + 4 else { return "the stream is shorter than its header" }
        let crc = header.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<headerBytes])) }
        var q = WireReader(header, at: 56)
        var queues: [QueueFileBounds] = []
        for _ in 0..<count {
            guard let created = try? q.u64(), let queue = try? q.u32(), let lo = try? q.u64(), let hi = try? q.u64(), lo <= hi else {
                return "a queue in the stream's header does not decode"
            }
            queues.append(QueueFileBounds(key: QueueFileKey(created: created, queueID: queue), minOffset: lo, maxOffset: hi))
        }
        guard (try? q.u32()) == crc else { return "the stream's header fails its checksum" }
        guard base <= index else { return "the stream's base \(base) is after its snapshot \(index)" }
        let body = try device.read(i.file, at: headerBytes + 4, count: Int(bodyLength))
        guard body.count == Int(bodyLength), body.withUnsafeBytes({ crc32c($0) }) == bodyCRC else { return "the snapshot in the stream fails its checksum" }

        let takeState = index > broker.appliedIndex
        if takeState {
            // 0. Every row reads back whole, before anything here changes.
            var at = headerBytes + 4 + Int(bodyLength)
            for b in queues {
                var left = Int(b.maxOffset - b.minOffset)
                while left > 0 {
                    let n = min(left, 1 << 14)
                    let rows = try device.read(i.file, at: at, count: n * QueueRow.bytes)
                    guard rows.count == n * QueueRow.bytes else { return "the stream ends inside the rows of \(b.key)" }
                    guard QueueRow.allValid(rows) else { return "a row of \(b.key) in the stream fails its checksum" }
                    at += n * QueueRow.bytes
                    left -= n
                }
            }
            // 1. The queue files and the snapshot, durable, before anything else changes. From
            //    here a failure stops the node (the state in memory no longer matches the files);
            //    a restart finds what reached the disk.
            try queueFiles.wipe()
            at = headerBytes + 4 + Int(bodyLength)
            for b in queues {
                queueFiles.create(b.key, at: b.minOffset)
                var left = Int(b.maxOffset - b.minOffset)
                while left > 0 {
                    let n = min(left, 1 << 14)
                    let rows = try device.read(i.file, at: at, count: n * QueueRow.bytes)
                    guard rows.count == n * QueueRow.bytes else { throw StorageError(.corruption, "\(installPath) ends inside the rows of \(b.key)") }
                    try queueFiles.importRows(b.key, rows)
                    at += n * QueueRow.bytes
                    left -= n
                }
            }
            let durably = !config.raft.plantedBugs.contains(.installBeforeDurable)
            try queueFiles.sync(durably: durably)
            let snapshot = SnapshotFile(index: index, term: term, body: body)
            // The snapshots here name queue files that were just replaced: they go.
            for old in try snapshots.indexes() where old != index { try snapshots.remove(old) }
            try snapshots.write(snapshot, durably: durably)
            pendingSnapshot = nil  // taken before the install: its queue files are gone
            keptSnapshotBounds = [index: queues]
            keptSnapshotTrims = [index: (try? Broker.trimIndex(inSnapshot: body)) ?? 0]
            lastSnapshotIndex = index
            lastSnapshotWrittenAt = now
        }
        // 2. The log continues after the leader's base (recorded before the files go) when it
        //    ends before the base or holds another entry there (not committed, then). A log
        //    that holds the base entry, or was compacted past it (its front is committed), stays.
        let log = replica.log
        var diverges = false
        if base >= log.firstIndex && base <= log.lastIndex {
            diverges = try storage { () throws(LogFailure) in try replica.raftLog.term(at: base) } != baseTerm
        }
        if log.lastIndex < base || diverges { try replica.resetLog(to: LogBase(index: base, term: baseTerm)) }
        // 3. The state.
        if takeState {
            let candidate = Broker(config: brokerConfig, source: self, queueFiles: queueFiles)
            if let problem = try candidate.restore(body) {
                throw StorageError(.corruption, "snapshot \(index), installed and written, does not load: \(problem)")
            }
            broker = candidate
            lastAppliedTerm = term
            out.installed = (index, out.applied.count)
        }
        out.notices.append(
            "installed snapshot \(index) from \(i.leader)\(takeState ? "" : " (its log base only: the state here was already at \(broker.appliedIndex))"); the log continues after \(base)"
        )
        lastInstall = (i.leader, i.index, i.total, LogBase(index: base, term: baseTerm))
        // The configuration the state holds (or, when the state here was ahead, the one it applied).
        try absorb(replica.installedSnapshot(base: LogBase(index: base, term: baseTerm), membership: appliedMembership), into: &out)
        return nil
    }
}
