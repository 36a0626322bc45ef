// Client commands: admin, receive, ack, consume (`tern send` is in SendCommand.swift).
import ArgumentParser
import CTernIO
import Foundation
import TernClient
import TernLauncher
import TernProtocol

struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Topics, cluster status, leadership.",
        subcommands: [
            Topic.self, ClusterAdmin.self, TransferLeader.self, MessageAdmin.self, OffsetAdmin.self, DeadLetters.self, SnapshotNow.self, Acl.self,
            MemberAdmin.self, GroupAdmin.self,
        ])

    struct Topic: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create, list, describe and delete topics.",
            subcommands: [Create.self, List.self, Describe.self, Update.self, Delete.self, TraceTopic.self])

        struct Create: AsyncParsableCommand {
            @OptionGroup var endpoints: Endpoints
            @Argument(help: "Topic name.") var name: String
            @Option(help: "Queues (through name servers: in all, spread over the broker groups).") var queues: UInt32 = 4
            @Option(help: "The messages it takes: normal, fifo, delay, transaction, or mixed (all; the default). Others are refused.")
            var type: String = "mixed"
            @Option(help: "Through name servers: the broker groups to hold it, comma separated (default: every live group).")
            var brokerGroups: String?
            func run() async throws {
                guard let t = TopicType(name: type) else {
                    throw ValidationError("--type \(type) is not one of \(TopicType.allCases.map(\.description).joined(separator: ", "))")
                }
                let groups = brokerGroups.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
                let plan = try await withCluster(endpoints) { try await $0.createTopic(name, queues: queues, type: t, brokerGroups: groups) }
                let spread = plan.count > 1 || endpoints.nameservers != nil ? " (\(plan.map(\.description).joined(separator: " ")))" : ""
                print("created \(name) with \(queues) queues\(spread)" + (t == .mixed ? "" : ", for \(t) messages"))
            }
        }

        struct List: AsyncParsableCommand {
            @OptionGroup var endpoints: Endpoints
            func run() async throws {
                let byGroup = try await withCluster(endpoints) { try await $0.listTopicsByGroup() }
                let names = Set(byGroup.flatMap { $0.topics.map(\.name) }).sorted()
                for name in names {
                    let parts = byGroup.compactMap { g in g.topics.first { $0.name == name }.map { (g.group, $0) } }
                    let queues = parts.reduce(0) { $0 + $1.1.queues.count }
                    let messages = parts.reduce(UInt64(0)) { sum, p in sum + p.1.queues.reduce(0) { $0 + $1.maxOffset - $1.minOffset } }
                    var line = "\(name)\t\(queues) queues\t\(messages) messages"
                    if byGroup.count > 1 {
                        line += "\t" + parts.map { "\($0.0):\($0.1.queues.count)" }.joined(separator: " ")
                        let missing = byGroup.map(\.group).filter { g in !parts.contains { $0.0 == g } }
                        if !missing.isEmpty { line += "\t(not on \(missing.joined(separator: ", ")))" }
                    }
                    print(line)
                }
            }
        }

        struct Describe: AsyncParsableCommand {
            @OptionGroup var endpoints: Endpoints
            @Argument(help: "Topic name.") var name: String
            func run() async throws {
                let t = try await withCluster(endpoints) { try await $0.describeTopic(name) }
                print("topic \(t.name): \(t.queues.count) queues, \(t.type) messages\(t.traced ? ", traced" : "")")
                print("queue  minOffset  maxOffset")
                for q in t.queues { print("\(String(q.queueID).padding(5))  \(String(q.minOffset).padding(9))  \(q.maxOffset)") }
            }
        }

        struct Update: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add queues to a topic.")
            @OptionGroup var endpoints: Endpoints
            @Argument(help: "Topic name.") var name: String
            @Option(help: "The new queue count (at least the current one; through name servers, in all).") var queues: UInt32
            @Option(
                help:
                    "Through name servers: the broker groups that take the new queues, comma separated (default: the live groups without the topic, else all)."
            )
            var brokerGroups: String?
            func run() async throws {
                let groups = brokerGroups.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
                let plan = try await withCluster(endpoints) { try await $0.updateTopic(name, queues: queues, brokerGroups: groups) }
                print("\(name) now has \(queues) queues" + (plan.count > 1 ? " (\(plan.map(\.description).joined(separator: " ")))" : ""))
            }
        }

        struct Delete: AsyncParsableCommand {
            @OptionGroup var endpoints: Endpoints
            @Argument(help: "Topic name.") var name: String
            func run() async throws {
                try await withCluster(endpoints) { try await $0.deleteTopic(name) }
                print("deleted \(name)")
            }
        }
    }

    struct ClusterAdmin: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cluster", abstract: "The group's members.", subcommands: [Status.self])

        struct Status: AsyncParsableCommand {
            @OptionGroup var endpoints: Endpoints
            @Flag(help: "One JSON object with a `nodes` array.") var json = false
            func run() async throws {
                let groups = try await withCluster(endpoints) { try await $0.statusByGroup() }
                let nodes = groups.flatMap(\.nodes)
                let many = groups.count > 1 || endpoints.brokerGroup != nil || endpoints.endpoints == nil && (try? endpoints.nameServerList()) != nil
                if json {
                    struct Node: Encodable {
                        var brokerGroup, id, role, leader: String
                        var term, commitIndex, lastIndex, appliedIndex, durableIndex, firstIndex, snapshotIndex, diskBytes: UInt64
                    }
                    struct Report: Encodable { var nodes: [Node] }
                    try printJSON(
                        Report(
                            nodes: nodes.map {
                                Node(
                                    brokerGroup: $0.brokerGroup, id: $0.id, role: $0.role, leader: $0.leader, term: $0.term, commitIndex: $0.commitIndex,
                                    lastIndex: $0.lastIndex, appliedIndex: $0.appliedIndex, durableIndex: $0.durableIndex, firstIndex: $0.firstIndex,
                                    snapshotIndex: $0.snapshotIndex, diskBytes: $0.diskBytes)
                            }))
                } else {
                    print((many ? "group     " : "") + "node  role         term  commitIndex  firstIndex  lastIndex  snapshotIndex  disk MiB  leader")
                    for n in nodes {
                        let cells =
                            (many ? [n.brokerGroup.padding(8)] : []) + [
                                n.id.padding(4), n.role.padding(11), String(n.term).padding(4), String(n.commitIndex).padding(11),
                                String(n.firstIndex).padding(10), String(n.lastIndex).padding(9), String(n.snapshotIndex).padding(13),
                                String(n.diskBytes >> 20).padding(8), n.leader,
                            ]
                        print(cells.joined(separator: "  "))
                    }
                }
            }
        }
    }

    struct TransferLeader: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "transfer-leader", abstract: "Hand leadership to another member.")
        @OptionGroup var endpoints: Endpoints
        @Option(help: "The member to lead.") var to: String
        func run() async throws {
            try await withCluster(endpoints) { c in
                try await c.transferLeader(to: to)
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(5)
                while clock.now < deadline {
                    if let r = try? await c.queryRoute(), r.leader == to {
                        print("\(to) leads term \(r.term)")
                        return
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
                FileHandle.standardError.write(Data("tern: \(to) did not take over within 5 s\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

extension Admin {
    struct MessageAdmin: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "message", abstract: "Look messages up, trace them; recall delayed ones.", subcommands: [Get.self, Trace.self, Recall.self])

        struct Recall: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Cancel a delayed message that is still pending.")
            @OptionGroup var endpoints: Endpoints
            @Option(help: "Message id (repeatable).") var id: [String]
            func run() async throws {
                let ids = try parseMessageIDs(id)
                try await withCluster(endpoints) { try await $0.recall(ids) as Void }
                print("recalled \(ids.count)")
            }
        }

        struct Get: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show a message by id, or the most recent ones with a key.")
            @OptionGroup var endpoints: Endpoints
            @Option(
                help:
                    "Message id: Tern's (as send prints it: 20 hex digits, g2/ before them through name servers), or with --topic a RocketMQ client's (its UNIQ_KEY)."
            )
            var id: String?
            @Option(help: "Message key.") var key: String?
            @Option(help: "Topic (with --key, or with a client's message id).") var topic: String?
            func run() async throws {
                let found: [ReceivedMessage]
                if let id, let topic, GroupMessageID(id) == nil {
                    // A RocketMQ client's id is indexed like a key of its message.
                    found = try await withCluster(endpoints) { try await $0.messages(topic: topic, key: id) }.filter {
                        $0.message.properties[DedupeProperty.clientMessageID] == id
                    }
                    if found.isEmpty {
                        FileHandle.standardError.write(Data("tern: no message with client id \(id) in \(topic)\n".utf8))
                        throw ExitCode(1)
                    }
                } else if let id {
                    guard let mid = GroupMessageID(id) else {
                        throw ValidationError(
                            "--id \(id) is not a Tern message id (20 hex digits, after GROUP/ through name servers); a RocketMQ client's id needs --topic")
                    }
                    found = [try await withCluster(endpoints) { try await $0.message(id: mid) }]
                } else if let key {
                    guard let topic else { throw ValidationError("--key needs --topic") }
                    found = try await withCluster(endpoints) { try await $0.messages(topic: topic, key: key) }
                    if found.isEmpty {
                        FileHandle.standardError.write(Data("tern: no message with key \(key) in \(topic)\n".utf8))
                        throw ExitCode(1)
                    }
                } else {
                    throw ValidationError("give --id or --key")
                }
                for m in found { printMessage(m) }
            }
        }
    }

    struct OffsetAdmin: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "offset", abstract: "Consumer group offsets.", subcommands: [Reset.self])

        struct Reset: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Move a group's offsets to the first message stored at or after a time (replay).")
            @OptionGroup var endpoints: Endpoints
            @Option(help: "Consumer group.") var group: String
            @Option(help: "Topic (default: every topic the group has offsets in).") var topic: String?
            @Option(help: "Time: milliseconds since 1970, or ISO 8601 such as 2026-11-23T22:00:00Z.") var toTime: String
            func run() async throws {
                let ms = try parseTime(toTime, flag: "--to-time")
                let byGroup = try await withCluster(endpoints) { try await $0.resetOffsetsByGroup(group: group, topic: topic, toTimestamp: ms) }
                if byGroup.allSatisfy({ $0.offsets.isEmpty }) { print("group \(group) has no offsets to reset") }
                for (broker, offsets) in byGroup {
                    for q in offsets.keys.sorted() { print("\(broker.isEmpty ? "" : "\(broker):")\(q)\t\(offsets[q]!)") }
                }
            }
        }
    }
}

