// `tern chaos`: runs the chaos harness, which is a separate test-only executable (`tern-chaos`,
// built beside this one) so that the broker binary carries no harness, relays or planted bugs.
// Every argument goes to `tern-chaos run` unchanged.
import ArgumentParser
import Foundation
import TernLauncher

struct Chaos: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a three-node cluster under faults with every workload; check and report (runs tern-chaos; docs/chaos.md).")

    @Argument(parsing: .captureForPassthrough, help: "Arguments for tern-chaos run (see tern-chaos run --help).")
    var arguments: [String] = []

    func run() throws {
        guard let harness = siblingExecutable("tern-chaos") else {
            throw ValidationError(
                "tern chaos needs the tern-chaos executable next to tern; build it with `swift build --product tern-chaos` (add -c release for a release build)"
            )
        }
        let argv = [harness, "run"] + arguments
        var cArgs = argv.map { strdup($0) } + [nil]
        execv(harness, &cArgs)
        throw ValidationError("cannot run \(harness): errno \(errno)")
    }
}
