// Every checked-in fuzz input (Fuzz/corpus/TARGET, seeds and regressions alike) through its
// target: a crash the fuzzer found stays found.
import Foundation
import TernFuzz
import Testing

@Suite("Fuzz corpus replay")
struct CorpusTests {
    static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(
            "Fuzz/corpus"
        ).path
    }

    @Test("each target's corpus runs through it without a failure", arguments: FuzzTarget.allCases)
    func replay(_ target: FuzzTarget) throws {
        let dir = CorpusTests.root + "/" + target.rawValue
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(files.count >= 3, "the \(target) corpus has \(files.count) inputs")
        for f in files {
            guard let data = FileManager.default.contents(atPath: dir + "/" + f) else {
                Issue.record("cannot read \(f)")
                continue
            }
            target.run(Array(data))
        }
    }
}
