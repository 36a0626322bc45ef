// Membership changes in the simulated world: an operator client that adds, promotes, removes and
// replaces members through the real admin requests (`memberChange`, to the leader, with the
// SDK's retries), new nodes started empty (`tern serve --join`), members retired once their
// removal applied, and the checks that belong to changing configurations:
//  - a leader whose removal committed (as the world saw it applied) must not lead on;
//  - liveness counts the members of the final committed configuration (strangers, members
//    that came back with an empty disk and a new incarnation, excepted), and the operator's
//    last change must complete after the faults stop.
// Election safety, no acknowledged entry lost and linearizable lease reads are the checkers of
// Checker.swift, unchanged: they hold across configurations.
//
// A member that lost its disk (a crash with a wipe) comes back as a new incarnation: once the
// leader stamped the old one, the group ignores it, and the operator replaces it as an operator
// would (add a new member, promote it, remove the old one).
import TernNode
import TernProtocol
import TernRaft

extension World {
    /// Mean virtual seconds between membership changes the operator starts (0: only
    /// replacements of members that lost their disk). A function of the seed, like the storage
    /// shape, so the fault mix's other draws stay as they were.
    var membershipShape: (every: Double, crashAfterConfig: Double) {
        let h = (options.seed &+ 0x3E3B).multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15).low
        guard options.faults, h >> 62 != 0 else { return (0, 0) }  // a quarter of the seeds: none
        return (2 + Double((h >> 40) % 8), (h >> 39) & 1 == 0 ? 0 : 0.3)
    }

    /// The founding members' configuration (`--peers`).
    var foundingMembership: Membership { Membership(voters: nodes.prefix(options.nodes).map(\.id)) }

    /// The latest configuration any node applied (committed), or the founding one.
    var committedMembership: Membership { checker.committedMembership?.membership ?? foundingMembership }

    /// A member of the committed configuration that came back as another incarnation.
    func isStranger(_ node: SimNode) -> Bool {
        guard let m = committedMembership.member(node.id), m.incarnation != 0, let now = node.raftIncarnation else { return false }
        return m.incarnation != now
    }

    /// Nodes that must apply everything and serve: members of the committed configuration, not
    /// retired, not strangers.
    var liveMembers: [SimNode] {
        let m = committedMembership
        return nodes.filter { !$0.retired && m.member($0.id) != nil && !isStranger($0) }
    }

    /// A node not retired, at random: where clients send (the SDK learns the members from
    /// routes) and where faults strike.
    func randomNode() -> Int {
        let live = nodes.indices.filter { !nodes[$0].retired }
        return live.isEmpty ? 0 : live[Int(below(UInt64(live.count)))]
    }

    /// The next node after `k` not retired, round the list (the SDK trying the next member).
    func nextNode(after k: Int) -> Int {
        for step in 1...max(1, nodes.count) where !nodes[(k + step) % nodes.count].retired { return (k + step) % nodes.count }
        return k
    }

    /// A new, empty node that waits to be added (`tern serve --join`).
    func addNode() -> SimNode {
        let node = SimNode(index: nodes.count)
        node.joiner = true
        nodes.append(node)
        start(node)
        schedule(.tick(node.index), after: 1 + below(World.tickMicros))
        trace("new node \(node.id) started empty, waiting to be added")
        count("membership: node started")
        return node
    }

    /// The member's removal applied: the machine goes away for good.
    func retire(_ k: Int) {
        let node = nodes[k]
        guard !node.retired else { return }
        node.retired = true
        node.amnesiac = false
        if node.replica != nil { powerOff(node) }
        node.device.wipe()
        trace("\(node.id) retired (removed from the group)")
        count("membership: node retired")
    }

    /// The operator's next plan: replace a stranger first; with faults on, now and then a random
    /// change (replace a voter, the leader included; grow; shrink; add a learner and remove it).
    func drawMembershipPlan() -> [SimOperator.Step] {
        let m = committedMembership
        if let stranger = nodes.first(where: { !$0.retired && m.member($0.id) != nil && isStranger($0) }) {
            trace("operator: \(stranger.id) came back as another incarnation; replacing it")
            count("membership: replace a stranger")
            let fresh = addNode()
            return [.add(fresh.index), .promote(fresh.index), .remove(stranger.index)]
        }
        let every = membershipShape.every
        guard faultsOn, every > 0, chance(0.2 / every) else { return [] }
        let voters = m.voters.map { index(of: $0) }.filter { !nodes[$0].retired }
        let low = options.nodes, high = options.nodes + 2
        switch below(4) {
        case 0 where !voters.isEmpty:
            let old = voters[Int(below(UInt64(voters.count)))]
            count("membership: replace")
            let fresh = addNode()
            return [.add(fresh.index), .promote(fresh.index), .remove(old)]
        case 1 where m.voters.count < high:
            count("membership: grow")
            let fresh = addNode()
            return [.add(fresh.index), .promote(fresh.index)]
        case 2 where m.voters.count > low:
            // The leader, when known, half of the time.
            let leader = nodes.first(where: { $0.node?.isLeader ?? false })?.index
            let victim = leader != nil && chance(0.5) ? leader! : voters[Int(below(UInt64(voters.count)))]
            count(victim == leader ? "membership: remove the leader" : "membership: shrink")
            return [.remove(victim)]
        default:
            count("membership: add and remove a learner")
            let fresh = addNode()
            return [.add(fresh.index), .remove(fresh.index)]
        }
    }

    /// After each output: a leader whose removal committed must have stepped down, and (faults
    /// on) a crash right after a configuration entry is appended or applied.
    func checkMembership(_ node: SimNode, _ out: NodeOutput) {
        guard let raft = node.replica?.raft else { return }
        // (Not "not a voter": a learner promoted by an entry not yet committed is a voter where
        // that entry is in the log, and may be elected.)
        if raft.role == .leader, let c = checker.committedMembership, raft.commitIndex >= c.index, c.membership.member(node.id) == nil {
            checker.violations.append(
                "removed leader: \(node.id) leads term \(raft.term) with commit \(raft.commitIndex), past its removal at entry \(c.index) (members \(c.membership.ids))"
            )
        }
        if raft.membershipIndex != node.lastMembershipIndex {
            trace(
                "\(node.id) configuration \(node.lastMembershipIndex) -> \(raft.membershipIndex) (\(raft.role), commit \(raft.commitIndex)): \(raft.membership)"
            )
        }
        let appended = raft.membershipIndex > node.lastMembershipIndex
        if appended && raft.role == .leader { checkChangeRules(node, raft, previous: node.lastMembershipIndex) }
        node.lastMembershipIndex = raft.membershipIndex
        guard faultsOn, membershipShape.crashAfterConfig > 0 else { return }
        let applied = out.applied.contains { $0.type == RaftEntryType.membership }
        if (appended || applied) && chance(membershipShape.crashAfterConfig) {
            count(applied ? "crash after a configuration applied" : "crash after a configuration appended")
            schedule(.crashNow(node.index), after: below(500))
        }
    }
}

