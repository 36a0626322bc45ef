// The routed producer of a world of many groups (Groups.swift): what `TernCluster(nameservers:)`
// and `Producer` do, against simulated nodes and name servers. It creates its topic in every
// group (as an admin would), keeps a route joined from every name server's answer (refreshed
// every second; a starting name server's incomplete answer keeps the groups it lacks; no answer
// keeps the route), numbers the queues across the groups, keeps one send in flight per group,
// retries a send only within its group (the leader named, else the next member), and checks
// every address before its first use and after it changed hands: a node of another group is
// refused and dropped from the group's addresses.
import TernNode
import TernProtocol
import TernRaft

final class RoutedProducer {
    static let topic = "rt"
    static let queuesPerGroup: UInt32 = 2
    static let producerID: UInt64 = 9000
    static let timeoutMicros: UInt64 = 300_000
    unowned let g: GroupsWorld
    let connection = World.externalBase + 1
    var nextRequest: UInt64 = 1

    enum Purpose {
        case create(Int)
        case verify(String)
        case send(String)
    }
    var purposes: [UInt64: Purpose] = [:]

    // The topic in every group, first.
    var created: Set<Int> = []
    var creating: [Int: (address: String, sentAt: UInt64)] = [:]

    // The route, from the name servers.
    var route: TopicRoute?
    var routeAt: UInt64 = 0
    var asking: (request: UInt64, at: UInt64, answers: [(route: TopicRoute?, notFound: Bool)])?
    var endpoints: [String: [String]] = [:]
    var leader: [String: String] = [:]
    var rotation: [String: Int] = [:]
    /// Address -> the generation it was checked at.
    var verified: [String: UInt64] = [:]

    struct Pending {
        var body: String
        var queue: UInt32
        var sequence: UInt64
        var request: UInt64 = 0
        var address = ""
        var sentAt: UInt64 = 0
        var retryNow = true
        var timeouts = 0
        /// The address's generation when its check was sent (a check answered after the address
        /// changed hands proves nothing about the new owner).
        var checkedGeneration: UInt64 = 0
        /// Planted bug retry-other-group: moved to another group once.
        var moved = false
    }
    var pending: [String: Pending] = [:]
    var sequences: [String: [UInt32: UInt64]] = [:]
    var avoid: [String: UInt64] = [:]
    var nextBody = 0
    var turn = 0

    var sent: Set<String> = []
    var acks: [String: (group: String, queue: UInt32, offset: UInt64, id: MessageID)] = [:]
    var staleRefused = 0

    init(_ g: GroupsWorld) { self.g = g }

    func newRequest(_ purpose: Purpose) -> UInt64 {
        nextRequest += 1
        purposes[nextRequest] = purpose
        return nextRequest
    }

    func send(_ op: Opcode, _ body: [UInt8], to address: String, request: UInt64) {
        g.request(to: address, client: ClientRef(connection: connection, requestID: request), frame: Frame(opcode: op.rawValue, requestID: request, body: body))
    }

    // MARK: Timer

    func timer() {
        for w in g.worlds.indices where !created.contains(w) {
            if let c = creating[w], g.now < c.sentAt + Self.timeoutMicros { continue }
            let world = g.worlds[w]
            let address = creating[w]?.address ?? world.address(of: Int(g.below(UInt64(world.options.nodes))))
            creating[w] = (address, g.now)
            send(.createTopic, TopicRequest(name: Self.topic, queues: Self.queuesPerGroup).encoded(), to: address, request: newRequest(.create(w)))
            creating[w]?.address = world.address(of: Int(g.below(UInt64(world.options.nodes))))  // the next try, unless a leader is named
        }
        guard created.count == g.worlds.count else { return }
        refreshRoute()
        for name in pending.keys.sorted() {
            guard var p = pending[name] else { continue }
            if !p.retryNow {
                guard g.now >= p.sentAt + Self.timeoutMicros else { continue }
                p.timeouts += 1
                if p.timeouts >= 3 { avoid[name] = g.now + 1_000_000 }
                if g.options.plantedBugs.contains(.retryOtherGroup), !p.moved,
                    let other = route?.groups.first(where: { $0.group != name && pending[$0.group] == nil })
                {
                    pending[name] = nil
                    sequences[other.group, default: [:]][0, default: 0] += 1
                    pending[other.group] = Pending(body: p.body, queue: 0, sequence: sequences[other.group]![0]!, moved: true)
                    dispatch(other.group)
                    continue
                }
                if leader[name] == p.address { leader[name] = nil }
                rotation[name, default: 0] += 1
            }
            pending[name] = p
            dispatch(name)
        }
        startOne()
    }

