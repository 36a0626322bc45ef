// `tern admin member ...`: the group's configuration, replicated through the log (docs/raft.md,
// "Membership"; docs/operations.md, "Replacing a member"). Changes need the admin right.
import ArgumentParser
import Foundation
import TernClient
import TernLauncher
import TernProtocol

struct MemberAdmin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "member",
        abstract: "The group's members: list, add a learner, promote, remove, replace.",
        discussion: """
            A new member joins as a learner (it receives the log, does not vote), is promoted once \
            it has caught up, and voters are removed one at a time. Start the new node first \
            (tern serve --id ID --listen HOST:PORT --join MEMBER --data DIR --peer-secret FILE).
            """,
        subcommands: [List.self, Add.self, Promote.self, Remove.self, Replace.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The configuration and each member's progress (as the leader sees it).")
        @OptionGroup var endpoints: Endpoints
        @Flag(help: "One JSON object.") var json = false
        func run() async throws {
            let list = try await withCluster(endpoints) { try await $0.members() }
            if json {
                struct Member: Encodable {
                    var id, endpoint, role: String
                    var incarnation, match: UInt64
                    var caughtUp: Bool
                    var heardMillisAgo: UInt64?
                }
                struct Report: Encodable {
                    var node, leader: String
                    var term, configurationIndex, lastIndex: UInt64
                    var committed: Bool
                    var members: [Member]
                }
                try printJSON(
                    Report(
                        node: list.node, leader: list.leader, term: list.term, configurationIndex: list.configurationIndex, lastIndex: list.lastIndex,
                        committed: list.committed,
                        members: list.members.map {
                            Member(
                                id: $0.id, endpoint: $0.endpoint, role: MemberAdmin.role($0, list), incarnation: $0.incarnation, match: $0.match,
                                caughtUp: $0.caughtUp, heardMillisAgo: $0.heardMillisAgo == .max ? nil : $0.heardMillisAgo)
                        }))
                return
            }
            print(MemberAdmin.describe(list))
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a member as a learner (start it first with --join).")
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "The new member's id.") var id: String
        @Option(help: "Where the new member listens, host:port.") var endpoint: String
        func run() async throws {
            let index = try await withCluster(endpoints) { try await $0.changeMembers(MemberChangeRequest(kind: .addLearner, id: id, endpoint: endpoint)) }
            print("\(id) added as a learner at \(endpoint) (configuration entry \(index)); promote it once `tern admin member list` shows it caught up")
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a caught-up learner a voter (refused while it has not caught up).")
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "The learner's id.") var id: String
        func run() async throws {
            let index = try await withCluster(endpoints) { try await $0.changeMembers(MemberChangeRequest(kind: .promote, id: id)) }
            print("\(id) is a voter (configuration entry \(index))")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member (a leader removing itself hands over and steps down).")
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "The member's id.") var id: String
        func run() async throws {
            let index = try await withCluster(endpoints) { try await $0.changeMembers(MemberChangeRequest(kind: .remove, id: id)) }
            print("\(id) removed (configuration entry \(index)); its node can be stopped and its data deleted")
        }
    }

    struct Replace: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace a member: add the new one as a learner, wait until it caught up, promote it, remove the old one.",
            discussion: "Each step is printed. Safe to run again after an interruption: steps already done are recognized.")
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "The member to replace.") var old: String
        @Option(name: .customLong("with"), help: "The new member's id (its node started with --join).") var new: String
        @Option(help: "Where the new member listens, host:port.") var endpoint: String
        @Option(help: "Give up when the new member has not caught up within this many seconds.") var catchUpTimeout: Double = 1800

        func run() async throws {
            try await withCluster(endpoints) { c in
                let start = Date()
                func elapsed() -> String { String(format: "%6.1fs", Date().timeIntervalSince(start)) }
                var list = try await c.members()
                guard list.members.contains(where: { $0.id == old }) else { throw ValidationError("\(old) is not a member (\(MemberAdmin.names(list)))") }
                if let existing = list.members.first(where: { $0.id == new }) {
                    print("\(elapsed()) 1/4 \(new) is a member already (\(existing.learner ? "learner" : "voter")): not added again")
                } else {
                    print("\(elapsed()) 1/4 adding \(new) at \(endpoint) as a learner")
                    try await c.changeMembers(MemberChangeRequest(kind: .addLearner, id: new, endpoint: endpoint))
                }
                list = try await c.members()
                if list.members.first(where: { $0.id == new })?.learner ?? false {
                    print("\(elapsed()) 2/4 waiting for \(new) to catch up")
                    var lastPrint = Date.distantPast
                    var first: (at: Date, match: UInt64)?
                    while true {
                        list = try await c.members()
                        guard let m = list.members.first(where: { $0.id == new }) else { throw ValidationError("\(new) left the configuration meanwhile") }
                        if first == nil && m.match > 0 { first = (Date(), m.match) }
                        if m.caughtUp { break }
                        if Date().timeIntervalSince(lastPrint) >= 2 {
                            lastPrint = Date()
                            let pct = list.lastIndex > 0 ? Double(m.match) * 100 / Double(list.lastIndex) : 0
                            let rate =
                                first.map { f -> String in
                                    let s = Date().timeIntervalSince(f.at)
                                    return s > 0.5 ? String(format: ", %.0f entries/s", Double(m.match - min(m.match, f.match)) / s) : ""
                                } ?? ""
                            let heard = m.heardMillisAgo == .max ? "not heard from yet" : "heard \(m.heardMillisAgo) ms ago"
                            print(
                                "\(elapsed())     \(new) holds the log through \(m.match) of \(list.lastIndex) (\(String(format: "%.1f", pct))%\(rate)); \(heard)"
                            )
                        }
                        if Date().timeIntervalSince(start) > catchUpTimeout {
                            throw ValidationError(
                                "\(new) has not caught up within \(Int(catchUpTimeout)) s; it stays a learner (remove it with tern admin member remove \(new))")
                        }
                        try await Task.sleep(for: .milliseconds(250))
                    }
                    print("\(elapsed()) 3/4 promoting \(new)")
                    var tries = 0
                    while true {
                        do {
                            try await c.changeMembers(MemberChangeRequest(kind: .promote, id: new))
                            break
                        } catch ClientError.broker(let e) where e.code == ErrorCode.notCaughtUp && tries < 20 {
                            tries += 1  // fell behind again between the list and the promotion
                            try await Task.sleep(for: .milliseconds(250))
                        }
                    }
                } else {
                    print("\(elapsed()) 2-3/4 \(new) is a voter already")
                }
                print("\(elapsed()) 4/4 removing \(old)")
                do {
                    try await c.changeMembers(MemberChangeRequest(kind: .remove, id: old))
                } catch ClientError.broker(let e) where e.message.hasSuffix("is not a member") {
                    print("\(elapsed())     \(old) was removed already")
                }
                list = try await c.members()
                print("\(elapsed()) done: \(MemberAdmin.names(list)); \(old)'s node can be stopped and its data deleted")
            }
        }
    }

    static func role(_ m: MemberInfo, _ list: MemberList) -> String {
        m.id == list.leader ? "leader" : (m.learner ? "learner" : "voter")
    }

    static func names(_ list: MemberList) -> String {
        list.members.map { "\($0.id)\($0.learner ? " (learner)" : "")" }.joined(separator: ", ")
    }

    static func describe(_ list: MemberList) -> String {
        var lines = [
            "configuration entry \(list.configurationIndex)\(list.configurationIndex == 0 ? " (the founding one, from --peers)" : "")\(list.committed ? "" : ", not committed yet"); term \(list.term); answered by \(list.node)\(list.node == list.leader ? " (the leader)" : "")"
        ]
        lines.append("id          role     endpoint               incarnation       match       caught up  heard")
        for m in list.members {
            let progress = list.node == list.leader
            let cells = [
                m.id.padding(10), role(m, list).padding(7), m.endpoint.padding(21),
                (m.incarnation == 0 ? "-" : String(m.incarnation, radix: 16)).padding(16),
                (progress ? String(m.match) : "-").padding(10), (progress ? (m.caughtUp ? "yes" : "no") : "-").padding(9),
                progress ? (m.heardMillisAgo == .max ? "never" : "\(m.heardMillisAgo) ms ago") : "-",
            ]
            lines.append(cells.joined(separator: "  "))
        }
        return lines.joined(separator: "\n")
    }
}
