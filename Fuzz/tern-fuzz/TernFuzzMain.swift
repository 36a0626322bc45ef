// `tern-fuzz`: under libFuzzer (`swift build -c release --sanitize fuzzer -Xswiftc -DFUZZING
// --product tern-fuzz`), the target named by TERN_FUZZ_TARGET; otherwise a replay tool:
// `tern-fuzz TARGET FILE|DIR...` runs every file through the target (scripts/fuzz.sh).
import Foundation
import TernFuzz

#if FUZZING
    let fuzzTarget: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["TERN_FUZZ_TARGET"] ?? ""
        guard let t = FuzzTarget(rawValue: name) else {
            fatalError("set TERN_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")) (got \"\(name)\")")
        }
        return t
    }()

    @_cdecl("LLVMFuzzerTestOneInput")
    public func ternFuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        fuzzTarget.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }
#else
    @main
    struct TernFuzzMain {
        static func main() {
            let args = Array(CommandLine.arguments.dropFirst())
            if args.first == "seed", args.count == 2 {
                writeSeeds(to: args[1])
                return
            }
            guard let name = args.first, let target = FuzzTarget(rawValue: name), args.count > 1 else {
                print("usage: tern-fuzz TARGET FILE|DIR..., or tern-fuzz seed DIR (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
                exit(64)
            }
            var count = 0
            for path in args.dropFirst() {
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                    print("tern-fuzz: \(path): no such file")
                    exit(66)
                }
                let files =
                    isDir.boolValue ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
                for file in files {
                    guard let data = FileManager.default.contents(atPath: file) else { continue }
                    target.run(Array(data))
                    count += 1
                }
            }
            Fuzz.removeScratch()
            print("tern-fuzz \(name): \(count) inputs, no failure")
        }

        /// Writes the seed corpus, DIR/TARGET/seed-N, replacing earlier seeds.
        static func writeSeeds(to dir: String) {
            for (target, inputs) in Fuzz.seeds() {
                let sub = dir + "/" + target.rawValue
                try? FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
                for (k, bytes) in inputs.enumerated() {
                    guard FileManager.default.createFile(atPath: sub + "/seed-\(k)", contents: Data(bytes)) else { fatalError("cannot write \(sub)") }
                }
                print("\(target.rawValue): \(inputs.count) seeds")
            }
            Fuzz.removeScratch()
        }
    }
#endif
