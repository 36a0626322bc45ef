@testable import TernRaft

/// An in-memory RaftLog. Appends are durable only when `persist()` says so (or at once with
/// `autoPersist`), so tests can hold a node's fsync back.
final class MemoryLog: RaftLog {
    var entries: [Entry] = []
    var durableIndex: UInt64 = 0
    var autoPersist = true
    /// Entries before `base + 1` were dropped (`reset`, as after a snapshot install).
    var base: UInt64 = 0
    var firstIndex: UInt64 { base + 1 }
    var lastIndex: UInt64 { entries.last?.index ?? base }

    /// Drops every entry; the log continues after `index`.
    func reset(after index: UInt64) {
        entries = []
        base = index
        durableIndex = index
    }

    init(terms: [UInt64] = []) {
        for (k, t) in terms.enumerated() { entries.append(Entry(index: UInt64(k + 1), term: t, body: [])) }
        durableIndex = lastIndex
    }

    func term(at index: UInt64) -> UInt64? {
        if index == 0 { return 0 }
        guard index > base, index <= lastIndex else { return nil }
        return entries[Int(index - base - 1)].term
    }
    func read(from index: UInt64, maxBytes: Int) -> [Entry] {
        guard index > base, index <= lastIndex else { return [] }
        var out: [Entry] = []
        var used = 0
        for e in entries[Int(index - base - 1)...] {
            if !out.isEmpty && used + e.body.count + 40 > maxBytes { break }
            out.append(e)
            used += e.body.count + 40
        }
        return out
    }
    func append(_ new: [Entry]) {
        for e in new {
            precondition(e.index == lastIndex + 1, "non-contiguous append")
            entries.append(e)
        }
        if autoPersist { durableIndex = lastIndex }
    }
    func truncate(after index: UInt64) {
        entries.removeLast(entries.count - Int(index - base))
        durableIndex = min(durableIndex, index)
    }
    func persist() { durableIndex = lastIndex }
    var terms: [UInt64] { entries.map(\.term) }
}

/// A few Raft nodes wired together by a message queue, with dropped links and isolated nodes:
/// the etcd tests' `network`, in Swift.
final class Network {
    var nodes: [NodeID: Raft] = [:]
    var logs: [NodeID: MemoryLog] = [:]
    var ids: [NodeID]
    var queue: [Message] = []
    var cut: Set<[NodeID]> = []  // directed links that drop everything
    var isolated: Set<NodeID> = []
    var delivered: [Message] = []
    var hardStates: [NodeID: HardState] = [:]

    init(_ count: Int, logs initial: [[UInt64]] = [], configure: (inout RaftConfig) -> Void = { _ in }) {
        ids = (1...count).map { NodeID("n\($0)") }
        // Every node starts in the highest term any given log reached, as after real history.
        let startTerm = initial.compactMap { $0.last }.max() ?? 0
        for (k, id) in ids.enumerated() {
            var config = RaftConfig(id: id, members: ids)
            configure(&config)
            let log = MemoryLog(terms: k < initial.count ? initial[k] : [])
            logs[id] = log
            nodes[id] = Raft(config: config, log: log, hardState: HardState(term: startTerm), seed: UInt64(k + 1))
        }
    }

    subscript(_ name: String) -> Raft { nodes[NodeID(name)]! }
    func log(_ name: String) -> MemoryLog { logs[NodeID(name)]! }

    func absorb(_ from: NodeID, _ effects: Effects) {
        if let hs = effects.hardState { hardStates[from] = hs }
        queue.append(contentsOf: effects.messages)
    }

    /// Delivers messages until none are left (bounded, so a livelock fails the test).
    func settle(limit: Int = 100_000) {
        var steps = 0
        while !queue.isEmpty {
            steps += 1
            precondition(steps < limit, "network did not settle")
            let m = queue.removeFirst()
            if isolated.contains(m.from) || isolated.contains(m.to) || cut.contains([m.from, m.to]) { continue }
            if nodes[m.to] == nil { continue }  // a member added but not started
            delivered.append(m)
            absorb(m.to, try! nodes[m.to]!.step(m))
        }
    }

    func tick(_ name: String, times: Int = 1) {
        for _ in 0..<times { absorb(NodeID(name), try! self[name].tick()) }
        settle()
    }

    func tickAll(times: Int = 1) {
        for _ in 0..<times {
            for id in ids { absorb(id, try! nodes[id]!.tick()) }
            settle()
        }
    }

    /// Ticks `name` until it campaigns, then lets the network settle.
    func elect(_ name: String) {
        let node = self[name]
        for _ in 0..<(node.config.electionTimeoutTicks * 2 + 1) {
            absorb(NodeID(name), try! node.tick())
            if node.role != .follower { break }
        }
        settle()
    }

    func propose(_ name: String, _ body: String) -> ProposeResult {
        let (result, effects) = try! self[name].propose([(type: 16, body: Array(body.utf8))])
        absorb(NodeID(name), effects)
        settle()
        return result
    }

    func persist(_ name: String) {
        log(name).persist()
        absorb(NodeID(name), try! self[name].persisted())
        settle()
    }

    func cutLink(_ a: String, _ b: String) {
        cut.insert([NodeID(a), NodeID(b)])
        cut.insert([NodeID(b), NodeID(a)])
    }
    func isolate(_ name: String) { isolated.insert(NodeID(name)) }
    func heal() { cut.removeAll(); isolated.removeAll() }

    var leaders: [NodeID] { ids.filter { nodes[$0]!.role == .leader } }
}
