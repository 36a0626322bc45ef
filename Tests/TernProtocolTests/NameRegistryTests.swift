import Testing

@testable import TernProtocol

@Suite("Protocol: name server registry and bodies")
struct NameRegistryTests {
    func registration(_ group: String, term: UInt64, version: UInt64 = 1, sentAt: UInt64 = 0, topics: [RegisteredTopic] = []) -> GroupRegistration {
        var r = GroupRegistration(
            group: group, leader: "n1", term: term, version: version,
            members: [GroupMember(id: "n1", endpoint: "h:\(term)"), GroupMember(id: "n2", endpoint: "h:9")],
            topics: topics)
        r.sentAt = sentAt
        return r
    }

    @Test("bodies decode to themselves; a group's name travels in route and status answers only when not the default")
    func roundTrips() throws {
        var r = registration("g2", term: 3, topics: [RegisteredTopic(name: "b", queues: 4, type: .fifo), RegisteredTopic(name: "a", queues: 8)])
        r.mac = [1, 2, 3]
        #expect(try GroupRegistration.decode(r.encoded()) == r)
        #expect(r.topics.map(\.name) == ["a", "b"])
        let route = TopicRoute(groups: [
            GroupRoute(group: "g2", queues: 4, type: .mixed, leader: "n1", term: 2, members: [GroupMember(id: "n1", endpoint: "h:1")]),
            GroupRoute(group: "g1", queues: 4, type: .mixed, leader: "", term: 1, members: []),
        ])
        #expect(try TopicRoute.decode(route.encoded()) == route)
        let starting = TopicRoute(groups: route.groups, complete: false)
        #expect(try TopicRoute.decode(starting.encoded()).complete == false)
        #expect(starting.encoded().count == route.encoded().count + 1, "complete routes encode as before")
        #expect(route.groups.map(\.group) == ["g1", "g2"] && route.totalQueues == 8)
        let list = BrokerGroupList(groups: [r], ageMillis: [5])
        let decoded = try BrokerGroupList.decode(list.encoded())
        #expect(decoded.groups[0].mac.isEmpty && decoded.groups[0].topics == r.topics && decoded.ageMillis == [5])

        var named = RouteResponse(leader: "n1", term: 1, nodes: [], topicQueues: 0)
        let plain = named.encoded()
        named.brokerGroup = "g2"
        #expect(try RouteResponse.decode(named.encoded()).brokerGroup == "g2")
        #expect(try RouteResponse.decode(plain).brokerGroup == "g1")
        #expect(named.encoded().count > plain.count)
        var status = NodeStatus(id: "n1", role: "leader", term: 1, leader: "n1", commitIndex: 1, lastIndex: 1, appliedIndex: 1, durableIndex: 1)
        let before = status.encoded()
        status.brokerGroup = "orders-eu"
        #expect(try NodeStatus.decode(status.encoded()) == status)
        #expect(try NodeStatus.decode(before).brokerGroup == "g1")
    }

    @Test("broker group names: lower-case letters, digits, dashes, 1 to 32")
    func names() {
        for ok in ["g1", "orders-eu", "0", String(repeating: "a", count: 32)] { #expect(BrokerGroupName.problem(ok) == nil, "\(ok)") }
        for bad in ["", "G1", "-g", "g/1", "g 1", String(repeating: "a", count: 33), "grüppe"] { #expect(BrokerGroupName.problem(bad) != nil, "\(bad)") }
    }

    @Test("a lower term, a lower version in the same term, or the same registration again is stale; an expired entry takes anything; groups are capped")
    func staleness() {
        var reg = NameRegistry(expiryMillis: 1000)
        #expect(reg.register(registration("g1", term: 5, version: 10, sentAt: 100), now: 0) == .accepted)
        #expect(reg.register(registration("g1", term: 4, version: 99, sentAt: 200), now: 10) == .stale)
        #expect(reg.register(registration("g1", term: 5, version: 9, sentAt: 200), now: 20) == .stale)
        #expect(reg.register(registration("g1", term: 5, version: 10, sentAt: 100), now: 25) == .stale, "a replay of the one held")
        #expect(reg.register(registration("g1", term: 5, version: 10, sentAt: 110), now: 30) == .accepted, "an idle group's next period")
        #expect(reg.register(registration("g1", term: 6, version: 1, sentAt: 120), now: 40) == .accepted)
        #expect(reg.entries["g1"]?.registration.term == 6)
        // After expiry a group that restarted from scratch (term 1) registers again.
        #expect(reg.register(registration("g1", term: 1), now: 1040) == .accepted)
        reg.maxGroups = 2
        #expect(reg.register(registration("g2", term: 1), now: 1040) == .accepted)
        #expect(reg.register(registration("g3", term: 1), now: 1040) == .full)
        #expect(reg.register(registration("g2", term: 1, sentAt: 1), now: 1041) == .accepted, "a group held is not refused")
    }

    @Test("groups expire when their registrations stop; routes list the live groups holding the topic")
    func expiryAndRoutes() {
        var reg = NameRegistry(expiryMillis: 1000)
        _ = reg.register(registration("g2", term: 1, topics: [RegisteredTopic(name: "t", queues: 3)]), now: 0)
        _ = reg.register(registration("g1", term: 2, topics: [RegisteredTopic(name: "t", queues: 5), RegisteredTopic(name: "u", queues: 1)]), now: 500)
        #expect(reg.route("t", now: 600).groups.map(\.group) == ["g1", "g2"])
        #expect(reg.route("t", now: 600).totalQueues == 8)
        #expect(reg.route("u", now: 600).groups.map(\.queues) == [1])
        #expect(reg.route("nope", now: 600).groups.isEmpty)
        #expect(reg.route("", now: 600).groups.map(\.group) == ["g1", "g2"])
        // g2 stops registering: it leaves the routes at once when its time is up, before a scan.
        #expect(reg.route("t", now: 1000).groups.map(\.group) == ["g1"])
        #expect(reg.expire(now: 1000) == ["g2"])
        #expect(reg.expire(now: 1499).isEmpty)
        #expect(reg.expire(now: 1500) == ["g1"])
        #expect(reg.live(now: 1500).isEmpty)
    }
}
