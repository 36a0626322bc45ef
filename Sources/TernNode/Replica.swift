// A replica: Raft on the commitlog, with its term and vote in a small state file, composed so
// that the real server shell and the simulator drive exactly the same code. It owns no thread,
// clock or socket: time arrives as `tick`, messages as `receive`, disk completions as
// `diskCompleted`, and what must leave (messages, entries to apply) comes back as `Output`.
import TernRaft
import TernStorage

/// The commitlog as Raft's log: entries converted between the two types (their bodies are
/// shared, not copied), storage errors carried through Raft as `LogFailure` and turned back into
/// `StorageError` by `Replica`.
final class CommitlogRaftLog: RaftLog {
    let log: Commitlog
    /// The last entry compacted away (retention, or a snapshot install) and its term: appends
    /// that follow it are checked against this term.
    var base: LogBase
    init(_ log: Commitlog, base: LogBase) {
        self.log = log
        self.base = base
    }

    var firstIndex: UInt64 { log.firstIndex }
    var lastIndex: UInt64 { log.lastIndex }
    var durableIndex: UInt64 { log.durableIndex }

    func term(at index: UInt64) throws(LogFailure) -> UInt64? {
        if index == base.index && index > 0 && index < log.firstIndex { return base.term }
        do { return try log.term(at: index) } catch { throw LogFailure(error) }
    }

    func read(from index: UInt64, maxBytes: Int) throws(LogFailure) -> [Entry] {
        do {
            return try log.read(from: index, maxBytes: maxBytes).map { Entry(index: $0.index, term: $0.term, type: $0.type, body: $0.body) }
        } catch {
            throw LogFailure(error)
        }
    }

    func append(_ entries: [Entry]) throws(LogFailure) {
        do { try log.append(entries.map { LogEntry(index: $0.index, term: $0.term, type: $0.type, body: $0.body) }) } catch { throw LogFailure(error) }
    }

    func truncate(after index: UInt64) throws(LogFailure) {
        do { try log.truncate(after: index) } catch { throw LogFailure(error) }
    }
}

/// Runs a Raft call, turning a log failure back into the storage error under it.
@inline(__always)
func storage<T>(_ body: () throws(LogFailure) -> T) throws(StorageError) -> T {
    do {
        return try body()
    } catch {
        if let e = error.underlying as? StorageError { throw e }
        throw StorageError(.failed, "Raft's log failed: \(error)")
    }
}

/// What a replica asks its driver to do after an input, in this order: send `messages`, then
/// apply `apply` (committed entries, in index order). The hard state was already made durable.
public struct ReplicaOutput: Sendable {
    public var messages: [Message] = []
    public var apply: [LogEntry] = []
    public var role: Role?
    /// A vote for another member was made durable during this input.
    public var votedNow = false
    /// Snapshot installs (Raft's `Effects` of the same names).
    public var snapshotRequests: [NodeID] = []
    public var snapshotChunks: [SnapshotChunk] = []
    public var snapshotProgress: [SnapshotProgress] = []
    public init() {}
}

/// The last index removed from the front of the log and its term (index 0: nothing removed).
public struct LogBase: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public init(index: UInt64 = 0, term: UInt64 = 0) {
        self.index = index
        self.term = term
    }
}

public final class Replica {
    /// Entry bytes applied per input, at most (one entry more when a single one is larger).
    static let applyBytesPerInput = 64 << 20
    public let id: NodeID
    public let raft: Raft
    public let log: Commitlog
    let device: any StorageDevice
    let stateFile: RaftStateFile
    let raftLog: CommitlogRaftLog
    var reportedCommit: UInt64 = 0
    /// Set when the log was reset at start to continue its base (an install was interrupted).
    public private(set) var resetReport: String?
    public var base: LogBase { raftLog.base }

    /// Opens (recovering) the log and the state file under `directory` and starts as a follower.
    /// The state machine is rebuilt by applying the log again from its start. `lostDisk`: this
    /// member's data is gone (a replaced disk): it rejoins without voting until it is safe
    /// (docs/raft.md); ignored when a state file exists.
    public init(
        config: RaftConfig, device: any StorageDevice, directory: String, logOptions: CommitlogOptions, seed: UInt64, lostDisk: Bool = false
    ) throws(StorageError) {
        self.id = config.id
        self.device = device
        try device.createDirectory(directory)
        log = try Commitlog(directory: directory + "/log", device: device, options: logOptions)
        stateFile = RaftStateFile(device: device, path: directory + "/raft-state")
        var (hardState, base) = try stateFile.read()
        if lostDisk && !device.fileExists(directory + "/raft-state") {
            hardState.rejoining = true
            try stateFile.write(hardState, base: base)
        }
        if hardState.incarnation == 0 {
            // A new replica (or a state file from before incarnations): it draws its incarnation,
            // kept for good (docs/raft.md, "Membership").
            var rng = SplitMix64(seed: seed ^ 0x1CA7_7A71_0BAD_5EED)
            repeat { hardState.incarnation = rng.next() } while hardState.incarnation == 0
            try stateFile.write(hardState, base: base)
        }
        if base.index > 0 {
            // The log must start right after the base or hold the base entry itself. Otherwise a
            // reset to the base (a snapshot install) was interrupted before the log's files
            // went: finish it.
            let startsAfterBase = log.firstIndex == base.index + 1
            let inLog = base.index >= log.firstIndex && base.index <= log.lastIndex
            let holdsBase = inLog ? try log.term(at: base.index) == base.term : false
            if !startsAfterBase && !holdsBase {
                resetReport = "the log (\(log.firstIndex)...\(log.lastIndex)) does not continue its base \(base.index); it restarts after the base"
                try log.reset(nextIndex: base.index + 1)
            }
        }
        if config.plantedBugs.contains(.losePersistedVote) { hardState.vote = nil }
        raftLog = CommitlogRaftLog(log, base: base)
        raft = Raft(config: config, log: raftLog, hardState: hardState, appliedIndex: 0, seed: seed)
    }

