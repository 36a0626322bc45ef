// Membership changes on real processes (docs/operations.md, "Replacing a member").
import Foundation
import TernClient
import TernLauncher
import TernProtocol
import Testing

@Suite("Integration: membership changes", .serialized)
struct MembershipIntegrationTests {
    @Test(
        "each of three members replaced in turn under steady load (tern bench replace --short): nothing acknowledged is lost",
        .timeLimit(.minutes(3)))
    func replaceEveryMember() throws {
        let binary = try #require(ternBinary(), "the tern executable was not found next to the tests")
        // Ports from this process's ledger: the bench runs in its own process, and free ports it
        // chose itself once collided with a cluster of a test running beside it (three tests
        // found no leader).
        let ports = (0..<6).map { _ in String(freeLoopbackPort()) }.joined(separator: ",")
        let (status, output) = try runTern(binary, ["bench", "replace", "--short", "--ports", ports])
        print(output)
        #expect(status == 0, "tern bench replace --short failed")
        #expect(output.contains("replaced 3 of 3 members under load") && output.contains(" 0 lost, 0 sends failed"), "\(output)")
        #expect(output.components(separatedBy: "4/4 removing").count == 4, "three replacements, each with its four steps printed")
    }

    @Test("promoting a learner that has not caught up is refused with a clear message and a non-zero exit; bad changes are refused", .timeLimit(.minutes(2)))
    func refusals() async throws {
        let binary = try #require(ternBinary(), "the tern executable was not found next to the tests")
        try await withThreeNodes { cluster, client in
            let e = ["--endpoints", cluster.endpoints.joined(separator: ",")]
            // n4 is added but never started: it cannot catch up.
            let add = try runTern(binary, ["admin", "member", "add", "n4", "--endpoint", "127.0.0.1:\(freeLoopbackPort())"] + e)
            #expect(add.status == 0, "\(add.output)")
            let promote = try runTern(binary, ["admin", "member", "promote", "n4"] + e)
            #expect(promote.status != 0)
            #expect(promote.output.contains("n4 has not caught up"), "\(promote.output)")
            let again = try runTern(binary, ["admin", "member", "add", "n2", "--endpoint", "127.0.0.1:1"] + e)
            #expect(again.status != 0 && again.output.contains("n2 is already a member"), "\(again.output)")
            let unknown = try runTern(binary, ["admin", "member", "remove", "n9"] + e)
            #expect(unknown.status != 0 && unknown.output.contains("n9 is not a member"), "\(unknown.output)")
            // The learner goes again; the list shows three voters.
            #expect(try runTern(binary, ["admin", "member", "remove", "n4"] + e).status == 0)
            let list = try await client.members()
            #expect(list.members.map(\.id) == ["n1", "n2", "n3"] && list.members.allSatisfy { !$0.learner })
            #expect(list.members.allSatisfy { $0.incarnation != 0 }, "the leader stamped every founding member's incarnation")
        }
    }
}
