// Auto-renewal of invisible durations (a push consumer's receives ask for it): the front that
// handed a message out keeps it invisible while the consumer works on it, as RocketMQ's proxy
// does. Every second it extends each delivery with 10 s or less left, by 1, 3, 5, 10, 30 and
// then 60 minutes at a time, for at most 3 hours; an acknowledgement, a change or a forward by
// the client ends the renewals, and a client that says it is terminating, or whose receive
// stream failed before the messages reached it, has its deliveries made visible again at once.
// The schedule lives in this front's memory only: when its node stops, the message becomes
// visible when its current duration ends, and is delivered again.
import NIOConcurrencyHelpers
import TernClient
import TernProtocol

final class Renewals: Sendable {
    struct Entry {
        var group: String
        var client: String
        /// The cluster client of the account that received it.
        var cluster: TernCluster
        var accessKey: String
        var handle: ReceiptHandle
        var invisibleUntil: Int64
        var givenUp: Int64
        var step = 0
    }

    static let extensions: [Int64] = [1, 3, 5, 10, 30, 60].map { $0 * 60_000 }
    static let renewWithin: Int64 = 10_000
    static let maxMillis: Int64 = 3 * 3600 * 1000
    /// Changes sent at once by one round.
    static let parallel = 16

    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    var count: Int { entries.withLockedValue { $0.count } }

    func add(group: String, client: String, handle: ReceiptHandle, from: MessagingFront.Source, invisibleUntil: Int64, now: Int64) {
        entries.withLockedValue {
            $0[Receipt.encode(handle, group: from.brokerGroup)] = Entry(
                group: group, client: client, cluster: from.cluster, accessKey: from.accessKey, handle: handle,
                invisibleUntil: invisibleUntil, givenUp: now + Self.maxMillis)
        }
    }

    func remove(_ handle: String) { entries.withLockedValue { _ = $0.removeValue(forKey: handle) } }

    /// Stops renewing `handles` and makes them visible again (their consumer never got them).
    func release(group: String, handles: [ReceiptHandle], from: MessagingFront.Source) async {
        for h in handles { remove(Receipt.encode(h, group: from.brokerGroup)) }
        await visibleAgain(handles.map { (group, $0, from.cluster) })
    }

    /// A client that is going away: its deliveries are made visible again (only by the account
    /// that received them: another account cannot release them by naming the client).
    func releaseAll(client: String, accessKey: String) async {
        let mine = entries.withLockedValue { all -> [(String, ReceiptHandle, TernCluster)] in
            let keys = all.filter { $0.value.client == client && $0.value.accessKey == accessKey }.keys.sorted()
            return keys.map { k in
                let e = all.removeValue(forKey: k)!
                return (e.group, e.handle, e.cluster)
            }
        }
        await visibleAgain(mine)
    }

    private func visibleAgain(_ list: [(group: String, handle: ReceiptHandle, cluster: TernCluster)]) async {
        await withTaskGroup(of: Void.self) { tasks in
            for (k, item) in list.enumerated() {
                if k >= Self.parallel { await tasks.next() }
                tasks.addTask {
                    _ = try? await item.cluster.leaderRequest(
                        .changeInvisible, ReceiptRequest(group: item.group, handle: item.handle, invisibleMillis: 100).encoded())
                }
            }
        }
    }

    /// Extends the deliveries that are due; drops those past their 3 hours or no longer held.
    func renewDue(now: Int64) async {
        let due = entries.withLockedValue { all -> [(String, Entry)] in
            for (k, e) in all where e.givenUp <= now { all.removeValue(forKey: k) }
            return all.filter { $0.value.invisibleUntil - now <= Self.renewWithin }.map { ($0.key, $0.value) }.sorted { $0.0 < $1.0 }
        }
        await withTaskGroup(of: Void.self) { tasks in
            for (k, item) in due.enumerated() {
                if k >= Self.parallel { await tasks.next() }
                tasks.addTask { await self.renew(key: item.0, item.1, now: now) }
            }
        }
    }

    private func renew(key: String, _ e: Entry, now: Int64) async {
        let step = Self.extensions[min(e.step, Self.extensions.count - 1)]
        let ms = min(step, e.givenUp - now)
        guard ms > 0 else {
            remove(key)
            return
        }
        do {
            let body = try await e.cluster.leaderRequest(
                .changeInvisible, ReceiptRequest(group: e.group, handle: e.handle, invisibleMillis: UInt64(ms)).encoded())
            let until = Int64(try ChangeInvisibleResponse.decode(body).invisibleUntil)
            entries.withLockedValue { all in
                guard all[key] != nil else { return }
                all[key]!.invisibleUntil = until
                all[key]!.step += 1
            }
        } catch ClientError.broker(let b) where b.code == .receiptExpired || b.code == .messageNotFound {
            remove(key)  // acknowledged elsewhere, or delivered again: nothing to hold
        } catch {
            // Left for the next round (an election, a lost connection).
        }
    }
}
