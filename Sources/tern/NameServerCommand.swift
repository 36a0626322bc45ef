// `tern nameserver`: one stateless name server of a cluster of many broker groups, and
// `tern nameserver key`, which writes the key name servers check registrations with.
import ArgumentParser
import Foundation
import TernLauncher
import TernNameServer
import TernServer

struct NameServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nameserver",
        abstract: "Run a name server: the route directory of many broker groups.",
        discussion: """
            Each group's leader registers its members and topics with every name server every 10 s; \
            clients ask any name server which groups hold a topic's queues. Name servers keep \
            nothing on disk and never talk to each other: run two or more.
            """,
        subcommands: [Run.self, Key.self], defaultSubcommand: Run.self)

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run a name server (the default: tern nameserver --listen HOST:PORT ...).")
        @OptionGroup var options: NameServerOptions

        func run() throws {
            let (config, level) = try options.resolve()
            try runNameServer(config, level: level)
        }
    }

    struct Key: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the registration key of a cluster secret, for name servers (--registration-key).",
            discussion: """
                Leaders sign their registrations with a key derived from the cluster secret; a name \
                server given only that key cannot authenticate as a group member. Every secret of \
                the file gets its key (a rotation in progress keeps working).
                """)
        @Option(help: "The groups' cluster secret file (their --peer-secret).") var peerSecret: String
        @Option(help: "Write the key file here (owner-only, never overwriting); without it, print it.") var out: String?

        func run() throws {
            let text = RegistrationKey.file(for: try PeerSecrets.load(path: peerSecret))
            guard let out else { return print(text, terminator: "") }
            let fd = open(out, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else { throw ValidationError("cannot create \(out): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            let bytes = Array(text.utf8)
            guard write(fd, bytes, bytes.count) == bytes.count else { throw ValidationError("cannot write \(out): \(String(cString: strerror(errno)))") }
            print("wrote the registration key to \(out); give it to name servers with --registration-key \(out)")
        }
    }
}
