// `tern bench grpc`: publishing through the RocketMQ 5 gRPC front next to the native protocol,
// on one local three-node group, in interleaved rounds: the same messages, one per request, the
// same number in flight. Reports each path's throughput and the CPU per acknowledged message
// (the three nodes, their fronts included, plus this load generator), and the ratio.
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOConcurrencyHelpers
import NIOPosix
import SwiftProtobuf
import TernClient
import TernLauncher
import TernProtocol
import TernRocketMQProto

struct BenchGRPC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc",
        abstract: "Publish through the RocketMQ 5 gRPC front and through the native protocol, side by side on a local 3-node group.")

    @Option(help: "Seconds per path per round.") var duration: Double = 10
    @Option(help: "Rounds (each: native, then gRPC).") var rounds = 3
    @Option(help: "Requests in flight (one message each).") var inflight = 128
    @Option(help: "Message body size in bytes.") var size = 1024
    @Option(help: "Data directory, new or empty (default: a new folder under ./.build/bench-grpc).") var data: String?
    @Option(help: "Six loopback ports, comma separated (three nodes, then their gRPC fronts); default: free ones.") var ports: String?
    @Flag(help: "Print a JSON summary.") var json = false

    func run() async throws {
        guard duration > 0, rounds >= 1, inflight >= 1 else { throw ValidationError("--duration, --rounds and --inflight must be positive") }
        let list =
            try ports.map { text -> [Int] in
                let l = text.split(separator: ",").compactMap { Int($0) }
                guard l.count == 6 else { throw ValidationError("--ports takes six ports, comma separated") }
                return l
            }
            ?? {
                var set: Set<Int> = []
                while set.count < 6 { set.insert(freeLoopbackPort()) }
                return set.sorted()
            }()
        let root = data ?? FileManager.default.currentDirectoryPath + "/.build/bench-grpc/\(getpid())"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let grpcPorts = ["n1": list[3], "n2": list[4], "n3": list[5]]
        let cluster = LocalCluster(
            nodes: 3, basePort: 0, dataRoot: root, extraArgs: [], ports: Array(list[0..<3]),
            nodeArgs: { id in ["--grpc-listen", "127.0.0.1:\(grpcPorts[id]!)"] })
        try cluster.startAll()
        defer {
            cluster.stopAll()
            // Three nodes' logs of a few gigabytes: gone unless the caller named the folder.
            if data == nil { try? FileManager.default.removeItem(atPath: root) }
        }
        let client = try TernCluster(endpoints: cluster.endpoints)
        let leader = try await waitForLeader(client)
        try await client.createTopic("bench", queues: 8)
        let pids = cluster.ids.compactMap { cluster.processes[$0]?.processIdentifier }
        let port = grpcPorts[leader]!
        if !json { print("3 nodes on \(cluster.endpoints.joined(separator: ",")); leader \(leader); gRPC through its front on 127.0.0.1:\(port)") }
        let body = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
        let producer = Producer(cluster: client, group: "bench-native")
        // The load generator's gRPC client on one thread of its own, as the native client runs;
        // 8 MiB windows and frames of up to 1 MiB, as the front uses.
        let clientLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext,
            config: .defaults {
                $0.http2.targetWindowSize = 8 << 20
                $0.http2.maxFrameSize = 1 << 20
            }, eventLoopGroup: clientLoops)
        var results: [BenchRound] = []
        try await withGRPCClient(transport: transport) { grpc in
            let front = RMQMessagingService.Client(wrapping: grpc)
            // A short warm-up of each path: connections, the topic's route, first allocations.
            _ = try await measureRound(inflight: inflight, "warm-up", seconds: 1, pids: pids) {
                _ = try await producer.send(Message(topic: "bench", body: body))
            }
            _ = try await measureRound(inflight: inflight, "warm-up", seconds: 1, pids: pids) { try await Self.send(front, body: body) }
            for round in 1...rounds {
                let native = try await measureRound(inflight: inflight, "native", seconds: duration, pids: pids) {
                    _ = try await producer.send(Message(topic: "bench", body: body))
                }
                let viaGRPC = try await measureRound(inflight: inflight, "grpc", seconds: duration, pids: pids) { try await Self.send(front, body: body) }
                results += [native, viaGRPC]
                if !json {
                    print(
                        String(
                            format:
                                "round %d: native %8.0f msg/s %6.1f µs CPU/msg (nodes %5.1f) | gRPC %8.0f msg/s %6.1f µs CPU/msg (nodes %5.1f) | ratio %.2f",
                            round, native.perSecond, native.cpuMicrosPerMessage, native.serverMicrosPerMessage, viaGRPC.perSecond,
                            viaGRPC.cpuMicrosPerMessage, viaGRPC.serverMicrosPerMessage, viaGRPC.perSecond / native.perSecond))
                }
            }
        }
        await client.shutdown()
        try? await clientLoops.shutdownGracefully()
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let nativeRate = median(results.filter { $0.path == "native" }.map(\.perSecond))
        let grpcRate = median(results.filter { $0.path == "grpc" }.map(\.perSecond))
        let nativeCPU = median(results.filter { $0.path == "native" }.map(\.cpuMicrosPerMessage))
        let grpcCPU = median(results.filter { $0.path == "grpc" }.map(\.cpuMicrosPerMessage))
        if json {
            struct Summary: Encodable {
                var rounds: [BenchRound]
                var nativePerSecond, grpcPerSecond, ratio, nativeCPUMicros, grpcCPUMicros: Double
                var inflight, size: Int
            }
            let s = Summary(
                rounds: results, nativePerSecond: nativeRate, grpcPerSecond: grpcRate, ratio: grpcRate / nativeRate, nativeCPUMicros: nativeCPU,
                grpcCPUMicros: grpcCPU, inflight: inflight, size: size)
            print(String(decoding: try JSONEncoder().encode(s), as: UTF8.self))
        } else {
            print(
                String(
                    format:
                        "medians: native %.0f msg/s, %.1f µs CPU/msg; gRPC %.0f msg/s, %.1f µs CPU/msg; gRPC/native throughput %.2fx (goal: at least 0.5x), CPU per message %.2fx",
                    nativeRate, nativeCPU, grpcRate, grpcCPU, grpcRate / nativeRate, grpcCPU / nativeCPU))
        }
    }

    /// One message through the front, with a new message id, as a RocketMQ 5 producer sends it.
    static func send(_ front: RMQMessagingService.Client<HTTP2ClientTransport.Posix>, body: [UInt8]) async throws {
        var m = RMQMessage()
        m.topic.name = "bench"
        m.body = Data(body)
        m.systemProperties.messageID =
            String(UInt64.random(in: 0...UInt64.max), radix: 16, uppercase: true) + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        m.systemProperties.messageType = .normal
        var request = RMQSendMessageRequest()
        request.messages = [m]
        let response = try await front.sendMessage(request)
        guard response.status.code == .ok else { throw ClientError.badResponse("\(response.status.code): \(response.status.message)") }
    }
}
