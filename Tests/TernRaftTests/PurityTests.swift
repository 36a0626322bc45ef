import Foundation
import Testing

/// The deterministic core must not reach for wall clocks, unseeded randomness, threads or tasks
/// (docs/architecture.md). This scans its sources and fails on a hit.
@Suite("Determinism rules: the core's sources")
struct PurityTests {
    static let forbidden = [
        "Date()", "ContinuousClock", "SuspendingClock", "DispatchTime", "SystemRandomNumberGenerator",
        ".random(in:", "shuffled()", "DispatchQueue", "Thread(", "Thread.", "Task {", "Task.detached",
        "import Foundation", "import Glibc", "Hasher(",
    ]
    static let coreTargets = ["TernRaft", "TernBroker", "TernNode", "TernProtocol"]

    static func sources(_ target: String) -> [URL] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("Sources").appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".swift") }.sorted().map { dir.appendingPathComponent($0) }
    }

    static func hits(in text: String) -> [String] {
        var found: [String] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let code = line.components(separatedBy: "//").first ?? ""
            for pattern in forbidden where code.contains(pattern) { found.append("line \(n + 1): \(pattern)") }
        }
        return found
    }

    @Test("no wall clock, unseeded randomness, threads or Foundation in the core")
    func coreIsPure() throws {
        for target in Self.coreTargets {
            let files = Self.sources(target)
            #expect(!files.isEmpty, "found no sources for \(target)")
            for file in files {
                let hits = Self.hits(in: try String(contentsOf: file, encoding: .utf8))
                #expect(hits.isEmpty, "\(target)/\(file.lastPathComponent): \(hits)")
            }
        }
    }

    // MARK: Boundaries

    /// What each core target may import and depend on. Raft builds with the standard library
    /// alone; the protocol adds the C shim's CRC32C and Raft's message types; the broker and the
    /// node add the protocol and the storage layer (whose real commitlog the simulator runs).
    /// No NIO, no Foundation, no other package anywhere in the core.
    static let allowed: [String: Set<String>] = [
        "TernRaft": [],
        "TernProtocol": ["TernRaft", "CTernIO"],
        "TernBroker": ["TernRaft", "TernProtocol", "TernStorage"],
        "TernNode": ["TernRaft", "TernProtocol", "TernStorage", "TernBroker"],
    ]
    /// Targets the core may reach through those (their own dependencies are checked here too).
    /// The storage layer under them does real I/O (it is the one place with Glibc and
    /// Foundation); it must not reach up or into NIO. CTernIO is C with liburing only.
    static let allowedBelow: [String: Set<String>] = ["TernStorage": ["CTernIO", "Glibc", "Foundation"]]

    static var packageText: String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)) ?? ""
    }

    /// The modules a source file imports (`import X`, `@testable import X`, `import struct X.Y`).
    static func imports(in text: String) -> [String] {
        text.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(separator: " ").filter { !$0.hasPrefix("@") }
            guard words.first == "import" else { return nil }
            let name = words.count >= 3 && ["struct", "class", "enum", "protocol", "func", "typealias"].contains(String(words[1])) ? words[2] : words[1]
            return String(name.split(separator: ".")[0])
        }
    }

    /// A target's dependencies as Package.swift declares them: target names, and products as
    /// "product:NAME".
    static func dependencies(of target: String, in package: String) -> [String]? {
        guard let start = package.range(of: "name: \"\(target)\", dependencies: [") else { return nil }
        let rest = package[start.upperBound...]
        guard let end = rest.firstIndex(of: "]") else { return nil }
        let list = rest[..<end]
        var out: [String] = []
        for part in list.components(separatedBy: ",") {
            let trimmed = part.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.hasPrefix(".product(name: \"") {
                out.append("product:" + trimmed.dropFirst(".product(name: \"".count).prefix { $0 != "\"" })
            } else if trimmed.hasPrefix("\"") {
                out.append(String(trimmed.dropFirst().prefix { $0 != "\"" }))
            }
        }
        return out
    }

    /// What breaks the boundary rules in `sources` (target -> file texts) and `package`.
    static func boundaryViolations(sources: [String: [(name: String, text: String)]], package: String) -> [String] {
        var found: [String] = []
        let rules = allowed.merging(allowedBelow) { a, _ in a }
        for (target, allowedSet) in rules.sorted(by: { $0.key < $1.key }) {
            for file in sources[target] ?? [] {
                for module in imports(in: file.text) where !allowedSet.contains(module) {
                    found.append("\(target)/\(file.name) imports \(module)")
                }
            }
            guard let deps = dependencies(of: target, in: package) else {
                found.append("Package.swift has no `.target(name: \"\(target)\", dependencies: [...])`")
                continue
            }
            for d in deps where !allowedSet.contains(d) { found.append("Package.swift: \(target) depends on \(d)") }
        }
        return found
    }

    @Test("the core imports and depends only on what its layer allows (Package.swift and every source)")
    func boundaries() throws {
        var sources: [String: [(name: String, text: String)]] = [:]
        for target in (Self.allowed.keys.sorted() + ["TernStorage"]) {
            sources[target] = try Self.sources(target).map { ($0.lastPathComponent, try String(contentsOf: $0, encoding: .utf8)) }
            #expect(!(sources[target] ?? []).isEmpty, "found no sources for \(target)")
        }
        let violations = Self.boundaryViolations(sources: sources, package: Self.packageText)
        #expect(violations.isEmpty, "\(violations)")
    }

    @Test("the boundary check catches a forbidden import and a forbidden dependency")
    func boundaryCheckCatches() {
        let package = Self.packageText
        #expect(!package.isEmpty)
        #expect(
            Self.boundaryViolations(sources: ["TernRaft": [("Raft.swift", "import NIOCore\nstruct X {}")]], package: package) == [
                "TernRaft/Raft.swift imports NIOCore"
            ])
        #expect(
            Self.boundaryViolations(sources: ["TernNode": [("Node.swift", "@testable import TernServer")]], package: package) == [
                "TernNode/Node.swift imports TernServer"
            ])
        #expect(
            Self.boundaryViolations(sources: ["TernBroker": [("Broker.swift", "import struct Foundation.Date")]], package: package) == [
                "TernBroker/Broker.swift imports Foundation"
            ])
        let planted = package.replacingOccurrences(of: "name: \"TernRaft\", dependencies: [", with: "name: \"TernRaft\", dependencies: [\"TernStorage\", ")
        #expect(Self.boundaryViolations(sources: [:], package: planted) == ["Package.swift: TernRaft depends on TernStorage"])
        let nio = package.replacingOccurrences(
            of: "name: \"TernProtocol\", dependencies: [", with: "name: \"TernProtocol\", dependencies: [.product(name: \"NIOCore\", package: \"swift-nio\"), ")
        #expect(Self.boundaryViolations(sources: [:], package: nio) == ["Package.swift: TernProtocol depends on product:NIOCore"])
    }

    @Test("the scanner catches a planted violation")
    func scannerCatches() {
        #expect(Self.hits(in: "let now = Date()\nvar g = SystemRandomNumberGenerator()").count == 2)
        #expect(Self.hits(in: "// Date() in a comment is fine").isEmpty)
    }
}
