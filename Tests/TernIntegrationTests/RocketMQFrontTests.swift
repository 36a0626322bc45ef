// The RocketMQ 5 gRPC fronts of three real nodes, through the generated client: any node's
// front answers, a retried send is stored once through another node, typed topics refuse other
// types, and garbage, oversized and half-sent requests get an error while everything lives on.
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import TernClient
import TernLauncher
import TernProtocol
import TernRocketMQProto
import Testing

typealias FrontClient = RMQMessagingService.Client<HTTP2ClientTransport.Posix>

/// Three nodes with gRPC fronts; `body` gets the native client and the fronts' ports.
func withFronts(_ body: (TestCluster, TernCluster, [Int]) async throws -> Void) async throws {
    guard let binary = ternBinary() else {
        Issue.record("the tern executable was not found next to the tests")
        return
    }
    var taken: Set<Int> = []
    while taken.count < 3 { taken.insert(freeLoopbackPort()) }
    let grpc = taken.sorted()
    let byID = ["n1": grpc[0], "n2": grpc[1], "n3": grpc[2]]
    let cluster = try TestCluster(binary: binary) { id in ["--grpc-listen", "127.0.0.1:\(byID[id]!)"] }
    for id in cluster.ids { try cluster.start(id) }
    defer {
        cluster.stop()
        cluster.removeData()
    }
    let client = try TernCluster(endpoints: cluster.endpoints)
    _ = try await leader(of: client)
    try await body(cluster, client, grpc)
    await client.shutdown()
}

/// Calls `body` with a generated client connected to the front on `port`.
func withFront<T: Sendable>(_ port: Int, _ body: (FrontClient) async throws -> T) async throws -> T {
    let transport = try HTTP2ClientTransport.Posix(
        target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext,
        config: .defaults { $0.connection.maxIdleTime = nil })
    return try await withGRPCClient(transport: transport) { try await body(RMQMessagingService.Client(wrapping: $0)) }
}

func resource(_ name: String) -> RMQResource {
    var r = RMQResource()
    r.name = name
    return r
}

func sendRequest(topic: String, id: String, body: [UInt8] = Array("x".utf8), configure: (inout RMQMessage) -> Void = { _ in }) -> RMQSendMessageRequest {
    var m = RMQMessage()
    m.topic = resource(topic)
    m.body = Data(body)
    m.systemProperties.messageID = id
    m.systemProperties.messageType = .normal
    configure(&m)
    var request = RMQSendMessageRequest()
    request.messages = [m]
    return request
}

