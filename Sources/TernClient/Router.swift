// Many broker groups behind name servers (docs/architecture.md, "Many groups"): the client's
// route table. A topic's route (which groups hold how many of its queues, and their members)
// comes from any name server and is kept: it is refreshed in the background once it is older
// than `refreshAfter`, and at once when a group answers that it has no such topic. Each group is
// reached through a `TernCluster` of its own, which finds that group's leader and fails over
// within it. With every name server down, the routes already known keep working.
import NIOConcurrencyHelpers
import NIOCore
import TernProtocol

/// A message id that names its broker group: `g2/0000000000000A2B0000`. A bare 20-hex id (from a
/// single-group client, or issued before groups had names) has no group and is looked up on
/// every group in name order.
public struct GroupMessageID: Hashable, Sendable, CustomStringConvertible {
    public var group: String?
    public var id: MessageID
    public init(group: String?, id: MessageID) {
        self.group = group
        self.id = id
    }
    public init?(_ text: String) {
        if let slash = text.firstIndex(of: "/") {
            let g = String(text[..<slash])
            guard BrokerGroupName.problem(g) == nil, let id = MessageID(String(text[text.index(after: slash)...])) else { return nil }
            self.init(group: g, id: id)
        } else {
            guard let id = MessageID(text) else { return nil }
            self.init(group: nil, id: id)
        }
    }
    public var description: String { group.map { "\($0)/\(id)" } ?? id.description }
}

extension TernCluster {
    /// Requests this client sent to name servers (nil: it uses none).
    public var nameServerRequests: Int? { router?.nameServers.requestsSent }
}

extension ReceivedMessage {
    /// The id with its group (`g2/...`) when it came through name servers, else the bare id.
    public var groupMessageID: GroupMessageID { GroupMessageID(group: brokerGroup.isEmpty ? nil : brokerGroup, id: id) }
}

final class Router: Sendable {
    let refreshAfter: Duration
    let nameServers: NameServers
    let options: TernCluster.Options
    let group: EventLoopGroup
    /// The parent client's TLS, shared by every group's client (never built again, so never lost).
    let tls: TLSContext?

    struct Cached {
        var route: TopicRoute
        var at: ContinuousClock.Instant
        var refreshing = false
    }
    struct State {
        var routes: [String: Cached] = [:]
        var clusters: [String: TernCluster] = [:]
        var closed = false
    }
    private let state = NIOLockedValueBox(State())

    init(nameServers: NameServers, options: TernCluster.Options, group: EventLoopGroup, tls: TLSContext?) {
        self.tls = tls
        self.nameServers = nameServers
        self.options = options
        self.group = group
        refreshAfter = .milliseconds(options.routeRefreshMillis)
    }

    func shutdown() async {
        let all = state.withLockedValue { s -> [TernCluster] in
            s.closed = true
            defer { s.clusters = [:] }
            return Array(s.clusters.values)
        }
        for c in all { await c.shutdown() }
        await nameServers.shutdown()
    }

    /// `topic`'s route: the one held (refreshed in the background when old), or one asked for
    /// now. `fresh` asks now, and falls back to the one held when no name server answers.
    func route(_ topic: String, fresh: Bool = false) async throws -> TopicRoute {
        let clock = ContinuousClock()
        let held = state.withLockedValue { s -> (TopicRoute, Bool)? in
            guard let c = s.routes[topic] else { return nil }
            let old = clock.now - c.at >= refreshAfter
            if old && !c.refreshing && !fresh { s.routes[topic]?.refreshing = true }
            return (c.route, old && !c.refreshing)
        }
        if let (route, refresh) = held, !fresh {
            if refresh { Task { _ = try? await self.fetch(topic) } }
            return route
        }
        do {
            return try await fetch(topic)
        } catch let e as ClientError where e.code == ErrorCode.topicNotFound {
            throw e
        } catch {
            if let (route, _) = held { return route }  // every name server down: keep what is known
            throw error
        }
    }

    private func fetch(_ topic: String) async throws -> TopicRoute {
        do {
            var route = try await nameServers.route(topic: topic)
            if !route.complete {
                // Only name servers that started moments ago answered: they may not know every
                // group yet. Keep the groups already known that they do not list; with none
                // known, wait (a partial route would number the queues differently).
                let held = state.withLockedValue { $0.routes[topic]?.route.groups } ?? []
                route = TopicRoute(groups: route.groups + held.filter { h in !route.groups.contains { $0.group == h.group } }, complete: false)
                guard !held.isEmpty else {
                    throw ClientError.broker(
                        ErrorBody(code: ErrorCode.busy, message: "the name servers started moments ago and know no group holding topic \(topic) yet; retry"))
                }
            }
            state.withLockedValue { $0.routes[topic] = Cached(route: route, at: ContinuousClock().now) }
            for g in route.groups { _ = cluster(g) }
            return route
        } catch {
            state.withLockedValue { s in
                s.routes[topic]?.refreshing = false
                // A failed refresh is tried again after a pause, not on every call.
                s.routes[topic]?.at = ContinuousClock().now - refreshAfter + min(.seconds(5), refreshAfter)
                if let e = error as? ClientError, e.code == ErrorCode.topicNotFound { s.routes[topic] = nil }
            }
            throw error
        }
    }

    func forget(_ topic: String) {
        _ = state.withLockedValue { $0.routes.removeValue(forKey: topic) }
    }

    /// The client of `route`'s group, made on first use; it learns the listed members.
    func cluster(_ route: GroupRoute) -> TernCluster {
        let endpoints = route.members.map(\.endpoint).filter { !$0.isEmpty }
        return state.withLockedValue { s -> TernCluster in
            if let c = s.clusters[route.group] {
                c.learn(endpoints: endpoints, leader: route.leaderEndpoint)
                return c
            }
            let c = TernCluster(group: route.group, endpoints: endpoints, leader: route.leaderEndpoint, options: options, eventLoopGroup: group, tls: tls)
            s.clusters[route.group] = c
            return c
        }
    }

    /// Every live group (from the name servers), in name order. `complete`: for what must reach
    /// every group, an answer only starting name servers gave (it may lack groups) is not taken:
    /// asked again until one is complete (at most 20 s, a name server's warm-up and more).
    func liveGroups(complete: Bool = false) async throws -> [GroupRoute] {
        var route = try await nameServers.liveGroups()
        if complete {
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(20)
            while !route.complete {
                guard clock.now < deadline else { throw Router.starting }
                try await Task.sleep(for: .milliseconds(500))
                route = try await nameServers.liveGroups()
            }
        }
        for g in route.groups { _ = cluster(g) }
        return route.groups
    }

    static let starting = ClientError.broker(
        ErrorBody(code: ErrorCode.busy, message: "the name servers started moments ago and may not know every broker group yet; retry in 15 s"))

    /// The client of the group named `name` (known from a route, else asked of the name servers).
    func cluster(named name: String) async throws -> TernCluster {
        if let c = state.withLockedValue({ $0.clusters[name] }) { return c }
        guard let g = try await liveGroups().first(where: { $0.group == name }) else {
            throw ClientError.invalidArgument("no live broker group is named \(name) (tern admin cluster status lists them)")
        }
        return cluster(g)
    }
}
