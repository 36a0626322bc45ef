// `tern admin message trace` and `tern admin topic trace` (docs/operations.md, "Tracing a
// message").
import ArgumentParser
import Foundation
import TernClient
import TernLauncher
import TernOps
import TernProtocol

extension Admin.MessageAdmin {
    struct Trace: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "What happened to a message of a traced topic: stored (by which leader, in which term), delayed, released, received, acknowledged, retried, dead-lettered, consumed.",
            discussion: """
                ID is Tern's message id (20 hex digits, as send prints it); with --topic, a key or \
                a RocketMQ client's message id, whose messages are traced each. The topic must \
                have had tracing on when the message was stored (tern admin topic trace NAME on).
                """)
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "Message id, or with --topic a key or a RocketMQ client's message id.") var id: String
        @Option(help: "Topic of a key or client id.") var topic: String?
        @Flag(help: "One JSON array of traces.") var json = false

        func run() async throws {
            let traces: [MessageTrace] = try await withCluster(endpoints) { cluster in
                if let mid = GroupMessageID(id) { return [try await cluster.trace(id: mid)] }
                guard let topic else { throw ValidationError("\(id) is not a Tern message id (20 hex digits); a key or a client's id needs --topic") }
                let found = try await cluster.messages(topic: topic, key: id)
                if found.isEmpty { throw ValidationError("no message with key or client id \(id) in \(topic)") }
                var out: [MessageTrace] = []
                for m in found { out.append(try await cluster.trace(id: m.groupMessageID)) }
                return out
            }
            if json { return try printJSON(traces.map(TraceView.init)) }
            for (k, t) in traces.enumerated() {
                if k > 0 { print("") }
                print(TraceView(t).text)
            }
        }
    }
}

extension Admin.Topic {
    struct TraceTopic: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "trace",
            abstract: "Turn message tracing of a topic on or off (messages stored from then on are traced).",
            discussion: """
                A traced message's steps are kept in the replicated state for the newest 100,000 \
                traced messages, until retention deletes the message. While any topic is traced, \
                the leader writes its clock into receipts, offset commits, releases and \
                transaction ends: upgrade every member before turning tracing on.
                """)
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "Topic name.") var name: String
        @Argument(help: "on or off.") var state: String
        func run() async throws {
            guard state == "on" || state == "off" else { throw ValidationError("give on or off, not \(state)") }
            try await withCluster(endpoints) { try await $0.setTracing(topic: name, on: state == "on") }
            print("tracing of \(name) \(state)")
        }
    }
}
