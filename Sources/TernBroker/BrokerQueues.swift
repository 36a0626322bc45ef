// The broker's consume queues: a queue is its files in `ConsumeQueueFiles` (rows on disk, the
// latest few in memory), named by the entry that created it. These helpers give the rest of the
// broker a queue's bounds and its rows, read in chunks.
import TernProtocol
import TernStorage

/// A queue's files and bounds at one moment.
struct QueueView {
    let key: QueueFileKey
    let baseOffset: UInt64
    let maxOffset: UInt64
}

/// Reads a queue's rows front to back, a chunk at a time.
struct RowCursor {
    let files: ConsumeQueueFiles
    let key: QueueFileKey
    var chunk: [QueueRow] = []
    var chunkStart: UInt64 = 0
    static let chunkRows = 64

    init(_ files: ConsumeQueueFiles, _ key: QueueFileKey) {
        self.files = files
        self.key = key
    }

    /// The row at `offset` (which must be inside the queue), and the next one when the same
    /// chunk holds it.
    mutating func row(at offset: UInt64) throws(StorageError) -> (QueueRow, next: QueueRow?) {
        if offset < chunkStart || offset >= chunkStart + UInt64(chunk.count) {
            chunk = try files.rows(key, from: offset, count: RowCursor.chunkRows)
            chunkStart = offset
            guard !chunk.isEmpty else { throw StorageError(.corruption, "consume queue \(key) has no row \(offset)") }
        }
        let k = Int(offset - chunkStart)
        return (chunk[k], k + 1 < chunk.count ? chunk[k + 1] : nil)
    }
}

extension Broker {
    /// A topic's queue (never a queue of a reserved topic, `#...`: the key and late-place indexes, the timer log).
    func queue(_ ref: QueueRef) -> QueueView? {
        guard !ref.topic.hasPrefix("#") else { return nil }
        return storedQueue(ref)
    }

    /// Any queue in the files: a topic's, or one of a reserved topic.
    func storedQueue(_ ref: QueueRef) -> QueueView? {
        guard let key = queues[ref], let b = queueFiles.bounds(key) else { return nil }
        return QueueView(key: key, baseOffset: b.min, maxOffset: b.max)
    }

    func createQueue(_ ref: QueueRef, created index: UInt64) {
        let key = QueueFileKey(created: index, queueID: ref.queueID)
        queues[ref] = key
        queueFiles.create(key)
    }

    func removeQueue(_ ref: QueueRef) throws(StorageError) {
        guard let key = queues.removeValue(forKey: ref) else { return }
        try queueFiles.remove(key)
    }

    /// Appends a row to the queue; returns its offset.
    @discardableResult
    func appendRow(_ ref: QueueRef, _ row: QueueRow) throws(StorageError) -> UInt64 {
        try queueFiles.append(queues[ref]!, row)
    }

    func row(_ ref: QueueRef, at offset: UInt64) throws(StorageError) -> QueueRow? {
        guard let key = queues[ref] else { return nil }
        return try queueFiles.row(key, at: offset)
    }
}
