// Requests held until there is something to answer: pulls parked on a queue that had nothing
// new (answered when messages are applied to it, or empty at their deadline), and receives,
// which the leader tries again each tick.
import TernBroker
import TernProtocol
import TernStorage

extension Node {
    /// The broker's choice for a receive, with this leader's proposals in flight set aside
    /// (they are then in flight too).
    func chooseForReceive(_ request: ReceiveRequest) throws(StorageError) -> Result<ReceiveEntry?, ErrorBody> {
        receiveRotation &+= 1
        let inFlight = Set((receiveInFlight[request.group] ?? [:]).filter { $0.value.count > 0 && now < $0.value.at + 10_000 }.keys)
        let result = try broker.chooseForReceive(
            request, now: now, startQueue: receiveRotation, proposedNext: receiveProposedNext[request.group] ?? [:], proposedAgain: receiveProposedAgain,
            inFlight: inFlight)
        if case .success(let entry?) = result {
            for q in entry.queues {
                let ref = QueueRef(topic: entry.topic, queueID: q.queueID)
                receiveInFlight[entry.group, default: [:]][ref] = ((receiveInFlight[entry.group]?[ref]?.count ?? 0) + 1, now)
                receiveProposedNext[entry.group, default: [:]][ref] = max(receiveProposedNext[entry.group]?[ref] ?? 0, q.next)
                for o in q.offsets { receiveProposedAgain.insert(DeliveryKey(group: entry.group, queue: ref, offset: o)) }
            }
        }
        return result
    }

    /// Held receives try again each tick (messages may have arrived, invisible times ended);
    /// those past their deadline are answered with nothing.
    func serveParkedReceives(into out: inout NodeOutput) throws(StorageError) {
        guard !parkedReceives.isEmpty else { return }
        guard isReadyLeader else { return }
        var keep: [ParkedReceive] = []
        var proposals: [(type: UInt8, body: [UInt8])] = []
        var owners: [Pending] = []
        for p in parkedReceives {
            switch try chooseForReceive(p.request) {
            case .success(let entry?):
                proposals.append((BrokerEntryType.receive, entry.encoded()))
                owners.append(.receive(p.client))
            case .success(nil) where now < p.deadline:
                keep.append(p)
            case .success(nil):
                out.replies.append(Reply(to: p.client, opcode: Opcode.receive.rawValue, result: .success(ReceiveResponse(deliveries: []).encoded())))
            case .failure(let e):
                out.replies.append(Reply(to: p.client, opcode: Opcode.receive.rawValue, result: .failure(e)))
            }
        }
        parkedReceives = keep
        if !proposals.isEmpty { try propose(proposals, owners: owners, into: &out) }
    }

    /// Answers the held pulls whose queue grew. One that the tag filter left empty stays held,
    /// from where its scan stopped, until its deadline.
    func wakeParked(into out: inout NodeOutput) throws(StorageError) {
        guard stateReadable else { return }
        var keep: [Parked] = []
        for var p in parked {
            let ref = QueueRef(topic: p.request.topic, queueID: p.request.queueID)
            guard let max = broker.maxOffset(ref), max > p.request.offset else {
                keep.append(p)
                continue
            }
            let result = try broker.pull(p.request)
            if case .success(let response) = result, response.messages.isEmpty {
                p.request.offset = response.nextOffset
                keep.append(p)
                continue
            }
            let encoded = result.map { $0.encoded() }
            if case .success(let response) = result, case .success(let bytes) = encoded {
                traffic.delivered(p.request.topic, messages: response.messages.count, bytes: bytes.count)
            }
            out.replies.append(Reply(to: p.client, opcode: Opcode.pull.rawValue, result: encoded))
        }
        parked = keep
    }

    func expireParked(into out: inout NodeOutput) {
        var keep: [Parked] = []
        for p in parked {
            guard now >= p.deadline else {
                keep.append(p)
                continue
            }
            let ref = QueueRef(topic: p.request.topic, queueID: p.request.queueID)
            let bounds = broker.bounds(ref) ?? (p.request.offset, p.request.offset)
            let response = PullResponse(nextOffset: p.request.offset, minOffset: bounds.min, maxOffset: bounds.max, messages: [])
            out.replies.append(Reply(to: p.client, opcode: Opcode.pull.rawValue, result: .success(response.encoded())))
        }
        parked = keep
    }
}
