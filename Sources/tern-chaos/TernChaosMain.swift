// `tern-chaos`: the chaos harness (`tern-chaos run`, also reached as `tern chaos`) and the node it
// runs (`tern-chaos serve`, with test hooks). Built beside `tern`; never shipped as the broker.
import ArgumentParser
import TernChaos

@main
struct TernChaosMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern-chaos",
        abstract: "Tern's chaos harness: a real cluster under faults, checked (docs/chaos.md).",
        subcommands: [ChaosRun.self, ChaosServe.self],
        defaultSubcommand: ChaosRun.self)
}
