// What the side-by-side benchmarks (`tern bench grpc`, `tern bench metrics`) share: a round of
// requests from K tasks for a while, counted with the CPU the nodes and this process used.
import Foundation
import NIOConcurrencyHelpers
import TernLauncher

struct BenchRound: Codable {
    var path: String
    var messages: Int
    var seconds: Double
    var perSecond: Double
    var cpuMicrosPerMessage: Double
    /// Of which the three node processes.
    var serverMicrosPerMessage: Double
    var failed: Int
}

extension BenchRound {
    /// A round's figures from the CPU samples around it and its counts.
    init(_ path: String, before: ProcessSample, after: ProcessSample, counts c: (ok: Int, failed: Int)) {
        let wall = (after.at - before.at).seconds
        let servers = zip(after.servers, before.servers).map { $0 - $1 }.reduce(0, +)
        let cpu = servers + (after.me - before.me)
        let per = { (seconds: Double) in c.ok > 0 ? seconds / Double(c.ok) * 1e6 : 0 }
        self.init(
            path: path, messages: c.ok, seconds: wall, perSecond: Double(c.ok) / wall, cpuMicrosPerMessage: per(cpu), serverMicrosPerMessage: per(servers),
            failed: c.failed)
    }
}

/// Runs `send` from `inflight` tasks for `seconds`; counts acknowledgements and CPU.
func measureRound(inflight: Int, _ path: String, seconds: Double, pids: [Int32], _ send: @escaping @Sendable () async throws -> Void) async throws -> BenchRound
{
    let counts = NIOLockedValueBox((ok: 0, failed: 0))
    let before = ProcessSample(pids)
    let clock = ContinuousClock()
    let end = clock.now + .seconds(seconds)
    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<inflight {
            group.addTask {
                while clock.now < end {
                    do {
                        try await send()
                        counts.withLockedValue { $0.ok += 1 }
                    } catch {
                        counts.withLockedValue { $0.failed += 1 }
                    }
                }
            }
        }
    }
    return BenchRound(path, before: before, after: ProcessSample(pids), counts: counts.withLockedValue { $0 })
}
