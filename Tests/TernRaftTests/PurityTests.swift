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
    static let coreTargets = ["TernRaft", "TernBroker", "TernNode"]

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

    @Test("the scanner catches a planted violation")
    func scannerCatches() {
        #expect(Self.hits(in: "let now = Date()\nvar g = SystemRandomNumberGenerator()").count == 2)
        #expect(Self.hits(in: "// Date() in a comment is fine").isEmpty)
    }
}
