import ArgumentParser
import TernStorage

@main
struct Tern: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tern", abstract: "Tern: a Raft-replicated message broker.")
}