extension World {
    /// The rules of single-server changes, checked from outside on every configuration a leader
    /// appends in its own term (the leader's log and what the world saw committed):
    ///  - an entry of the leader's term was committed before it (the raft-dev fix of 2015);
    ///  - it is the only configuration entry since the one in effect before, which was committed;
    ///  - the voters differ from the previous configuration's by at most one.
    func checkChangeRules(_ node: SimNode, _ raft: Raft, previous: UInt64) {
        guard let log = node.replica?.log, raft.membershipIndex > previous,
            let entries = try? log.read(from: previous + 1, maxBytes: Int.max).filter({ $0.index <= raft.membershipIndex })
        else { return }
        let configs = entries.filter { $0.type == RaftEntryType.membership }
        guard let last = configs.last, last.term == raft.term else { return }  // not appended by this leader
        var problems: [String] = []
        if !(checker.firstCommittedInTerm[raft.term].map { $0 < last.index } ?? false) {
            problems.append("no entry of term \(raft.term) was committed before it")
        }
        if configs.count > 1 {
            problems.append("\(configs.count) configuration entries (\(configs.map(\.index))) were appended since the one in effect before (entry \(previous))")
        }
        if previous > 0 && checker.committed[previous] == nil && raft.commitIndex < previous {
            problems.append("the configuration before it (entry \(previous)) was not committed")
        }
        var before: Membership? = previous == 0 ? foundingMembership : nil
        if previous > 0, let e = try? log.read(from: previous, maxBytes: 1).first, e.index == previous { before = Membership.decode(e.body) }
        if let before, let now = Membership.decode(last.body) {
            let a = Set(before.voters), b = Set(now.voters)
            if a.symmetricDifference(b).count > 1 { problems.append("its voters \(now.voters) differ from \(before.voters) by more than one") }
        }
        if !problems.isEmpty {
            checker.violations.append(
                "membership change rule: \(node.id) appended configuration entry \(last.index) in term \(raft.term), but " + problems.joined(separator: "; "))
        }
    }
}

