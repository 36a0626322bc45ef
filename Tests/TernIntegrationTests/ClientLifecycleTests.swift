import TernClient
import TernProtocol
// The SDK after shutdown (found by `tern chaos`: a transactional producer's check poll, still
// retrying when the run shut its cluster client down, scheduled work on a closed event loop).
import Testing

@Suite("SDK: a shut-down cluster client")
struct ClientLifecycleTests {
    @Test("calls after shutdown fail at once, naming the shutdown, instead of touching the closed event loop")
    func callsAfterShutdown() async throws {
        let client = try TernCluster(endpoints: ["127.0.0.1:1"])
        await client.shutdown()
        do {
            _ = try await client.queryRoute()
            Issue.record("a call after shutdown succeeded")
        } catch let e as ClientError {
            #expect("\(e)".contains("shut down"), "\(e)")
        }
    }
}
