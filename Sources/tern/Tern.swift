// The `tern` command: `serve`, `cluster up`, `admin`, `send`, `consume`, `bench`.
import ArgumentParser
import TernStorage

@main
struct Tern: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "Tern: a Raft-replicated message broker.",
        subcommands: [Serve.self, NameServerCommand.self, Cluster.self, Admin.self, Send.self, Consume.self, Receive.self, Ack.self, Bench.self, Chaos.self])
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print figures next to a baseline measured in the same run.",
        subcommands: [
            StorageBench.self, BenchProduce.self, BenchConsume.self, BenchFailover.self, BenchRestart.self, BenchReplace.self, BenchGRPC.self,
            BenchMetrics.self, BenchGroups.self,
        ])
}
