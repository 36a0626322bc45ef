// The client side of name servers (docs/architecture.md, "Many groups"): ask one of them for a
// topic's route (the next when one fails), and, for a group's leader, register with all of them.
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernProtocol

/// Connections to a set of independent name servers.
///
/// ```swift
/// let ns = try NameServers(endpoints: ["127.0.0.1:9876", "127.0.0.1:9877"])
/// for g in try await ns.route(topic: "orders").groups { print(g.group, g.queues, g.leader) }
/// ```
public final class NameServers: Sendable {
    public let endpoints: [String]
    public let timeoutMillis: Int64
    let group: EventLoopGroup
    private let ownsGroup: Bool
    private let state = NIOLockedValueBox<(connections: [String: Connection], rotation: Int, closed: Bool)>(([:], 0, false))
    private let sent = NIOLockedValueBox(0)

    /// Requests sent to name servers so far (benchmarks show that sends make none).
    public var requestsSent: Int { sent.withLockedValue { $0 } }

    public convenience init(endpoints: [String], timeoutMillis: Int64 = 2000) throws {
        try self.init(endpoints: endpoints, timeoutMillis: timeoutMillis, group: nil)
    }

    /// On the caller's event loops (not shut down with it).
    public convenience init(endpoints: [String], timeoutMillis: Int64 = 2000, eventLoopGroup: any EventLoopGroup) throws {
        try self.init(endpoints: endpoints, timeoutMillis: timeoutMillis, group: eventLoopGroup)
    }

    init(endpoints: [String], timeoutMillis: Int64, group given: EventLoopGroup?) throws {
        let list = endpoints.flatMap { $0.split(whereSeparator: { $0 == "," || $0 == ";" }).map { String($0).trimmingCharacters() } }.filter { !$0.isEmpty }
        guard !list.isEmpty else { throw ClientError.invalidArgument("no name servers given") }
        for e in list where e.lastIndex(of: ":") == nil { throw ClientError.invalidArgument("name server \(e) is not host:port") }
        self.endpoints = list
        self.timeoutMillis = timeoutMillis
        group = given ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        ownsGroup = given == nil
        // Start at a random one, so that many clients spread over them (RocketMQ does the same).
        state.withLockedValue { $0.rotation = Int.random(in: 0..<list.count) }
    }

    public func shutdown() async {
        let conns = state.withLockedValue { s -> [Connection] in
            s.closed = true
            defer { s.connections = [:] }
            return Array(s.connections.values)
        }
        for c in conns { c.close() }
        if ownsGroup { try? await group.shutdownGracefully() }
    }

    func call(_ endpoint: String, _ op: Opcode, _ body: [UInt8]) async throws -> [UInt8] {
        sent.withLockedValue { $0 += 1 }
        let existing = state.withLockedValue { s -> Connection? in s.closed ? nil : s.connections[endpoint] }
        if let c = existing, c.isActive { return try await c.call(op, body, timeoutMillis: timeoutMillis) }
        if state.withLockedValue({ $0.closed }) { throw ClientError.invalidArgument("the name server client was shut down") }
        let c = try await Connection.connect(to: endpoint, group: group, timeoutMillis: min(timeoutMillis, 1000))
        state.withLockedValue { $0.connections[endpoint] = c }
        return try await c.call(op, body, timeoutMillis: timeoutMillis)
    }

    /// Asks the name servers in turn until one answers. "No such topic" is the answer only when
    /// every one that answered says so (one restarted a moment ago knows no group yet).
    func ask(_ op: Opcode, _ body: [UInt8]) async throws -> [UInt8] {
        let start = state.withLockedValue { s -> Int in
            s.rotation += 1
            return s.rotation
        }
        var lastError: Error = ClientError.timedOut("\(op)")
        var notFound: ClientError?
        for k in 0..<endpoints.count {
            let e = endpoints[(start + k) % endpoints.count]
            do {
                return try await call(e, op, body)
            } catch ClientError.broker(let b) where b.code == ErrorCode.topicNotFound {
                notFound = ClientError.broker(b)
            } catch {
                lastError = ClientError.connectionFailed(endpoint: e, reason: "name server: \(error)")
            }
        }
        throw notFound ?? lastError
    }

    /// Which groups hold `topic`'s queues, and their members (throws topicNotFound). Every name
    /// server is asked at once and their answers joined: one restarted a moment ago has not
    /// heard from every group yet.
    public func route(topic: String) async throws -> TopicRoute {
        guard !topic.isEmpty else { throw ClientError.invalidArgument("a route names a topic") }
        return try await joinedRoute(topic)
    }

    /// Every live group with its members (an empty topic's route), joined over the name servers.
    public func liveGroups() async throws -> TopicRoute { try await joinedRoute("") }

    private func joinedRoute(_ topic: String) async throws -> TopicRoute {
        let body = NameRequest(name: topic).encoded()
        let answers = await withTaskGroup(of: Result<TopicRoute, Error>.self) { tasks in
            for e in endpoints {
                tasks.addTask {
                    do {
                        return .success(try TopicRoute.decode(try await self.call(e, .topicRoute, body)))
                    } catch let error as ClientError {
                        if case .broker = error { return .failure(error) }
                        return .failure(ClientError.connectionFailed(endpoint: e, reason: "name server: \(error)"))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var out: [Result<TopicRoute, Error>] = []
            for await r in tasks { out.append(r) }
            return out
        }
        var best: [String: GroupRoute] = [:]
        var answered = false
        var complete = false
        var notFound: Error?
        var lastError: Error?
        for a in answers {
            switch a {
            case .success(let route):
                answered = true
                complete = complete || route.complete
                for g in route.groups where best[g.group].map({ g.term > $0.term || (g.term == $0.term && g.queues > $0.queues) }) ?? true {
                    best[g.group] = g
                }
            case .failure(let e as ClientError) where e.code == ErrorCode.topicNotFound: notFound = e
            case .failure(let e): lastError = e
            }
        }
        if best.isEmpty {
            if let notFound { throw notFound }
            if !answered { throw lastError ?? ClientError.timedOut("no name server answered") }
        }
        // A name server's "no such topic" is the last word even beside starting ones' silence.
        return TopicRoute(groups: Array(best.values), complete: complete || notFound != nil)
    }

    /// Every live broker group (from the first name server that answers).
    public func brokerGroups() async throws -> BrokerGroupList {
        try BrokerGroupList.decode(try await ask(.listBrokerGroups, Empty().encoded()))
    }

    /// Every live group as one name server sees it (`tern admin cluster status` shows each).
    public func brokerGroups(at endpoint: String) async throws -> BrokerGroupList {
        try BrokerGroupList.decode(try await call(endpoint, .listBrokerGroups, Empty().encoded()))
    }

    /// Sends `registration` to every name server at once; each one's outcome, in endpoint order.
    public func register(_ registration: GroupRegistration) async -> [(endpoint: String, error: Error?)] {
        let body = registration.encoded()
        return await withTaskGroup(of: (Int, Error?).self) { tasks in
            for (k, e) in endpoints.enumerated() {
                tasks.addTask {
                    do {
                        _ = try await self.call(e, .registerGroup, body)
                        return (k, nil)
                    } catch {
                        return (k, error)
                    }
                }
            }
            var out = [(endpoint: String, error: Error?)](repeating: ("", nil), count: endpoints.count)
            for await (k, error) in tasks { out[k] = (endpoints[k], error) }
            return out
        }
    }
}
