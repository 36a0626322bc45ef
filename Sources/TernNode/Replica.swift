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
    init(_ log: Commitlog) { self.log = log }

    var firstIndex: UInt64 { log.firstIndex }
    var lastIndex: UInt64 { log.lastIndex }
    var durableIndex: UInt64 { log.durableIndex }

    func term(at index: UInt64) throws(LogFailure) -> UInt64? {
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
    public init() {}
}

public final class Replica {
    public let id: NodeID
    public let raft: Raft
    public let log: Commitlog
    let device: any StorageDevice
    let stateFile: RaftStateFile

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
        var hardState = try stateFile.read()
        if lostDisk && !device.fileExists(directory + "/raft-state") {
            hardState.rejoining = true
            try stateFile.write(hardState)
        }
        if config.plantedBugs.contains(.losePersistedVote) { hardState.vote = nil }
        raft = Raft(config: config, log: CommitlogRaftLog(log), hardState: hardState, appliedIndex: 0, seed: seed)
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

    public func transferLeadership(to target: NodeID) throws(StorageError) -> ReplicaOutput {
        try process(storage { () throws(LogFailure) in try raft.transferLeadership(to: target) })
    }

    /// The device reported batches done: advance the log and let Raft acknowledge.
    public func diskCompleted() throws(StorageError) -> ReplicaOutput {
        try log.pump(wait: false)
        return try process(storage { () throws(LogFailure) in try raft.persisted() })
    }

    private func process(_ effects: Effects) throws(StorageError) -> ReplicaOutput {
        // 1. Term and vote reach the disk before any message that depends on them leaves.
        var out = ReplicaOutput()
        if let hs = effects.hardState {
            try stateFile.write(hs)
            out.votedNow = hs.vote != nil && hs.vote != id
        }
        out.messages = effects.messages
        out.role = effects.role
        // 2. Committed entries, read back from the log (verified), to apply.
        if let commit = effects.commitIndex {
            var next = raft.appliedIndex + 1
            while next <= commit {
                let entries = try log.read(from: next, maxBytes: 1 << 20).filter { $0.index <= commit }
                if entries.isEmpty { break }
                out.apply += entries
                next = entries.last!.index + 1
            }
            if let last = out.apply.last { raft.applied(last.index) }
        }
        return out
    }
}

/// Term and vote, written atomically: to a temporary file, synced, renamed over the old one,
/// directory synced. Layout: magic "TRST" u32, version u8, vote length u8 (0 = no vote),
/// rejoining u8 (1 while rejoining after a lost disk), a zero byte, term u64, vote name (UTF-8,
/// at most 255 bytes), CRC32C of everything before it u32.
public struct RaftStateFile {
    let device: any StorageDevice
    let path: String
    static let magic: UInt32 = 0x5453_5254

    public init(device: any StorageDevice, path: String) {
        self.device = device
        self.path = path
    }

    public func read() throws(StorageError) -> HardState {
        guard device.fileExists(path) else { return HardState() }
        let file = try device.openFile(path, create: false)
        defer { device.closeFile(file) }
        let b = try device.read(file, at: 0, count: try device.fileSize(file))
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }
        guard b.count >= 20, u32(0) == RaftStateFile.magic, b[4] == 1, b[6] <= 1, b.count == 16 + Int(b[5]) + 4 else {
            throw StorageError(.corruption, "\(path) is not a Raft state file (\(b.count) bytes)")
        }
        let voteLength = Int(b[5])
        let crc = b.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<(16 + voteLength)])) }
        guard u32(16 + voteLength) == crc else { throw StorageError(.corruption, "\(path) fails its checksum") }
        let vote = voteLength == 0 ? nil : NodeID(String(decoding: b[16..<(16 + voteLength)], as: UTF8.self))
        return HardState(term: u64(8), vote: vote, rejoining: b[6] == 1)
    }

    public func write(_ state: HardState) throws(StorageError) {
        let name = Array((state.vote?.name ?? "").utf8)
        precondition(name.count <= 255, "node id longer than 255 bytes")
        var bytes = [UInt8](repeating: 0, count: 16 + name.count + 4)
        bytes.withUnsafeMutableBytes { b in
            b.storeBytes(of: RaftStateFile.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            b[4] = 1
            b[5] = UInt8(name.count)
            b[6] = state.rejoining ? 1 : 0
            b.storeBytes(of: state.term.littleEndian, toByteOffset: 8, as: UInt64.self)
            for (k, c) in name.enumerated() { b[16 + k] = c }
            let crc = crc32c(UnsafeRawBufferPointer(rebasing: b[0..<(16 + name.count)]))
            b.storeBytes(of: crc.littleEndian, toByteOffset: 16 + name.count, as: UInt32.self)
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
