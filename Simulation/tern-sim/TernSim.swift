// tern-sim: runs the real node code (Raft and broker) and simulated clients in the simulated world.
//   tern-sim --seed 7                 one seed; prints its result and trace digest
//   tern-sim --seeds 1-200            a sweep; prints failures, virtual seconds and speed
//   tern-sim --plant NAME --seeds A-B hunt a planted bug; exit 0 only when a checker caught it
//   tern-sim --list-plants
import ArgumentParser
import Foundation
import TernRaft
import TernSimulation

@main
struct TernSim: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tern-sim", abstract: "Deterministic simulation of a Tern cluster.")

    @Option(help: "One seed to run.") var seed: UInt64?
    @Option(help: "A range of seeds, A-B.") var seeds: String?
    @Option(help: "Virtual seconds with faults per seed.") var seconds: Double = 60
    @Option(help: "Replicas.") var nodes: Int = 3
    @Option(help: "A planted bug (see --list-plants).") var plant: String?
    @Flag(help: "List the planted bugs.") var listPlants = false
    @Flag(help: "Print every event.") var trace = false
    @Flag(help: "No faults (a calm world).") var noFaults = false
    @Flag(help: "The first producer turns message tracing of its topic on (the trace then rides snapshots and replays).") var messageTrace = false
    @Option(help: "Broker groups behind two simulated name servers, with a routed producer across them (docs/simulation.md, \"Many groups\").")
    var groups = 1

    func run() throws {
        if listPlants {
            for (name, _) in PlantedBugs.all { print(name) }
            return
        }
        var planted: PlantedBugs = []
        if let plant {
            guard let match = PlantedBugs.all.first(where: { $0.0 == plant }) else {
                throw ValidationError("unknown plant \(plant); --list-plants names them")
            }
            planted = match.1
        }
        let range: ClosedRange<UInt64>
        if let seed {
            range = seed...seed
        } else if let seeds {
            let parts = seeds.split(separator: "-").compactMap { UInt64($0) }
            guard parts.count == 2, parts[0] <= parts[1] else { throw ValidationError("--seeds takes A-B, e.g. 1-200") }
            range = parts[0]...parts[1]
        } else {
            throw ValidationError("give --seed N or --seeds A-B")
        }
        guard groups >= 1 && groups <= 4 else { throw ValidationError("--groups must be 1 to 4") }
        if groups > 1 { return try runGroups(range, planted: planted) }
        let started = Date()
        var virtual = 0.0
        var terms: UInt64 = 0
        var termsLed = 0
        var failures = 0
        for s in range {
            var options = SimulationOptions(seed: s)
            options.seconds = seconds
            options.nodes = nodes
            options.plantedBugs = planted
            options.trace = trace
            options.faults = !noFaults
            options.messageTrace = messageTrace
            let result = Simulation.run(options)
            virtual += result.virtualSeconds
            terms += result.terms
            termsLed += result.termsLed
            if !result.ok {
                failures += 1
                print("seed \(s) FAILED: \(result.violations.joined(separator: "; "))")
                print("  replay: \(Simulation.replayCommand(seed: s, seconds: seconds, plant: plant))")
                if plant != nil {
                    print("planted bug \(plant!) caught by seed \(s)")
                    throw ExitCode.success
                }
            } else if range.count == 1 || trace {
                let faults = result.faults.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                print(
                    "seed \(s) ok: \(String(format: "%.1f", result.virtualSeconds)) virtual s, \(result.events) events, \(result.acknowledged) sends acknowledged (\(result.messagesAcknowledged) messages and \(result.messagesDelayed) delayed ones, \(result.messagesDelivered) deliveries, \(result.orderedProcessed) processed in order, \(result.deadLettered) dead letters, transactions \(result.transactionsCommitted) committed and \(result.transactionsRolledBack) rolled back, \(result.received) received (\(result.redelivered) again)\(messageTrace ? ", \(result.tracedMessages) traced" : "")), committed through \(result.committed), \(result.reads) lease reads; faults: \(faults.isEmpty ? "none" : faults); digest \(String(result.digest, radix: 16))"
                )
            }
        }
        let wall = Date().timeIntervalSince(started)
        print(
            "\(range.count) seeds, \(failures) failed; \(String(format: "%.0f", virtual)) virtual seconds in \(String(format: "%.1f", wall)) s wall (\(String(format: "%.0f", virtual / max(wall, 1e-9)))x); \(termsLed) of \(terms) terms had a leader"
        )
        if let plant {
            print("planted bug \(plant) escaped every checker over seeds \(range.lowerBound)-\(range.upperBound)")
            throw ExitCode.failure
        }
        if failures > 0 { throw ExitCode.failure }
    }
}

extension TernSim {
    /// Seeds of a world of many groups: each group's own result, and the routed checks.
    func runGroups(_ range: ClosedRange<UInt64>, planted: PlantedBugs) throws {
        let started = Date()
        var virtual = 0.0
        var failures = 0
        var refused = 0
        for s in range {
            var options = GroupsOptions(seed: s)
            options.seconds = seconds
            options.groups = groups
            options.plantedBugs = planted
            options.trace = trace
            options.faults = !noFaults
            let result = Simulation.run(options)
            virtual += result.virtualSeconds
            refused += result.staleRoutesRefused
            if !result.ok {
                failures += 1
                print("seed \(s) FAILED: \(result.violations.prefix(5).joined(separator: "; "))")
                print("  replay: \(Simulation.replayCommand(seed: s, seconds: seconds, plant: plant, groups: groups))")
                if plant != nil {
                    print("planted bug \(plant!) caught by seed \(s)")
                    throw ExitCode.success
                }
            } else if range.count == 1 || trace {
                let faults = result.faults.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                let each = result.groups.enumerated().map { k, r in "g\(k + 1): \(r.acknowledged) sends acknowledged, committed through \(r.committed)" }
                print(
                    "seed \(s) ok: \(String(format: "%.1f", result.virtualSeconds)) virtual s; \(each.joined(separator: "; ")); \(result.routedAcknowledged) routed sends acknowledged, \(result.staleRoutesRefused) stale routes refused; faults: \(faults.isEmpty ? "none" : faults); digest \(String(result.digest, radix: 16))"
                )
            }
        }
        let wall = Date().timeIntervalSince(started)
        print(
            "\(range.count) seeds of \(groups) groups, \(failures) failed; \(String(format: "%.0f", virtual)) virtual seconds in \(String(format: "%.1f", wall)) s wall; \(refused) stale routes refused"
        )
        if let plant {
            print("planted bug \(plant) escaped every checker over seeds \(range.lowerBound)-\(range.upperBound)")
            throw ExitCode.failure
        }
        if failures > 0 { throw ExitCode.failure }
    }
}