@Suite("Integration: the RocketMQ 5 gRPC front", .serialized)
struct RocketMQFrontTests {
    @Test(
        "every node's front answers; a send retried with its message id through another node is stored once; typed topics refuse other types",
        .timeLimit(.minutes(2)))
    func routesDedupeAndTypes() async throws {
        try await withFronts { _, client, grpc in
            try await client.createTopic("orders", queues: 4, type: .normal)
            // Route answers list every node's front once the fronts have asked the nodes (every 5 s).
            let clock = ContinuousClock()
            var route = RMQQueryRouteResponse()
            var request = RMQQueryRouteRequest()
            request.topic = resource("orders")
            let deadline = clock.now + .seconds(15)
            while clock.now < deadline {
                route = try await withFront(grpc[1]) { try await $0.queryRoute(request) }
                if route.messageQueues.first?.broker.endpoints.addresses.count == 3 { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(route.status.code == .ok && route.messageQueues.count == 4)
            #expect(route.messageQueues.allSatisfy { $0.acceptMessageTypes == [.normal] && $0.permission == .readWrite })
            #expect(Set(route.messageQueues[0].broker.endpoints.addresses.map(\.port)) == Set(grpc.map(Int32.init)))

            let first = try await withFront(grpc[0]) { try await $0.sendMessage(sendRequest(topic: "orders", id: "0A11")) }
            let retry = try await withFront(grpc[2]) { try await $0.sendMessage(sendRequest(topic: "orders", id: "0A11")) }
            #expect(first.status.code == .ok && retry.status.code == .ok)
            #expect(first.entries.first?.messageID == "0A11" && retry.entries.first?.offset == first.entries.first?.offset)
            var stored = 0
            for q in 0..<UInt32(4) { stored += try await client.pull(topic: "orders", queue: q, offset: 0).messages.count }
            #expect(stored == 1, "the retry through another node was stored again")

            // A delayed message to a normal topic: refused over gRPC, and natively too.
            let delayed = try await withFront(grpc[0]) {
                try await $0.sendMessage(
                    sendRequest(topic: "orders", id: "0B22") {
                        $0.systemProperties.messageType = .delay
                        $0.systemProperties.deliveryTimestamp = Google_Protobuf_Timestamp(seconds: Int64(Date().timeIntervalSince1970) + 60, nanos: 0)
                    })
            }
            #expect(delayed.status.code == .messagePropertyConflictWithType, "\(delayed.status)")
            var m = Message(topic: "orders", body: [1])
            m.setDelay(milliseconds: 5000)
            await #expect { _ = try await Producer(cluster: client).send(m) } throws: { ($0 as? ClientError)?.code == .wrongMessageType }
            // A missing topic and a namespace.
            request.topic = resource("nope")
            #expect(try await withFront(grpc[0]) { try await $0.queryRoute(request) }.status.code == .topicNotFound)
            request.topic.resourceNamespace = "prod"
            #expect(try await withFront(grpc[0]) { try await $0.queryRoute(request) }.status.code == .illegalTopic)
        }
    }

    @Test(
        "unknown work is UNIMPLEMENTED with its reason; garbage, oversized and half-sent requests get errors; fronts and nodes live on",
        .timeLimit(.minutes(2)))
    func badInput() async throws {
        try await withFronts { cluster, client, grpc in
            try await client.createTopic("t", queues: 1)
            await #expect {
                try await withFront(grpc[0]) { try await $0.getOffset(RMQGetOffsetRequest()) }
            } throws: { e in
                guard let e = e as? RPCError else { return false }
                return e.code == .unimplemented && e.message.contains("GetOffset")
            }
            // A body above the node's largest (4 MiB) plus 1 MiB of room: refused by the transport.
            let big = [UInt8](repeating: 7, count: 6 << 20)
            await #expect(throws: RPCError.self) { try await withFront(grpc[0]) { try await $0.sendMessage(sendRequest(topic: "t", id: "B", body: big)) } }
            // A body above the node's largest but within the transport's room: the front's own answer.
            let large = try await withFront(grpc[0]) {
                try await $0.sendMessage(sendRequest(topic: "t", id: "L", body: [UInt8](repeating: 1, count: (4 << 20) + 10)))
            }
            #expect(large.status.code == .messageBodyTooLarge)

            // Raw bytes: garbage; an HTTP/2 request whose gRPC message is cut short; one whose message is not protobuf.
            for bytes in [Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), [UInt8](repeating: 0xFF, count: 4096), halfSentRequest(), notProtobufRequest()] {
                guard let raw = RawConnection("127.0.0.1:\(grpc[1])") else {
                    Issue.record("cannot connect to the front")
                    return
                }
                raw.send(bytes)
                _ = raw.read(seconds: 1)
            }
            var ok = RMQQueryRouteRequest()
            ok.topic = resource("t")
            for port in grpc {
                #expect(try await withFront(port) { try await $0.queryRoute(ok) }.status.code == .ok, "front on \(port) no longer answers")
            }
            #expect(try await client.status().allSatisfy { $0.role != "unreachable" }, "\(cluster.logs())")
        }
    }
}

/// HTTP/2 frames by hand: the preface, empty SETTINGS, then HEADERS for SendMessage (HPACK
/// literals) on stream 1, then `data` as one DATA frame.
func grpcRequest(data: [UInt8], endStream: Bool) -> [UInt8] {
    func frame(_ type: UInt8, _ flags: UInt8, _ stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags] + withUnsafeBytes(of: stream.bigEndian, Array.init) + payload
    }
    func literal(_ name: String, _ value: String) -> [UInt8] {
        [0x00, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
    }
    let path = "/apache.rocketmq.v2.MessagingService/SendMessage"
    var headers: [UInt8] = [0x83, 0x86]  // :method POST, :scheme http (static table)
    headers += [0x04, UInt8(path.utf8.count)] + Array(path.utf8)  // :path, indexed name
    headers += [0x01, 9] + Array("127.0.0.1".utf8)  // :authority, indexed name
    headers += literal("content-type", "application/grpc") + literal("te", "trailers")
    return Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + frame(4, 0, 0, []) + frame(1, 0x4, 1, headers) + frame(0, endStream ? 1 : 0, 1, data)
}

/// A gRPC message announcing 1,000 bytes and carrying 10, then silence.
func halfSentRequest() -> [UInt8] { grpcRequest(data: [0, 0, 0, 0x03, 0xE8] + [UInt8](repeating: 0x0A, count: 10), endStream: false) }

/// A whole gRPC message whose bytes are not a SendMessageRequest.
func notProtobufRequest() -> [UInt8] { grpcRequest(data: [0, 0, 0, 0, 6] + [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], endStream: true) }
