// `tern nameserver`: one stateless name server of a cluster of many broker groups.
import ArgumentParser
import TernLauncher

struct NameServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nameserver",
        abstract: "Run a name server: the route directory of many broker groups.",
        discussion: """
            Each group's leader registers its members and topics with every name server every 10 s; \
            clients ask any name server which groups hold a topic's queues. Name servers keep \
            nothing on disk and never talk to each other: run two or more.
            """)

    @OptionGroup var options: NameServerOptions

    func run() throws {
        let (config, level) = try options.resolve()
        try runNameServer(config, level: level)
    }
}
