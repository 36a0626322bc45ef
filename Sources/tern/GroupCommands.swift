// `tern admin group`: consumer groups with settings. Groups need no creation; one that should
// consume in FIFO order (receive/ack, RocketMQ 5's FIFO groups) is created with --fifo first.
import ArgumentParser
import Foundation
import TernClient
import TernLauncher
import TernOps
import TernProtocol

struct GroupAdmin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "Consumer groups: their progress and lag, and settings (FIFO receive/ack groups).",
        subcommands: [List.self, Describe.self, Create.self, Show.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every consumer group the group's leader knows, with its total lag.")
        @OptionGroup var endpoints: Endpoints
        func run() async throws {
            let rows = try await withCluster(endpoints) { cluster -> [[GroupProgress]] in
                var out: [[GroupProgress]] = []
                for name in try await cluster.listGroups() { out.append(try await cluster.groupProgressByGroup(name).map(\.progress)) }
                return out
            }
            // Through name servers a consumer group's members and queues are counted over the
            // broker groups (a member counts once per broker group it consumes in).
            print("group                 members  queues  lag")
            for parts in rows {
                guard let g = parts.first else { continue }
                let members = Set(parts.flatMap { $0.members.map(\.clientID) }).count
                let queues = parts.reduce(0) { $0 + $1.queues.count }
                print("\(g.group.padding(20))  \(String(members).padding(7))  \(String(queues).padding(6))  \(parts.reduce(0) { $0 + $1.totalLag })")
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "A consumer group's members, their queues, and per queue its committed offset, the queue's bounds, the lag and when the last consumed message was stored.",
            discussion: """
                Lag is the queue's max offset minus the group's committed offset (for a receive/ack \
                group: the messages not yet handed out plus those still unacknowledged), the \
                same as `tern admin topic describe` minus the committed offsets; messages deleted \
                by retention are not counted.
                """)
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "Group name.") var name: String
        @Flag(help: "One JSON object.") var json = false
        func run() async throws {
            let parts = try await withCluster(endpoints) { try await $0.groupProgressByGroup(name) }
            if json {
                if parts.count == 1 && parts[0].group.isEmpty { return try printJSON(GroupView(parts[0].progress)) }
                struct ByGroup: Encodable {
                    var brokerGroup: String
                    var progress: GroupView
                }
                return try printJSON(parts.map { ByGroup(brokerGroup: $0.group, progress: GroupView($0.progress)) })
            }
            for (k, (broker, g)) in parts.enumerated() {
                if k > 0 { print("") }
                describe(g, in: broker)
            }
        }

        func describe(_ g: GroupProgress, in broker: String) {
            print(
                "group \(g.group)\(broker.isEmpty ? "" : " in broker group \(broker)"): \(g.members.count) live members, lag \(g.totalLag)\(g.fifo ? " (fifo)" : "")"
            )
            for m in g.members { print("  member \(m.clientID): \(m.queues.map(\.description).joined(separator: ", "))") }
            print("queue                 committed  min        max        lag        last consumed (stored)")
            for q in g.queues {
                let committed = q.committed.map(String.init) ?? (q.receiveNext.map { "next \($0)" } ?? "-")
                let last =
                    q.lastConsumedStored == 0 ? "-" : ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(q.lastConsumedStored) / 1000))
                print(
                    "\(q.queue.description.padding(20))  \(committed.padding(9))  \(String(q.minOffset).padding(9))  \(String(q.maxOffset).padding(9))  \(String(q.lag).padding(9))  \(last)"
                )
            }
        }
    }

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