/// `--id` values as message ids (g2/ before the 20 hex digits through name servers); at least one.
func parseMessageIDs(_ texts: [String]) throws -> [GroupMessageID] {
    guard !texts.isEmpty else { throw ValidationError("give --id") }
    return try texts.map { text in
        guard let m = GroupMessageID(text) else { throw ValidationError("--id \(text) is not a message id (20 hex digits, after GROUP/ through name servers)") }
        return m
    }
}

/// "500ms", "10s", "2m", "1h", or plain milliseconds.
func parseDuration(_ text: String) -> UInt64? {
    let units: [(String, UInt64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        if let v = Double(text.dropLast(suffix.count)), v >= 0 { return UInt64(v * Double(scale)) }
    }
    return UInt64(text)
}

/// Milliseconds since 1970, or ISO 8601.
func parseTime(_ text: String, flag: String) throws -> UInt64 {
    if let v = UInt64(text) { return v }
    if let d = ISO8601DateFormatter().date(from: text) { return UInt64(max(0, d.timeIntervalSince1970 * 1000)) }
    throw ValidationError("\(flag) \(text) is neither milliseconds since 1970 nor ISO 8601")
}

extension Admin {
    struct DeadLetters: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dlq", abstract: "A consumer group's dead letters.", subcommands: [List.self, Resend.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the messages in %DLQ%<group>.")
            @OptionGroup var endpoints: Endpoints
            @Option(help: "Consumer group.") var group: String
            @Option(help: "At most this many.") var max = 100
            func run() async throws {
                let topic = "%DLQ%\(group)"
                let list = try await withCluster(endpoints) { try await $0.pullEveryGroup(topic: topic, queue: 0, max: max) }
                if list.isEmpty { print("no dead letters for group \(group)") }
                for m in list { printMessage(m) }
            }
        }

        struct Resend: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Send dead letters back to the group (through %RETRY%<group>, retry count reset).")
            @OptionGroup var endpoints: Endpoints
            @Option(help: "Consumer group.") var group: String
            @Option(help: "Dead letter id (repeatable).") var id: [String]
            func run() async throws {
                let ids = try parseMessageIDs(id)
                try await withCluster(endpoints) { c in
                    for mid in ids {
                        let dead = try await c.message(id: mid)
                        let shown = dead.groupMessageID
                        guard dead.topic == "%DLQ%\(group)" else { throw ValidationError("\(shown) is in \(dead.topic), not in %DLQ%\(group)") }
                        let r = try await c.resendDeadLetter(dead, group: group)
                        print("\(shown) -> \(r.groupMessageID) in \(r.queue.topic)")
                    }
                }
            }
        }
    }
}