    /// A new send to the next queue in turn whose group has none in flight and is not avoided.
    func startOne() {
        guard let route, route.totalQueues > 0 else { return }
        if g.options.plantedBugs.contains(.stickyRouting) && !pending.isEmpty { return }
        let total = route.totalQueues
        for _ in 0..<total {
            turn += 1
            let (gr, local) = locate(UInt32(turn) % total, in: route)
            guard pending[gr.group] == nil, (avoid[gr.group] ?? 0) <= g.now else { continue }
            nextBody += 1
            let body = "r\(nextBody)"
            sent.insert(body)
            sequences[gr.group, default: [:]][local, default: 0] += 1
            pending[gr.group] = Pending(body: body, queue: local, sequence: sequences[gr.group]![local]!)
            dispatch(gr.group)
            return
        }
    }

    func locate(_ global: UInt32, in route: TopicRoute) -> (GroupRoute, UInt32) {
        var q = global
        for gr in route.groups {
            if q < gr.queues { return (gr, q) }
            q -= gr.queues
        }
        preconditionFailure("queue \(global) beyond the route")
    }

    /// Sends (or checks the address before sending) the pending send of `group`.
    func dispatch(_ group: String) {
        guard var p = pending[group] else { return }
        let list = endpoints[group] ?? []
        guard let address = leader[group] ?? (list.isEmpty ? nil : list[(rotation[group] ?? 0) % list.count]) else {
            p.retryNow = false
            p.sentAt = g.now
            pending[group] = p
            return
        }
        p.address = address
        p.sentAt = g.now
        p.retryNow = false
        let current = g.generation[address] ?? 0
        if !g.options.plantedBugs.contains(.skipGroupCheck) && verified[address] != current {
            p.request = newRequest(.verify(group))
            p.checkedGeneration = current
            pending[group] = p
            send(.queryRoute, NameRequest(name: "").encoded(), to: address, request: p.request)
            return
        }
        p.request = newRequest(.send(group))
        pending[group] = p
        let request = SendRequest(
            topic: Self.topic, queueID: p.queue, producerGroup: "routed", producerID: Self.producerID, sequence: p.sequence,
            messages: [WireMessage(body: Array(p.body.utf8))])
        send(.send, request.encoded(), to: address, request: p.request)
    }

    // MARK: Routes

    func refreshRoute() {
        if let a = asking {
            guard g.now >= a.at + Self.timeoutMicros else { return }
            finishRoute()  // the name servers that did not answer in time are down or cut off
        }
        guard route == nil || g.now >= routeAt + 1_000_000 else { return }
        nextRequest += 1
        asking = (nextRequest, g.now, [])
        for k in g.nameServers.indices {
            g.schedule(.nameRequest(ns: k, request: nextRequest, topic: Self.topic), after: 200 + g.below(2_000))
        }
    }

    func nameReply(ns: Int, request: UInt64, route: TopicRoute?, notFound: Bool) {
        guard asking?.request == request else { return }
        asking!.answers.append((route, notFound))
        if asking!.answers.count == g.nameServers.count { finishRoute() }
    }

    /// Joins the answers as `NameServers.joinedRoute` and `Router.fetch` do.
    func finishRoute() {
        guard let a = asking else { return }
        asking = nil
        guard !a.answers.isEmpty else {
            routeAt = g.now &- Swift.min(g.now, 800_000)  // nobody answered: keep the route, ask again soon
            return
        }
        var best: [String: GroupRoute] = [:]
        var complete = false
        var notFound = false
        for answer in a.answers {
            notFound = notFound || answer.notFound
            guard let r = answer.route else { continue }
            complete = complete || r.complete
            for gr in r.groups where best[gr.group].map({ gr.term > $0.term || (gr.term == $0.term && gr.queues > $0.queues) }) ?? true {
                best[gr.group] = gr
            }
        }
        if best.isEmpty && notFound {
            route = nil  // every group that held it is gone, as far as a name server knows
            routeAt = g.now
            return
        }
        var groups = Array(best.values)
        if !(complete || notFound), let held = route {
            groups += held.groups.filter { h in best[h.group] == nil }
        }
        if groups.isEmpty {
            routeAt = g.now &- Swift.min(g.now, 800_000)
            return
        }
        let joined = TopicRoute(groups: groups, complete: complete || notFound)
        for gr in joined.groups {
            for m in gr.members where !m.endpoint.isEmpty && !(endpoints[gr.group] ?? []).contains(m.endpoint) {
                endpoints[gr.group, default: []].append(m.endpoint)
            }
            if leader[gr.group] == nil, let l = gr.leaderEndpoint { leader[gr.group] = l }
        }
        route = joined
        routeAt = g.now
        g.mixDigest(22, g.now, UInt64(joined.groups.count), UInt64(joined.totalQueues))
    }

    // MARK: Replies

