// `tern admin acl ...`: accounts and their rights, replicated through the log
// (docs/security.md). Changing them needs the admin right.
import ArgumentParser
import Foundation
import TernClient
import TernProtocol

extension Rights: ExpressibleByArgument {
    public init?(argument: String) { self.init(text: argument) }
}

/// NAME=RIGHTS, as `--topic orders=pub`.
struct NamedRights: ExpressibleByArgument {
    var name: String
    var rights: Rights
    init?(argument: String) {
        let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, let r = Rights(text: parts[1]) else { return nil }
        name = parts[0]
        rights = r
    }
}

struct Acl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accounts and their rights on topics and groups (nodes started with --acl).",
        discussion: """
            Rights are pub, sub, pub|sub or deny. On a topic, pub sends and sub consumes; on a \
            group, sub consumes as that consumer group and pub acts as that producer group \
            (transactions). A topic or group an account does not name gets its default rights.
            """,
        subcommands: [Put.self, Delete.self, List.self])

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an account, or replace an account's rights (the secret stays unless a new one is given).")
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "The account's access key.") var accessKey: String
        @Option(help: "Make a new random secret and write the account's credentials file here (mode 0600; the file must not exist).")
        var newCredentials: String?
        @Option(help: "Take the secret from this credentials file (its access-key must be this account's).") var secretFrom: String?
        @Flag(help: "Topic, group, cluster and account administration; every topic and group.") var admin = false
        @Option(help: "Rights on a topic, NAME=RIGHTS (repeatable): --topic orders=pub.") var topic: [NamedRights] = []
        @Option(help: "Rights on a group, NAME=RIGHTS (repeatable): --group billing=sub.") var group: [NamedRights] = []
        @Option(help: "Rights on topics not named.") var defaultTopic: Rights = .deny
        @Option(help: "Rights on groups not named.") var defaultGroup: Rights = .deny

        func validate() throws {
            if newCredentials != nil && secretFrom != nil { throw ValidationError("--new-credentials and --secret-from exclude each other") }
            if let path = newCredentials, FileManager.default.fileExists(atPath: path) { throw ValidationError("--new-credentials \(path) exists already") }
        }

        func run() async throws {
            var secret: [UInt8] = []
            if let path = secretFrom {
                let c = try Credentials(file: path)
                guard c.accessKey == accessKey else { throw ValidationError("--secret-from \(path) is for \(c.accessKey), not \(accessKey)") }
                secret = c.secret
            }
            var generated: String?
            if newCredentials != nil {
                var rng = SystemRandomNumberGenerator()
                generated = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
                secret = Array(generated!.utf8)
            }
            let account = Account(
                accessKey: accessKey, secret: secret, admin: admin, defaultTopic: defaultTopic, defaultGroup: defaultGroup,
                topics: Dictionary(topic.map { ($0.name, $0.rights) }, uniquingKeysWith: { _, b in b }),
                groups: Dictionary(group.map { ($0.name, $0.rights) }, uniquingKeysWith: { _, b in b }))
            if let problem = account.validate() { throw ValidationError(problem) }
            if let path = newCredentials, let generated {
                // Written before the account exists, so that a secret in use is never lost.
                try writeCredentials(path: path, accessKey: accessKey, secret: generated)
            }
            do {
                try await withCluster(endpoints) { try await $0.putAccount(account) }
            } catch {
                // Not stored: the new secret is of no use, and a rerun may write the file again.
                if let path = newCredentials { unlink(path) }
                throw error
            }
            print("account \(accessKey) stored\(newCredentials.map { "; its credentials are in \($0)" } ?? "")")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an account; its open connections lose every right at once.")
        @OptionGroup var endpoints: Endpoints
        @Argument(help: "The account's access key.") var accessKey: String
        func run() async throws {
            try await withCluster(endpoints) { try await $0.deleteAccount(accessKey) }
            print("account \(accessKey) deleted")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every account and its rights (secrets are never shown).")
        @OptionGroup var endpoints: Endpoints
        func run() async throws {
            // Through name servers each broker group keeps its own accounts: listed together,
            // with any a group lacks (a put or delete that failed part way) named below.
            let byGroup = try await withCluster(endpoints) { try await $0.accountsByGroup() }
            var seen: Set<String> = []
            let accounts = byGroup.flatMap(\.accounts).filter { seen.insert($0.accessKey).inserted }.sorted { $0.accessKey < $1.accessKey }
            defer {
                for a in accounts {
                    let lacking = byGroup.filter { g in !g.accounts.contains { $0.accessKey == a.accessKey } }.map(\.group)
                    if !lacking.isEmpty { print("account \(a.accessKey) is missing on \(lacking.joined(separator: ", ")): put or delete it again") }
                }
            }
            print("access key            admin  default topic  default group  topics; groups")
            for a in accounts {
                let named = { (m: [String: Rights]) in m.keys.sorted().map { "\($0)=\(m[$0]!)" }.joined(separator: ",") }
                print(
                    "\(a.accessKey.padding(20))  \((a.admin ? "yes" : "no").padding(5))  \(a.defaultTopic.description.padding(13))  \(a.defaultGroup.description.padding(13))  \(named(a.topics)); \(named(a.groups))"
                )
            }
        }
    }
}

/// A new credentials file, readable by its owner only; refused when the path exists.
func writeCredentials(path: String, accessKey: String, secret: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard fd >= 0 else { throw ValidationError("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let text = "# Tern account credentials (docs/security.md)\naccess-key = \(accessKey)\nsecret-key = \(secret)\n"
    let written = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    guard written == text.utf8.count else { throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))") }
}
