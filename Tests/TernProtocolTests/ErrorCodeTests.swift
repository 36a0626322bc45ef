import TernProtocol
// One set of wire error codes: unique numbers and names, a client action for each, and codes this
// build does not know still decode.
import Testing

@Suite("Wire error codes")
struct ErrorCodeTests {
    @Test("every known code has a unique number and name; frame codes below 100, broker codes from 100")
    func uniqueCodes() {
        let all = ErrorCode.all
        #expect(Set(all.map(\.rawValue)).count == all.count)
        #expect(Set(all.map(\.name)).count == all.count)
        #expect(all.allSatisfy { $0.name != "unknown" })
        #expect([ErrorCode.badFrame, .unknownOpcode, .badBody, .unauthenticated].allSatisfy { $0.rawValue < 100 })
        #expect(all.filter { $0.rawValue >= 100 }.count == all.count - 4)
    }

    @Test("what a client does: NOT_LEADER and STORAGE_FAILED go elsewhere, BUSY waits, the rest fail")
    func actions() {
        #expect(ErrorCode.notLeader.action == .retryElsewhere)
        #expect(ErrorCode.storageFailed.action == .retryElsewhere)
        #expect(ErrorCode.busy.action == .retryLater)
        #expect(ErrorCode.topicExists.action == .fail)
    }

    @Test("an error body with a code this build does not know decodes, named unknown")
    func unknownCodeDecodes() throws {
        let body = ErrorBody(code: ErrorCode(rawValue: 4321), message: "from a newer node", detail: [9]).encode()
        let decoded = try #require(ErrorBody.decode(body))
        #expect(decoded.code.rawValue == 4321 && decoded.code.name == "unknown" && decoded.code.action == .fail)
        #expect(decoded.message == "from a newer node" && decoded.detail == [9])
        #expect("\(decoded)" == "error 4321 (unknown): from a newer node")
    }
}