/// The operator: runs one plan at a time, one step at a time, each step retried until the
/// leader answers it (a lost answer retried finds its change made: "already a member" after an
/// add, "a voter already" after a promote, "not a member" after a removal count as done).
final class SimOperator: SimClient {
    enum Step: Equatable { case add(Int), promote(Int), remove(Int) }
    let index: Int
    var plan: [Step] = []
    var target = 0
    var nextRequestID: UInt64 = 1
    var inFlight: (id: UInt64, sentAt: UInt64)?

    init(index: Int) { self.index = index }

    func timer(_ world: World) {
        world.schedule(.client(index), after: 100_000 + world.below(200_000))
        if let f = inFlight {
            if world.now - f.sentAt < 1_000_000 { return }
            // No answer: the node is down or the request was lost; try another (as the SDK does).
            target = world.randomNode()
            inFlight = nil
        }
        if case .promote(let k) = plan.first, world.isStranger(world.nodes[k]) {
            // The learner lost its disk before its promotion: remove it instead (the next plan
            // replaces nothing: it is gone).
            world.trace("operator: \(world.nodes[k].id) lost its disk as a learner; removing it")
            plan = [.remove(k)]
        }
        if plan.isEmpty { plan = world.drawMembershipPlan() }
        guard let step = plan.first else { return }
        let request: MemberChangeRequest
        switch step {
        case .add(let k): request = MemberChangeRequest(kind: .addLearner, id: world.nodes[k].id.name, endpoint: world.address(of: k))
        case .promote(let k): request = MemberChangeRequest(kind: .promote, id: world.nodes[k].id.name)
        case .remove(let k): request = MemberChangeRequest(kind: .remove, id: world.nodes[k].id.name)
        }
        let id = nextRequestID
        nextRequestID += 1
        inFlight = (id, world.now)
        world.trace("operator: \(step) via n\(target + 1)")
        world.sendRequest(
            to: target, client: ClientRef(connection: UInt64(index + 1), requestID: id),
            frame: Frame(opcode: Opcode.memberChange.rawValue, requestID: id, body: request.encoded()))
    }

    func reply(_ r: Reply, _ world: World) {
        guard let f = inFlight, r.to.requestID == f.id, let step = plan.first else { return }
        inFlight = nil
        switch r.result {
        case .success:
            done(step, world)
        case .failure(let e):
            world.trace("operator: \(step) answered \(e.code): \(e.message)")
            if e.code == ErrorCode.notLeader {
                target = world.leaderHint(e)
            } else if e.code == ErrorCode.badRequest {
                let made: Bool
                switch step {
                case .add: made = e.message.hasSuffix("is already a member")
                case .promote: made = e.message.hasSuffix("is a voter already")
                case .remove: made = e.message.hasSuffix("is not a member")
                }
                if made {
                    done(step, world)
                } else {
                    world.messages.fail("operator: \(step) refused: \(e.message)")
                }
            }
        // BUSY (a change pending, the term's entry not committed) and NOT_CAUGHT_UP: the next timer retries.
        }
    }

    private func done(_ step: Step, _ world: World) {
        plan.removeFirst()
        world.trace("operator: \(step) done")
        if case .remove(let k) = step { world.retire(k) }
    }
}