func printMessage(_ m: ReceivedMessage) {
    let props = m.message.properties.keys.sorted().map { "\($0)=\(m.message.properties[$0]!)" }.joined(separator: ",")
    let text = String(decoding: m.message.body.prefix(200), as: UTF8.self).replacingOccurrences(of: "\n", with: "\\n")
    print(
        "\(m.groupMessageID)\t\(m.topic)#\(m.queueID)@\(m.queueOffset)\ttag=\(m.message.tag)\tkeys=\(m.message.keys.joined(separator: ","))\tprops=\(props)\tstored=\(m.storeTimestamp)\t\(m.message.body.count) B\t\(text)"
    )
}

struct Receive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive messages for a group (receive/ack, RocketMQ 5's SimpleConsumer); one per line with its receipt handle.",
        discussion:
            "Each received message stays invisible to the group for --invisible. With --ack (the default) it is acknowledged once printed; with --no-ack it comes back after its invisible time."
    )
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Topic.") var topic: String
    @Option(help: "Consumer group.") var group: String
    @Option(help: "Stop after this many messages.") var count: Int?
    @Option(help: "Stop after this many seconds without a message.") var timeout: Double = 5
    @Option(help: "Invisible time of each received message (e.g. 500ms, 30s, 2m).") var invisible = "30s"
    @Option(help: "Tag filter: * or tags joined by ||.") var filter = "*"
    @Flag(inversion: .prefixedNo, help: "Acknowledge each message once printed.") var ack = true

    func run() async throws {
        guard let invisibleMillis = parseDuration(invisible) else { throw ValidationError("--invisible \(invisible) is not a duration like 500ms, 30s or 2m") }
        let cluster = try endpoints.cluster()
        let consumer = SimpleConsumer(cluster: cluster, group: group, topic: topic, tagFilter: filter)
        var got = 0
        let clock = ContinuousClock()
        var lastMessage = clock.now
        var failures = 0
        while count.map({ got < $0 }) ?? true {
            if (clock.now - lastMessage).seconds >= timeout { break }
            let batch: [Delivery]
            do {
                batch = try await consumer.receive(max: UInt32(min(32, (count ?? Int.max) - got)), invisibleMillis: invisibleMillis, waitMillis: 500)
            } catch {
                FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
                failures += 1
                if failures >= 3 { break }
                continue
            }
            for d in batch {
                print("\(d.groupHandle)\tattempt \(d.attempt)\tinvisible until \(d.invisibleUntil)\t", terminator: "")
                printMessage(d.message)
                if ack {
                    do { try await consumer.ack(d) } catch { FileHandle.standardError.write(Data("tern: ack of \(d.groupHandle) failed: \(error)\n".utf8)) }
                }
                got += 1
                lastMessage = clock.now
            }
        }
        await cluster.shutdown()
        FileHandle.standardError.write(Data("tern: received \(got) messages\(ack ? " (acknowledged)" : " (not acknowledged)")\n".utf8))
        if failures >= 3 { throw ExitCode(1) }
    }
}

