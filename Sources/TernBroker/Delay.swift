// Delayed and scheduled messages. A send whose messages carry `DELAY` (a RocketMQ delay level,
// 1 to 18), `TIMER_DELAY_MS` (a delay from when the leader stores it) or `TIMER_DELIVER_MS` (a
// time, ms since 1970) is stored in the log like any other,
// but indexed in the timer instead of its queue. When the leader's clock reaches a message's
// time, the leader proposes a release entry naming it; applying the release indexes the message
// in its queue. The timer is derived from the log (rebuilt by applying it), so a failover
// neither loses nor repeats a release: the next leader finds the same pending messages, and a
// release of a message no longer pending does nothing.
import TernProtocol

public enum Delay {
    /// RocketMQ's delay levels 1...18, in milliseconds.
    public static let levels: [UInt64] = [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200].map { $0 * 1000 }
    public static let levelProperty = "DELAY"
    public static let deliverAtProperty = "TIMER_DELIVER_MS"
    /// A delay in milliseconds from when the leader stores the message.
    public static let delayMillisProperty = "TIMER_DELAY_MS"

    /// When the message is due: nil for an ordinary message (or a time already passed); an error
    /// for a bad level, a bad time, or one beyond the maximum delay.
    public static func deliverAt(_ properties: [String: String], storeTimestamp: UInt64, maxDelayMillis: UInt64) -> Result<UInt64?, ErrorBody> {
        var at: UInt64?
        if let text = properties[levelProperty] {
            guard let level = Int(text), level >= 1, level <= levels.count else {
                return .failure(ErrorBody(code: ErrorCode.badRequest, message: "delay level \(text) is not 1 to \(levels.count)"))
            }
            at = storeTimestamp + levels[level - 1]
        }
        if let text = properties[deliverAtProperty] {
            guard at == nil else { return .failure(ErrorBody(code: ErrorCode.badRequest, message: "a message has a delay level or a delivery time, not both")) }
            guard let t = UInt64(text) else {
                return .failure(ErrorBody(code: ErrorCode.badRequest, message: "delivery time \(text) is not milliseconds since 1970"))
            }
            at = t
        }
        if let text = properties[delayMillisProperty] {
            guard at == nil else {
                return .failure(ErrorBody(code: ErrorCode.badRequest, message: "a message has one of a delay level, a delay or a delivery time"))
            }
            guard let d = UInt64(text) else { return .failure(ErrorBody(code: ErrorCode.badRequest, message: "delay \(text) is not milliseconds")) }
            at = storeTimestamp &+ d
        }
        guard let due = at, due > storeTimestamp else { return .success(nil) }
        guard due - storeTimestamp <= maxDelayMillis else {
            return .failure(
                ErrorBody(
                    code: ErrorCode.badRequest, message: "a delay of \((due - storeTimestamp) / 1000) s exceeds the maximum of \(maxDelayMillis / 1000) s"))
        }
        return .success(due)
    }
}

public struct PendingTimer: Equatable, Sendable {
    public var deliverAt: UInt64
    public var id: MessageID
    public var queue: QueueRef
    /// The entry holding the message's bytes, and where in it (the send that stored it).
    public internal(set) var storedIndex: UInt64
    var position: UInt32
    var tagHash: UInt32
    init(deliverAt: UInt64, id: MessageID, queue: QueueRef, storedIndex: UInt64? = nil, position: UInt32, tagHash: UInt32) {
        self.deliverAt = deliverAt
        self.id = id
        self.queue = queue
        self.storedIndex = storedIndex ?? id.entryIndex
        self.position = position
        self.tagHash = tagHash
    }
}

/// Pending delayed messages: by id, and in a min-heap on (time, id) for finding the due ones.
/// Released and recalled messages leave the map at once and the heap lazily.
public struct TimerIndex: Sendable {
    public private(set) var pending: [MessageID: PendingTimer] = [:]
    var heap: [(at: UInt64, id: MessageID)] = []
    /// Kept only for the `releaseTwice` planted bug.
    var released: [MessageID: PendingTimer] = [:]
    var keepReleased = false

    public var count: Int { pending.count }

    /// Schedules `t`, or moves it to its new time when its id is pending already (the heap
    /// node at the old time turns stale: heap nodes count only while they match `pending`).
    mutating func schedule(_ t: PendingTimer) {
        let same = pending[t.id]?.deliverAt == t.deliverAt
        pending[t.id] = t
        if same { return }
        defer { trim() }
        heap.append((t.deliverAt, t.id))
        var k = heap.count - 1
        while k > 0 {
            let parent = (k - 1) / 2
            if (heap[parent].at, heap[parent].id) <= (heap[k].at, heap[k].id) { break }
            heap.swapAt(parent, k)
            k = parent
        }
    }

    mutating func release(_ id: MessageID) {
        if let t = pending.removeValue(forKey: id), keepReleased { released[id] = t }
        trim()
    }

    mutating func recall(_ id: MessageID) {
        pending[id] = nil
        trim()
    }

    /// Drops heap tops that are no longer pending (or pending at another time).
    private mutating func trim() {
        while let top = heap.first, pending[top.id]?.deliverAt != top.at {
            let last = heap.removeLast()
            guard !heap.isEmpty else { break }
            heap[0] = last
            var k = 0
            while true {
                let l = 2 * k + 1, r = l + 1
                var m = k
                if l < heap.count && (heap[l].at, heap[l].id) < (heap[m].at, heap[m].id) { m = l }
                if r < heap.count && (heap[r].at, heap[r].id) < (heap[m].at, heap[m].id) { m = r }
                if m == k { break }
                heap.swapAt(m, k)
                k = m
            }
        }
    }

    /// Pending messages due at `now`, earliest first, at most `max`. Walks only the heap nodes
    /// due at `now` (a node's children are never earlier than it).
    public func due(now: UInt64, max: Int) -> [PendingTimer] {
        var out: [PendingTimer] = []
        var stack = heap.isEmpty ? [] : [0]
        while let k = stack.popLast() {
            guard heap[k].at <= now else { continue }
            if let t = pending[heap[k].id], t.deliverAt == heap[k].at { out.append(t) }
            for c in [2 * k + 1, 2 * k + 2] where c < heap.count { stack.append(c) }
        }
        out.sort { ($0.deliverAt, $0.id) < ($1.deliverAt, $1.id) }
        return Array(out.prefix(max))
    }

    /// The earliest pending time, if any.
    public var next: UInt64? { heap.first.map(\.at) }
}