    /// Removes whole segments of the log up to `index` (committed, and covered by a snapshot),
    /// recording the new base first, so that a crash in between leaves a base the log agrees with.
    /// Returns how many segments went.
    @discardableResult
    public func compact(through index: UInt64) throws(StorageError) -> Int {
        guard let last = log.lastIndexOfSegments(through: index), last > base.index else { return 0 }
        guard let t = try log.term(at: last) else { return 0 }
        try persistBase(LogBase(index: last, term: t))
        return try log.deleteSegments(through: last)
    }

    /// Drops the whole log and makes it continue after `base` (a snapshot install: entries up to
    /// the base are covered by the installed state). The base is recorded before the files go.
    public func resetLog(to newBase: LogBase) throws(StorageError) {
        try persistBase(newBase)
        try log.reset(nextIndex: newBase.index + 1)
        reportedCommit = min(reportedCommit, newBase.index)
    }

    private func persistBase(_ b: LogBase) throws(StorageError) {
        try stateFile.write(raft.hardState, base: b)
        raftLog.base = b
    }

    public func tick(_ count: Int = 1) throws(StorageError) -> ReplicaOutput {
        try process(storage { () throws(LogFailure) in try raft.tick(count) })
    }

    public func receive(_ m: Message) throws(StorageError) -> ReplicaOutput {
        try process(storage { () throws(LogFailure) in try raft.step(m) })
    }

    public func propose(_ entries: [(type: UInt8, body: [UInt8])]) throws(StorageError) -> (ProposeResult, ReplicaOutput) {
        let (result, effects) = try storage { () throws(LogFailure) in try raft.propose(entries) }
        return (result, try process(effects))
    }

    public func proposeMembership(_ change: MembershipChange) throws(StorageError) -> (Result<UInt64, MembershipRefusal>, ReplicaOutput) {
        let (result, effects) = try storage { () throws(LogFailure) in try raft.proposeMembership(change) }
        return (result, try process(effects))
    }

    public func transferLeadership(to target: NodeID) throws(StorageError) -> ReplicaOutput {
        try process(storage { () throws(LogFailure) in try raft.transferLeadership(to: target) })
    }

    /// The device reported batches done: advance the log and let Raft acknowledge.
    public func diskCompleted() throws(StorageError) -> ReplicaOutput {
        try log.pump(wait: false)
        return try process(storage { () throws(LogFailure) in try raft.persisted() })
    }

    /// Follower: the node stored a snapshot stream up to `nextOffset`.
    public func acknowledgeSnapshotChunk(to leader: NodeID, index: UInt64, nextOffset: UInt64) throws(StorageError) -> ReplicaOutput {
        try process(raft.acknowledgeSnapshotChunk(to: leader, index: index, nextOffset: nextOffset))
    }

    /// Follower: a snapshot was installed; the log was reset to continue after `base`.
    public func installedSnapshot(base: LogBase, membership: (index: UInt64, membership: Membership)? = nil) throws(StorageError) -> ReplicaOutput {
        try process(raft.installedSnapshot(base: base.index, membership: membership))
    }

    /// Nothing usable was found at start (no snapshot that fits a log compacted past its
    /// start): the log is dropped and the member rejoins as after a lost disk (docs/raft.md),
    /// receiving the group's state by a snapshot install.
    public func dropLogAndRejoin() throws(StorageError) -> ReplicaOutput {
        try resetLog(to: LogBase())
        return try process(raft.beginRejoin())
    }