struct Ack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Acknowledge a received message by its receipt handle, or change its invisible time.")
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Consumer group.") var group: String
    @Option(help: "Receipt handle, as receive prints it (topic:queue:offset:index; g2/ before it through name servers).") var handle: String
    @Option(help: "Instead of acknowledging, keep it invisible this long from now (e.g. 30s).") var invisible: String?

    func run() async throws {
        guard let h = GroupReceiptHandle(handle) else { throw ValidationError("--handle \(handle) is not [group/]topic:queue:offset:index") }
        let cluster = try endpoints.cluster()
        defer { Task { await cluster.shutdown() } }
        let consumer = SimpleConsumer(cluster: cluster, group: group, topic: h.handle.queue.topic)
        do {
            if let invisible {
                guard let ms = parseDuration(invisible) else { throw ValidationError("--invisible \(invisible) is not a duration") }
                print("invisible until \(try await consumer.changeInvisible(h, invisibleMillis: ms))")
            } else {
                try await consumer.ack(h)
                print("acknowledged")
            }
        } catch let e as ClientError {
            FileHandle.standardError.write(Data("tern: \(e)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Consume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consume as a member of a group; one message per line.",
        discussion: "Starts at the group's committed offsets (at the first message for a new group) and commits what it printed.")
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Topic.") var topic: String
    @Option(help: "Consumer group.") var group: String
    @Option(help: "Stop after this many messages.") var count: Int?
    @Option(help: "Stop after this many seconds without a message.") var timeout: Double = 5
    @Option(help: "Tag filter: * or tags joined by ||.") var filter = "*"
    @Option(help: "SQL92 filter over message properties, e.g. \"a > 5 AND region IN ('eu', 'us')\".") var sql = ""
    @Flag(help: "Broadcasting mode (every member gets every message).") var broadcast = false
    @Flag(help: "Orderly: lock each queue, one message at a time, in queue order.") var orderly = false

    func run() async throws {
        let cluster = try endpoints.cluster()
        if orderly {
            guard !broadcast else { throw ValidationError("--orderly consumes in clustering mode") }
            let got = Counter()
            let consumer = OrderlyConsumer(cluster: cluster, group: group, topic: topic, tagFilter: filter, sqlFilter: sql) { m in
                if let count, got.value >= count {
                    // Enough: hold this one (not consumed) until the consumer stops.
                    try await Task.sleep(for: .seconds(3600))
                    return .retryLater
                }
                printMessage(m)
                got.increment()
                return .success
            }
            do {
                try await consumer.start()
            } catch {
                FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
                await cluster.shutdown()
                throw ExitCode(1)
            }
            let clock = ContinuousClock()
            var last = (clock.now, got.value)
            while count.map({ got.value < $0 }) ?? true {
                try await Task.sleep(for: .milliseconds(100))
                if got.value != last.1 { last = (clock.now, got.value) }
                if (clock.now - last.0).seconds >= timeout { break }
            }
            await consumer.shutdown()
            await cluster.shutdown()
            FileHandle.standardError.write(Data("tern: consumed \(got.value) messages in order\n".utf8))
            return
        }
        let consumer = PullConsumer(
            cluster: cluster, group: group, topic: topic, tagFilter: filter, sqlFilter: sql, mode: broadcast ? .broadcasting : .clustering)
        do {
            try await consumer.start()
        } catch {
            FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
            await cluster.shutdown()
            throw ExitCode(1)
        }
        var got = 0
        let clock = ContinuousClock()
        var lastMessage = clock.now
        loop: while count.map({ got < $0 }) ?? true {
            if (clock.now - lastMessage).seconds >= timeout { break }
            let batch: [ReceivedMessage]
            do {
                batch = try await consumer.poll(maxMessages: min(32, (count ?? Int.max) - got), waitMillis: 500)
            } catch {
                FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
                continue
            }
            for skip in consumer.takeRetentionSkips() {
                FileHandle.standardError.write(
                    Data(
                        "tern: \(skip.queue): offsets \(skip.from)..<\(skip.resumedAt) were deleted by retention before they were read; resumed at \(skip.resumedAt)\n"
                            .utf8))
            }
            for (k, m) in batch.enumerated() {
                printMessage(m)
                got += 1
                lastMessage = clock.now
                if let count, got >= count {
                    // What was polled and not printed goes back, in every queue it came from
                    // (through name servers a poll spans queues of several groups).
                    var back: [String: [QueueRef: UInt64]] = [:]
                    back[m.brokerGroup, default: [:]][QueueRef(topic: m.topic, queueID: m.queueID)] = m.queueOffset + 1
                    for r in batch[(k + 1)...] {
                        let q = QueueRef(topic: r.topic, queueID: r.queueID)
                        back[r.brokerGroup, default: [:]][q] = min(back[r.brokerGroup]?[q] ?? r.queueOffset, r.queueOffset)
                    }
                    for (group, queues) in back { for (q, offset) in queues { consumer.seek(q, to: offset, brokerGroup: group) } }
                    break loop
                }
            }
        }
        await consumer.shutdown()
        await cluster.shutdown()
        FileHandle.standardError.write(Data("tern: consumed \(got) messages\n".utf8))
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return n
    }
    func increment() {
        lock.lock()
        n += 1
        lock.unlock()
    }
}

extension Admin {
    struct SnapshotNow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "snapshot",
            abstract: "Every member takes a broker snapshot of what it applied, now (docs/operations.md).")
        @OptionGroup var endpoints: Endpoints
        func run() async throws {
            let answers = try await withCluster(endpoints) { try await $0.takeSnapshots() }
            var failed = false
            for a in answers {
                switch a.result {
                case .success(let s):
                    print("\(a.node): snapshot at \(s.index)\(s.written ? "" : " (written once the log is on disk through it)")")
                case .failure(let e):
                    failed = true
                    print("\(a.node): no snapshot: \(e)")
                }
            }
            if failed { throw ExitCode(1) }
        }
    }
}
