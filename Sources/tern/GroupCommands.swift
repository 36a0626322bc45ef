// `tern admin group`: consumer groups with settings. Groups need no creation; one that should
// consume in FIFO order (receive/ack, RocketMQ 5's FIFO groups) is created with --fifo first.
import ArgumentParser
import TernClient
import TernProtocol

struct GroupAdmin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "Consumer groups with settings (FIFO receive/ack groups).", subcommands: [Create.self, Show.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a consumer group with its settings.",
            discussion: """
                A FIFO group's receives hand out a queue's messages only once every earlier one \
                handed out is acknowledged (or its invisible time lapsed: then it comes again \
                first), so each message group is processed in the order it was sent.
                """)
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "Group name.") var name: String
        @Flag(help: "Consume in order: one batch of a queue at a time.") var fifo = false
        func run() async throws {
            try await withCluster(endpoints) { try await $0.createGroup(name, fifo: fifo) }
            print("created group \(name)" + (fifo ? " (fifo)" : ""))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "settings", abstract: "A group's settings.")
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "Group name.") var name: String
        func run() async throws {
            let g = try await withCluster(endpoints) { try await $0.describeGroup(name) }
            print(g.created ? "group \(g.name): \(g.fifo ? "fifo" : "not fifo")" : "group \(g.name) was never created: default settings (not fifo)")
        }
    }
}
