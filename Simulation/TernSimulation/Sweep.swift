// Running many seeds, and the planted-bug hunt, shared by tern-sim and the tests.
import TernRaft

public enum Simulation {
    public static func run(_ options: SimulationOptions) -> SimulationResult { World(options).run() }

    /// Many broker groups behind name servers (Groups.swift).
    public static func run(_ options: GroupsOptions) -> GroupsResult { GroupsWorld(options).run() }

    /// Replay command for a seed.
    public static func replayCommand(seed: UInt64, seconds: Double, plant: String?, groups: Int = 1) -> String {
        "swift run -c release tern-sim --seed \(seed) --seconds \(seconds)\(groups > 1 ? " --groups \(groups)" : "")\(plant.map { " --plant \($0)" } ?? "") --trace"
    }

    /// Runs seeds with a planted bug until a checker catches it; the first catching seed, or nil.
    public static func hunt(_ plant: PlantedBugs, seeds: ClosedRange<UInt64>, seconds: Double) -> (seed: UInt64, violation: String)? {
        for seed in seeds {
            var options = SimulationOptions(seed: seed)
            options.seconds = seconds
            options.plantedBugs = plant
            let result = run(options)
            if let first = result.violations.first { return (seed, first) }
        }
        return nil
    }
}
