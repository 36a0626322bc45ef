// The receiving half of the RocketMQ 5 front: assignments, receives (long-polled, auto-renewed
// for push consumers, moved to the dead-letter queue past the group's attempts), acknowledgements,
// invisible-time changes and forwards to the dead-letter queue.
import Foundation
import GRPCCore
import Logging
import NIOConcurrencyHelpers
import SwiftProtobuf
import TernClient
import TernProtocol
import TernRocketMQProto

extension MessagingFront {
    func queryAssignment(request: ServerRequest<RMQQueryAssignmentRequest>, context: ServerContext) async throws -> ServerResponse<RMQQueryAssignmentResponse> {
        var out = RMQQueryAssignmentResponse()
        do {
            let c = try clients(request.metadata)
            let topic = try name(of: request.message.topic, what: "topic", code: .illegalTopic)
            let group = try name(of: request.message.group, what: "group", code: .illegalConsumerGroup)
            let parts = try await topicParts(topic, c)
            // Receives take from every queue of the topic in a broker, so one assignment covers
            // it: queue -1 ("any queue of this broker"), as RocketMQ's proxy answers for
            // receive/ack groups; with name servers, one per broker group. A FIFO group gets one
            // per queue, as there (its consumer runs a receive per queue; each still takes from
            // any queue of its broker that is not blocked).
            let fifo = try await target(c, nil).describeGroup(group).fifo
            out.assignments = parts.flatMap { p in
                (fifo ? Array(0..<Int32(p.queues)) : [-1]).map {
                    var a = RMQAssignment()
                    a.messageQueue = queue(topic, $0, type: p.type, broker: p.broker)
                    return a
                }
            }
            out.status = status(.ok)
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    func receiveMessage(
        request: ServerRequest<RMQReceiveMessageRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<RMQReceiveMessageResponse> {
        let r = request.message
        let client = request.metadata[stringValues: "x-mq-client-id"].first(where: { _ in true }) ?? ""
        let signedIn: Result<Clients, FrontError>
        do { signedIn = .success(try clients(request.metadata)) } catch { signedIn = .failure(error) }
        return StreamingServerResponse { writer in
            var statusReply = RMQReceiveMessageResponse()
            var received: (group: String, handles: [ReceiptHandle], from: Source)?
            do {
                let c = try signedIn.get()
                // As RocketMQ's proxy: the status, the messages, then when they were delivered.
                let (group, deliveries, from) = try await self.receive(r, c)
                received = (group, deliveries.map(\.handle), from)
                statusReply.status = deliveries.isEmpty ? status(.messageNotFound, "no new message") : status(.ok)
                try await writer.write(statusReply)
                for d in deliveries {
                    var one = RMQReceiveMessageResponse()
                    one.message = rocketMessage(
                        d.message, handle: Receipt.encode(d.handle, group: from.brokerGroup), attempt: d.attempt, invisibleMillis: d.invisibleMillis,
                        host: self.host)
                    try await writer.write(one)
                }
            } catch let e as RPCError {
                // The stream failed (the client went away): what it did not get is visible again.
                if let received, !received.handles.isEmpty {
                    await self.renewals.release(group: received.group, handles: received.handles, from: received.from)
                }
                throw e
            } catch {
                statusReply.status = status(for: error)
                try await writer.write(statusReply)
            }
            if r.autoRenew, let received {
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                for h in received.handles {
                    self.renewals.add(
                        group: received.group, client: client, handle: h, from: received.from,
                        invisibleUntil: now + self.settings.autoRenewMillis, now: now)
                }
            }
            var when = RMQReceiveMessageResponse()
            when.deliveryTimestamp = timestamp(millis: UInt64(Date().timeIntervalSince1970 * 1000))
            try await writer.write(when)
            return [:]
        }
    }

    /// What one receive handed out: Tern's deliveries, with the invisible time asked.
    struct Handed {
        var message: ReceivedMessage
        var handle: ReceiptHandle
        var attempt: UInt32
        var invisibleMillis: Int64
    }

    /// Where deliveries came from: the client of the broker group (with name servers, named in
    /// their handles) and the account that received them.
    struct Source {
        var cluster: TernCluster
        var brokerGroup: String?
        var accessKey: String
    }

    private func receive(_ r: RMQReceiveMessageRequest, _ c: Clients) async throws -> (group: String, deliveries: [Handed], from: Source) {
        let group = try name(of: r.group, what: "group", code: .illegalConsumerGroup)
        let topic = try name(of: r.messageQueue.topic, what: "topic", code: .illegalTopic)
        var filter = "*"
        var sql = ""
        switch r.filterExpression.type {
        case .tag, .unspecified:
            let e = r.filterExpression.expression.trimmingCharacters(in: .whitespaces)
            filter = e.isEmpty ? "*" : e
        case .sql:
            sql = r.filterExpression.expression
            guard !sql.trimmingCharacters(in: .whitespaces).isEmpty else { throw FrontError(.illegalFilterExpression, "an empty SQL92 filter") }
        case .UNRECOGNIZED(let n):
            throw FrontError(.illegalFilterExpression, "unknown filter type \(n)")
        }
        guard r.batchSize >= 1 else { throw FrontError(.badRequest, "batch size \(r.batchSize) is below 1") }
        // RocketMQ's bounds: at most 32 a receive (more is cut), an invisible duration of 10 s to
        // 12 h (auto-renewed receives: 60 s, renewed until acknowledged), a poll of 5 to 20 s.
        let batch = min(r.batchSize, settings.maxReceiveBatch)
        let invisible = r.autoRenew ? settings.autoRenewMillis : r.hasInvisibleDuration ? millis(r.invisibleDuration) : 30_000
        guard settings.invisibleMillisRange.contains(invisible) else {
            throw FrontError(
                .illegalInvisibleTime,
                "invisible duration \(invisible) ms is outside \(settings.invisibleMillisRange.lowerBound)...\(settings.invisibleMillisRange.upperBound) ms")
        }
        let asked = r.hasLongPollingTimeout ? millis(r.longPollingTimeout) : settings.longPollingMillis
        let wait = min(max(asked, 5_000), settings.longPollingMillis)
        var native = ReceiveRequest(
            group: group, topic: topic, tagFilter: filter, maxMessages: UInt32(batch), invisibleMillis: UInt64(invisible),
            maxWaitMillis: UInt32(wait))
        native.sqlFilter = sql
        // The broker the client picked (a route's or an assignment's queue): with name servers,
        // a broker group.
        let broker = r.messageQueue.broker.name
        var from = Source(cluster: try await target(c, broker), brokerGroup: groupName(broker), accessKey: c.accessKey)
        var deliveries: [ReceivedDelivery] = []
        if routed {
            // The official clients pick a queue at random for each receive (the Python client
            // does), so a receive can name a group with nothing while another holds messages,
            // and would wait out its long poll there. Each group holding the topic is asked
            // without waiting first, the named one first; only when none has anything does the
            // receive wait, on the named group. A delivery's handle names the group it came from.
            // Each ask has 1 s: a group in an election or down is passed over, not waited for
            // (the long poll below retries the named group properly and reports its errors).
            var now = native
            now.maxWaitMillis = 0
            let named = try? ReceiveResponse.decode(try await from.cluster.leaderRequest(.receive, now.encoded(), timeoutMillis: 1_000)).deliveries
            deliveries = named ?? []
            if deliveries.isEmpty {
                let others = ((try? await c.cluster.topicRoute(topic).groups.map(\.group)) ?? []).filter { $0 != from.brokerGroup }
                for g in others {
                    guard let cluster = try? await c.cluster.brokerGroup(g),
                        let found = try? ReceiveResponse.decode(try await cluster.leaderRequest(.receive, now.encoded(), timeoutMillis: 1_000)).deliveries,
                        !found.isEmpty
                    else { continue }
                    from = Source(cluster: cluster, brokerGroup: g, accessKey: c.accessKey)
                    deliveries = found
                    break
                }
            }
        }
        if deliveries.isEmpty {
            let body = try await from.cluster.leaderRequest(.receive, native.encoded(), timeoutMillis: wait + 5_000)
            deliveries = try ReceiveResponse.decode(body).deliveries
        }
        // A message received more often than the group's attempts allow goes to the group's
        // dead-letter queue instead of to the consumer (RocketMQ's broker does the same).
        let spent = deliveries.filter { $0.attempt > UInt32(settings.maxDeliveryAttempts) }
        if !spent.isEmpty {
            deliveries.removeAll { $0.attempt > UInt32(settings.maxDeliveryAttempts) }
            for d in spent {
                do {
                    try await deadLetter(group: group, handle: d.handle, from.cluster)
                } catch {
                    logger.warning("moving \(d.handle) to %DLQ%\(group) failed (it comes back when its invisible time ends): \(error)")
                }
            }
        }
        return (group, deliveries.map { Handed(message: $0.message, handle: $0.handle, attempt: $0.attempt, invisibleMillis: invisible) }, from)
    }

    func ackMessage(request: ServerRequest<RMQAckMessageRequest>, context: ServerContext) async throws -> ServerResponse<RMQAckMessageResponse> {
        var out = RMQAckMessageResponse()
        do {
            let c = try clients(request.metadata)
            let group = try name(of: request.message.group, what: "group", code: .illegalConsumerGroup)
            _ = try name(of: request.message.topic, what: "topic", code: .illegalTopic)
            guard !request.message.entries.isEmpty else { throw FrontError(.badRequest, "no entries to acknowledge") }
            for e in request.message.entries {
                var result = RMQAckMessageResultEntry()
                result.messageID = e.messageID
                result.receiptHandle = e.receiptHandle
                do {
                    let (broker, handle) = try Receipt.decode(e.receiptHandle)
                    _ = try await target(c, broker, unknown: .invalidReceiptHandle).leaderRequest(.ack, ReceiptRequest(group: group, handle: handle).encoded())
                    renewals.remove(e.receiptHandle)
                    result.status = status(.ok)
                } catch {
                    result.status = status(for: error)
                }
                out.entries.append(result)
            }
            let codes = Set(out.entries.map(\.status.code))
            out.status = codes.count == 1 ? out.entries[0].status : status(.multipleResults, "entries differ; see each entry's status")
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    func changeInvisibleDuration(
        request: ServerRequest<RMQChangeInvisibleDurationRequest>, context: ServerContext
    ) async throws -> ServerResponse<RMQChangeInvisibleDurationResponse> {
        var out = RMQChangeInvisibleDurationResponse()
        let r = request.message
        do {
            let c = try clients(request.metadata)
            let group = try name(of: r.group, what: "group", code: .illegalConsumerGroup)
            _ = try name(of: r.topic, what: "topic", code: .illegalTopic)
            let (broker, handle) = try Receipt.decode(r.receiptHandle)
            let ms = millis(r.invisibleDuration)
            guard ms >= 0 && ms <= settings.invisibleMillisRange.upperBound else {
                throw FrontError(.illegalInvisibleTime, "invisible duration \(ms) ms is outside 0...\(settings.invisibleMillisRange.upperBound) ms")
            }
            // Renewals stop first, so that none lands after the client's own time. Tern's shortest
            // invisible time is 100 ms: "visible now" becomes that.
            renewals.remove(r.receiptHandle)
            _ = try await target(c, broker, unknown: .invalidReceiptHandle).leaderRequest(
                .changeInvisible, ReceiptRequest(group: group, handle: handle, invisibleMillis: UInt64(max(ms, 100))).encoded())
            out.receiptHandle = r.receiptHandle
            out.status = status(.ok)
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    func forwardMessageToDeadLetterQueue(
        request: ServerRequest<RMQForwardMessageToDeadLetterQueueRequest>, context: ServerContext
    ) async throws -> ServerResponse<RMQForwardMessageToDeadLetterQueueResponse> {
        var out = RMQForwardMessageToDeadLetterQueueResponse()
        do {
            let c = try clients(request.metadata)
            let group = try name(of: request.message.group, what: "group", code: .illegalConsumerGroup)
            _ = try name(of: request.message.topic, what: "topic", code: .illegalTopic)
            let (broker, handle) = try Receipt.decode(request.message.receiptHandle)
            try await deadLetter(group: group, handle: handle, target(c, broker, unknown: .invalidReceiptHandle))
            renewals.remove(request.message.receiptHandle)
            out.status = status(.ok)
        } catch {
            out.status = status(for: error)
        }
        return ServerResponse(message: out)
    }

    /// Moves a received message to `%DLQ%<group>` and acknowledges it: the copy is a give-back
    /// keyed by (origin, count), so a forward repeated after a lost answer or a crash between
    /// the two steps stores one dead letter.
    func deadLetter(group: String, handle: ReceiptHandle, _ cluster: TernCluster) async throws {
        let at = try await cluster.pull(topic: handle.queue.topic, queue: handle.queue.queueID, offset: handle.offset, maxMessages: 1)
        guard let m = at.messages.first, m.queueOffset == handle.offset else {
            throw FrontError(.messageNotFound, "the message of receipt handle \(handle) is no longer stored")
        }
        let copy = SendBackRequest(group: group, id: m.id, delayMillis: 0, maxReconsumeTimes: 0)
        _ = try await cluster.leaderRequest(.sendBack, copy.encoded())
        _ = try await cluster.leaderRequest(.ack, ReceiptRequest(group: group, handle: handle).encoded())
    }
}
