// The `tern` command. Subcommands arrive with their issues: `bench storage` now; `serve`,
// `cluster up`, `admin`, `send`, `consume` with the broker.
import ArgumentParser
import TernStorage

@main
struct Tern: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "Tern: a Raft-replicated message broker.",
        subcommands: [Bench.self])
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print figures next to a baseline measured in the same run.",
        subcommands: [StorageBench.self])
}

extension IOBackendChoice: ExpressibleByArgument {}
