// The key index on disk: a hash index of (topic, key) -> message id, kept in the consume-queue
// files. A message's keys are hashed (CRC32C of topic, a zero byte, key) into one of
// `keyBuckets` buckets; each bucket is a queue of the reserved topic `#keys` (a name no user
// topic can have), and each key adds a row to its bucket as the send applies: the message's id,
// the entry holding it, and the full hash in the tag-hash field. So the index is written,
// synced, named in snapshots, cut back at restart, sent in installs and trimmed by retention
// exactly as the consume queues are, and memory holds only each bucket's few unwritten rows.
//
// A lookup reads its bucket from the newest row back, a chunk at a time, keeps rows whose hash
// matches, and checks each candidate against the message itself (topic and keys), so hash
// collisions and messages of a deleted topic never show. A lookup that finds fewer than asked
// reads the whole bucket: about 1/64 of the retained keyed messages' rows (32 bytes each).
import TernProtocol
import TernStorage

extension Broker {
    /// The reserved topic whose queues are the key index's buckets.
    public static let keyIndexTopic = "#keys"
    /// Buckets of the key index. Part of the format: changing it needs a rebuild.
    public static let keyBuckets: UInt32 = 64
    static let keyLookupChunk = 256

    /// CRC32C of the topic's bytes, a zero byte and the key's, without building them (the
    /// apply path hashes every key of every message).
    static func keyHash(topic: String, key: String) -> UInt32 {
        var crc = topicHash(topic)
        crc = withUnsafeBytes(of: UInt8(0)) { crc32c($0, continuing: crc) }
        var k = key
        return k.withUTF8 { crc32c(UnsafeRawBufferPointer($0), continuing: crc) }
    }

    static func keyBucket(_ hash: UInt32) -> QueueRef { QueueRef(topic: keyIndexTopic, queueID: hash % keyBuckets) }

    /// Indexes `key` of the message `id` of `topic` (applied at `index`).
    func indexKey(_ key: String, topic: String, id: MessageID, index: UInt64) throws(StorageError) {
        let hash = Broker.keyHash(topic: topic, key: key)
        let bucket = Broker.keyBucket(hash)
        if queues[bucket] == nil { createQueue(bucket, created: index) }
        try appendRow(bucket, QueueRow(entryIndex: id.entryIndex, position: 0, slot: id.slot, tagHash: hash))
    }

    /// The most recent messages of `topic` with `key` (at most `max`), oldest first.
    public func messages(topic: String, key: String, max: Int) throws(StorageError) -> [ReceivedMessage] {
        let hash = Broker.keyHash(topic: topic, key: key)
        guard max > 0, let file = queues[Broker.keyBucket(hash)], let b = queueFiles.bounds(file) else { return [] }
        var found: [ReceivedMessage] = []
        var seen: Set<MessageID> = []
        var end = b.max
        while end > b.min && found.count < max {
            let start = end - Swift.min(UInt64(Broker.keyLookupChunk), end - b.min)
            let rows = try queueFiles.rows(file, from: start, count: Int(end - start))
            for r in rows.reversed() where r.tagHash == hash {
                let id = MessageID(entryIndex: r.entryIndex, slot: r.slot)
                guard seen.insert(id).inserted, let m = try message(id), m.topic == topic,
                    m.message.keys.contains(key) || m.message.properties[DedupeProperty.clientMessageID] == key
                else { continue }
                found.append(m)
                if found.count == max { break }
            }
            end = start
        }
        return found.reversed()
    }
}

// The late-place index: where a message delivered later than it was stored (a released delayed
// message, a committed half message) went. Its row in its queue names the entry carrying its
// copy, not its own, so a lookup by id cannot derive it from the id. Hashed by id into 64
// buckets of the reserved topic `#late`; a row holds the id, the copy's entry as stored index
// (so retention trims these buckets as it does queues), the queue number in the position field
// and the CRC32C of the topic's name in the tag-hash field.
extension Broker {
    public static let lateIndexTopic = "#late"

    static func lateBucket(_ id: MessageID) -> QueueRef {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: id.entryIndex.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: id.slot.littleEndian) { bytes += $0 }
        // Numbered after the key index's buckets: a queue's files are named by the entry that
        // created it and its number, and one entry may create buckets of both.
        return QueueRef(topic: lateIndexTopic, queueID: keyBuckets + bytes.withUnsafeBytes { crc32c($0) } % keyBuckets)
    }

    static func topicHash(_ topic: String) -> UInt32 {
        var t = topic
        return t.withUTF8 { crc32c(UnsafeRawBufferPointer($0)) }
    }

    func indexLatePlace(_ id: MessageID, queue: QueueRef, storedIndex: UInt64) throws(StorageError) {
        let bucket = Broker.lateBucket(id)
        if queues[bucket] == nil { createQueue(bucket, created: appliedIndex) }
        try appendRow(
            bucket,
            QueueRow(entryIndex: id.entryIndex, storedIndex: storedIndex, position: queue.queueID, slot: id.slot, tagHash: Broker.topicHash(queue.topic)))
    }

    /// Where the late message `id` was indexed: its queue number, its topic's name hash and the
    /// entry its row names. nil when it was not (or retention passed it).
    func latePlace(_ id: MessageID) throws(StorageError) -> (queueID: UInt32, topicHash: UInt32, storedIndex: UInt64)? {
        guard let file = queues[Broker.lateBucket(id)], let b = queueFiles.bounds(file) else { return nil }
        var end = b.max
        while end > b.min {
            let start = end - Swift.min(UInt64(Broker.keyLookupChunk), end - b.min)
            for r in try queueFiles.rows(file, from: start, count: Int(end - start)).reversed() where r.entryIndex == id.entryIndex && r.slot == id.slot {
                return (r.position, r.tagHash, r.storedIndex)
            }
            end = start
        }
        return nil
    }
}
