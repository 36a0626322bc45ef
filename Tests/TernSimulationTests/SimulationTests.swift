import Testing
import TernRaft
@testable import TernSimulation

@Suite("Simulation")
struct SimulationTests {
    @Test("one seed replays exactly: the same trace digest twice")
    func determinism() {
        var options = SimulationOptions(seed: 42)
        options.seconds = 10
        let a = Simulation.run(options), b = Simulation.run(options)
        #expect(a.digest == b.digest)
        #expect(a.events == b.events && a.events > 1000)
        var other = options
        other.seed = 43
        #expect(Simulation.run(other).digest != a.digest, "another seed takes another path")
    }
}