    private func process(_ effects: Effects) throws(StorageError) -> ReplicaOutput {
        // 1. Term and vote reach the disk before any message that depends on them leaves.
        var out = ReplicaOutput()
        if let hs = effects.hardState {
            try stateFile.write(hs, base: raftLog.base)
            out.votedNow = hs.vote != nil && hs.vote != id
        }
        out.messages = effects.messages
        out.role = effects.role
        out.snapshotRequests = effects.snapshotRequests
        out.snapshotChunks = effects.snapshotChunks
        out.snapshotProgress = effects.snapshotProgress
        // 2. Committed entries, read back from the log (verified), to apply: at most about
        //    `applyBytesPerInput` per input, so a long replay (a restart, a follower far
        //    behind) holds a bounded amount in memory and lets other inputs in between; the
        //    rest is applied on the next inputs (ticks come every few tens of milliseconds).
        // What Raft reported committed (the same as its commit index, but for the
        // `applyUncommitted` planted bug, which reports more).
        if let c = effects.commitIndex { reportedCommit = max(reportedCommit, c) }
        let commit = min(max(raft.commitIndex, reportedCommit), log.lastIndex)
        var next = raft.appliedIndex + 1
        var bytes = 0
        while next <= commit && bytes < Replica.applyBytesPerInput {
            let entries = try log.read(from: next, maxBytes: 1 << 20).filter { $0.index <= commit }
            if entries.isEmpty { break }
            out.apply += entries
            bytes += entries.reduce(0) { $0 + $1.body.count + 64 }
            next = entries.last!.index + 1
        }
        if let last = out.apply.last { raft.applied(last.index) }
        return out
    }
}

/// Term, vote, incarnation and the log's base, written atomically: to a temporary file, synced,
/// renamed over the old one, directory synced. Layout (version 3): magic "TRST" u32, version u8,
/// vote length u8 (0 = no vote), rejoining u8 (1 while rejoining after a lost disk), a zero
/// byte, term u64, base index u64, base term u64, incarnation u64, vote name (UTF-8, at most 255
/// bytes), CRC32C of everything before it u32. Versions 1 (no base fields) and 2 (no
/// incarnation) are still read.
public struct RaftStateFile {
    let device: any StorageDevice
    let path: String
    static let magic: UInt32 = 0x5453_5254

    public init(device: any StorageDevice, path: String) {
        self.device = device
        self.path = path
    }

    public func read() throws(StorageError) -> (HardState, LogBase) {
        guard device.fileExists(path) else { return (HardState(), LogBase()) }
        let file = try device.openFile(path, create: false)
        defer { device.closeFile(file) }
        let b = try device.read(file, at: 0, count: try device.fileSize(file))
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }
        guard b.count >= 20, u32(0) == RaftStateFile.magic, (1...3).contains(b[4]), b[6] <= 1 else {
            throw StorageError(.corruption, "\(path) is not a Raft state file (\(b.count) bytes)")
        }
        let header = [1: 16, 2: 32, 3: 40][Int(b[4])]!
        let voteLength = Int(b[5])
        guard b.count == header + voteLength + 4 else { throw StorageError(.corruption, "\(path) is \(b.count) bytes, not a Raft state file") }
        let crc = b.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<(header + voteLength)])) }
        guard u32(header + voteLength) == crc else { throw StorageError(.corruption, "\(path) fails its checksum") }
        let vote = voteLength == 0 ? nil : NodeID(String(decoding: b[header..<(header + voteLength)], as: UTF8.self))
        let base = header >= 32 ? LogBase(index: u64(16), term: u64(24)) : LogBase()
        let incarnation = header >= 40 ? u64(32) : 0
        return (HardState(term: u64(8), vote: vote, rejoining: b[6] == 1, incarnation: incarnation), base)
    }

    public func write(_ state: HardState, base: LogBase) throws(StorageError) {
        let name = Array((state.vote?.name ?? "").utf8)
        precondition(name.count <= 255, "node id longer than 255 bytes")
        var bytes = [UInt8](repeating: 0, count: 40 + name.count + 4)
        bytes.withUnsafeMutableBytes { b in
            b.storeBytes(of: RaftStateFile.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            b[4] = 3
            b[5] = UInt8(name.count)
            b[6] = state.rejoining ? 1 : 0
            b.storeBytes(of: state.term.littleEndian, toByteOffset: 8, as: UInt64.self)
            b.storeBytes(of: base.index.littleEndian, toByteOffset: 16, as: UInt64.self)
            b.storeBytes(of: base.term.littleEndian, toByteOffset: 24, as: UInt64.self)
            b.storeBytes(of: state.incarnation.littleEndian, toByteOffset: 32, as: UInt64.self)
            for (k, c) in name.enumerated() { b[40 + k] = c }
            let crc = crc32c(UnsafeRawBufferPointer(rebasing: b[0..<(40 + name.count)]))
            b.storeBytes(of: crc.littleEndian, toByteOffset: 40 + name.count, as: UInt32.self)
        }
        let temporary = path + ".tmp"
        let file = try device.openFile(temporary, create: true)
        defer { device.closeFile(file) }
        try device.truncate(file, bytes: 0)
        try device.writeNow(file, at: 0, array: bytes)
        try device.syncNow(file)
        try device.renameFile(temporary, to: path)
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
        try device.syncDirectory(directory)
    }
}
