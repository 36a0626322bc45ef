import TernRaft
import Testing

@testable import TernSimulation

@Suite("Simulation: many broker groups")
struct GroupsSimulationTests {
    @Test("two groups behind two name servers: one seed replays exactly, every checker passes, stale routes are refused")
    func twoGroups() {
        var options = GroupsOptions(seed: 3)
        options.seconds = 10
        let a = Simulation.run(options), b = Simulation.run(options)
        #expect(a.ok, "\(a.violations.prefix(3))")
        #expect(a.digest == b.digest)
        #expect(a.routedAcknowledged > 50, "\(a.routedAcknowledged) routed sends acknowledged")
        #expect(a.groups.allSatisfy { $0.acknowledged > 50 })
        var other = options
        other.seed = 4
        #expect(Simulation.run(other).digest != a.digest)
    }

    @Test("a client that skips the broker group check on a stale route is caught: acknowledged by the wrong group")
    func staleRoutePlant() {
        var options = GroupsOptions(seed: 1)
        options.seconds = 20
        options.plantedBugs = .skipGroupCheck
        let r = Simulation.run(options)
        #expect(r.violations.contains { $0.contains("stale route") && $0.contains("was acknowledged by") }, "\(r.violations.prefix(2))")
        options.plantedBugs = []
        let clean = Simulation.run(options)
        #expect(clean.ok && clean.staleRoutesRefused > 0, "the same seed without the bug: \(clean.violations.prefix(2)), \(clean.staleRoutesRefused) refused")
    }
}