    func reply(_ r: Reply, from w: Int) {
        guard g.isolated != w, let purpose = purposes.removeValue(forKey: r.to.requestID) else { return }
        switch purpose {
        case .create(let cw):
            switch r.result {
            case .success: created.insert(cw)
            case .failure(let e) where e.code == ErrorCode.topicExists: created.insert(cw)
            case .failure(let e) where e.code == ErrorCode.notLeader:
                if let d = try? NotLeaderDetail.decode(e.detail), !d.endpoint.isEmpty { creating[cw]?.address = d.endpoint }
                creating[cw]?.sentAt = 0
            case .failure: break
            }
        case .verify(let group):
            guard var p = pending[group], p.request == r.to.requestID else { return }
            switch r.result {
            case .success(let body):
                guard let route = try? RouteResponse.decode(body) else { return }
                if route.brokerGroup == group {
                    verified[p.address] = p.checkedGeneration
                } else {
                    staleRefused += 1
                    g.count("stale route refused")
                    g.trace("\(p.address) is a node of \(route.brokerGroup), not of \(group): refused")
                    endpoints[group]?.removeAll { $0 == p.address }
                    if leader[group] == p.address { leader[group] = nil }
                    rotation[group, default: 0] += 1
                }
                p.retryNow = true
                pending[group] = p
                dispatch(group)
            case .failure:
                break  // retried on the timeout
            }
        case .send(let group):
            guard var p = pending[group], p.request == r.to.requestID else { return }
            switch r.result {
            case .success(let body):
                guard let s = try? SendResponse.decode(body) else { return }
                acknowledged(p, group: group, response: s, by: w)
                leader[group] = p.address
                pending[group] = nil
                avoid[group] = nil
            case .failure(let e) where e.code == ErrorCode.notLeader:
                if let d = try? NotLeaderDetail.decode(e.detail), !d.endpoint.isEmpty {
                    if !(endpoints[group] ?? []).contains(d.endpoint) { endpoints[group, default: []].append(d.endpoint) }
                    leader[group] = d.endpoint
                } else {
                    leader[group] = nil
                    rotation[group, default: 0] += 1
                }
                p.retryNow = true
                pending[group] = p
                dispatch(group)
            case .failure:
                break  // busy, storage, an election: again on the timeout
            }
        }
    }

    func acknowledged(_ p: Pending, group: String, response s: SendResponse, by w: Int) {
        let id = MessageID(entryIndex: s.entryIndex, slot: 0)
        g.mixDigest(23, g.now, UInt64(w), s.entryIndex, s.firstQueueOffset)
        if g.names[w] != group {
            g.violations.append(
                "t=\(Double(g.now) / 1e6)s: stale route: \(p.body), sent to \(group) at \(p.address), was acknowledged by \(g.names[w]) (entry \(s.entryIndex), \(Self.topic)#\(s.queueID)@\(s.firstQueueOffset))"
            )
        }
        if let isolated = g.isolated, isolated != w { g.partnerAcksDuringIsolation += 1 }
        acks[p.body] = (group, s.queueID, s.firstQueueOffset, id)
    }

    // MARK: The end

    /// Every routed acknowledgement is stored in the group it named, at its queue and offset;
    /// nothing routed is stored twice, in two groups, or without having been sent.
    func finalCheck() {
        var storedIn: [String: [String]] = [:]
        for (w, world) in g.worlds.enumerated() {
            let group = g.names[w]
            guard let best = world.nodes.filter({ $0.node != nil }).max(by: { $0.appliedIndex < $1.appliedIndex }), let n = best.node else {
                g.violations.append("\(group): no live member to read the routed messages from")
                continue
            }
            var stored: [String: (queue: UInt32, offset: UInt64, id: MessageID)] = [:]
            var minimum: [UInt32: UInt64] = [:]
            for q in 0..<Self.queuesPerGroup {
                var offset: UInt64 = 0
                while true {
                    let request = PullRequest(topic: Self.topic, queueID: q, offset: offset, maxMessages: 1024, maxBytes: UInt32.max)
                    guard let result = try? n.broker.pull(request), case .success(let r) = result else { break }
                    minimum[q] = r.minOffset
                    for m in r.messages {
                        let body = String(decoding: m.message.body, as: UTF8.self)
                        if !sent.contains(body) { g.violations.append("\(group): \(body) stored at \(Self.topic)#\(q)@\(m.queueOffset) was never sent") }
                        if let s = stored[body] {
                            g.violations.append("\(group): \(body) stored twice (#\(s.queue)@\(s.offset) and #\(q)@\(m.queueOffset))")
                        }
                        stored[body] = (q, m.queueOffset, m.id)
                        storedIn[body, default: []].append(group)
                    }
                    if r.messages.isEmpty || r.nextOffset >= r.maxOffset { break }
                    offset = r.nextOffset
                }
            }
            for body in acks.keys.sorted() {
                let a = acks[body]!
                guard a.group == group, a.offset >= (minimum[a.queue] ?? 0) else { continue }
                guard let s = stored[body], (s.queue, s.offset, s.id) == (a.queue, a.offset, a.id) else {
                    g.violations.append(
                        "\(group): lost: \(body), acknowledged as \(group) \(Self.topic)#\(a.queue)@\(a.offset) (\(a.id)), is not there on \(best.id) (found: \(storedIn[body] ?? []))"
                    )
                    continue
                }
            }
        }
        for body in storedIn.keys.sorted() where Set(storedIn[body]!).count > 1 {
            g.violations.append("\(body) is stored in \(storedIn[body]!.joined(separator: " and ")): a routed send reached two groups")
        }
    }
}
