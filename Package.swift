// swift-tools-version:6.2
// Tern: a Raft-replicated message broker. The target list mirrors docs/architecture.md:
// a C shim over liburing, the storage layer, and the `tern` command; Raft, the broker,
// the node, the server and the SDK arrive as their own targets.
import PackageDescription

let strict: [SwiftSetting] = [
    .unsafeFlags(["-warnings-as-errors"], .when(configuration: .debug))
]

let package = Package(
    name: "Tern",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tern", targets: ["tern"]),
        .executable(name: "tern-sim", targets: ["tern-sim"]),
        .executable(name: "tern-chaos", targets: ["tern-chaos"]),
        .library(name: "TernStorage", targets: ["TernStorage"]),
        .library(name: "TernRaft", targets: ["TernRaft"]),
        .library(name: "TernClient", targets: ["TernClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // The RocketMQ 5 gRPC front (docs/rocketmq.md).
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        // Metrics (swift-metrics, exposed by swift-prometheus) and the HTTP listener with the
        // admin API and console (Hummingbird, without its optional traits; docs/operations.md).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
    ],
    targets: [
        // Opaque wrapper over liburing plus CRC32C. liburing.h is included only by the .c file.
        .target(
            name: "CTernIO",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(name: "TernStorage", dependencies: ["CTernIO"], swiftSettings: strict),
        // Raft as a pure state machine on the standard library alone: its own entry and log-error
        // types; the log arrives through the RaftLog protocol (the node adapts the commitlog).
        .target(name: "TernRaft", dependencies: [], swiftSettings: strict),
        // Wire frames and bodies shared by server, client and peers (the Raft messages' codec
        // included): bounded, versioned, never trapping on input; no NIO.
        .target(name: "TernProtocol", dependencies: ["CTernIO", "TernRaft"], swiftSettings: strict),
        // The frame decoder and encoder for SwiftNIO pipelines (server, client, peer links).
        .target(name: "TernProtocolNIO", dependencies: ["TernProtocol", .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        // The broker: a pure state machine over committed entries (topics, consume queues,
        // offsets, producer dedupe, consumer groups).
        .target(name: "TernBroker", dependencies: ["TernRaft", "TernStorage", "TernProtocol"], swiftSettings: strict),
        // Raft + commitlog + broker + request routing: what the server and the simulator both drive.
        .target(name: "TernNode", dependencies: ["TernRaft", "TernStorage", "TernBroker", "TernProtocol"], swiftSettings: strict),
        // The real shell: NIO sockets, the storage thread, timers, peer links, config.
        .target(
            name: "TernServer",
            dependencies: [
                "TernNode", "TernProtocol", "TernProtocolNIO", "TernStorage", "TernRaft", "CTernIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ], swiftSettings: strict),
        // The Swift SDK: producers, consumers, leader discovery.
        // Name servers (docs/architecture.md, "Many groups"): the route directory of many groups.
        .target(
            name: "TernNameServer",
            dependencies: [
                "TernProtocol", "TernProtocolNIO", "TernServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ], swiftSettings: strict),
        .target(
            name: "TernClient",
            dependencies: [
                "TernProtocol", "TernProtocolNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ], swiftSettings: strict),
        // Swift generated by scripts/gen-rocketmq-proto.sh from Protos/rocketmq/messaging.proto
        // (committed; never regenerated by the build). Generated code: no warnings-as-errors.
        .target(
            name: "TernRocketMQProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]),
        // The RocketMQ 5 gRPC front of a node: answers the official clients' MessagingService by
        // calling the group over the native protocol (its own event loop, off the node's).
        .target(
            name: "TernRocketMQ",
            dependencies: [
                "TernRocketMQProto", "TernClient", "TernProtocol",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: strict),
        // A node's HTTP listener: Prometheus metrics, health, the JSON admin API and the web
        // console (docs/operations.md), on a thread of its own.
        .target(
            name: "TernOps",
            dependencies: [
                "TernServer", "TernClient", "TernProtocol", "TernNode", "TernBroker",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: strict),
        // The deterministic simulator: the real node code on a simulated disk, network and clock.
        .target(
            name: "TernSimulation",
            dependencies: [
                "TernNode", "TernBroker", "TernProtocol", "TernRaft", "TernStorage",
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            path: "Simulation/TernSimulation", swiftSettings: strict),
        .executableTarget(
            name: "tern-sim",
            dependencies: [
                "TernSimulation", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ], path: "Simulation/tern-sim", swiftSettings: strict),
        // What the commands share: `tern serve`'s flags and config file, starting nodes as child
        // processes, quantiles, the log format, signal handling.
        .target(
            name: "TernLauncher",
            dependencies: [
                "TernServer", "TernClient", "TernRaft", "TernStorage", "TernRocketMQ", "TernOps", "TernNameServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ], swiftSettings: strict),
        // Test tooling, out of the product binary: the chaos harness, its relays and checker, and
        // the node with test hooks (`tern-chaos serve`). `tern chaos` runs the `tern-chaos` binary.
        .target(
            name: "TernChaos",
            dependencies: [
                "TernLauncher", "TernServer", "TernClient", "TernProtocol", "TernRaft", "TernStorage", "CTernIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ], swiftSettings: strict),
        .executableTarget(
            name: "tern-chaos",
            dependencies: [
                "TernChaos", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ], swiftSettings: strict),
        .executableTarget(
            name: "tern",
            dependencies: [
                "CTernIO", "TernStorage", "TernServer", "TernClient", "TernProtocol", "TernLauncher", "TernRocketMQProto", "TernOps", "TernNameServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Fuzz targets over the decoders, the SQL92 parser and commitlog recovery (docs/security.md);
        // `tern-fuzz` replays inputs, or is the libFuzzer binary when built with -DFUZZING.
        .target(name: "TernFuzz", dependencies: ["TernProtocol", "TernBroker", "TernStorage", "TernRaft"], path: "Fuzz/TernFuzz", swiftSettings: strict),
        .executableTarget(
            name: "tern-fuzz", dependencies: ["TernFuzz"], path: "Fuzz/tern-fuzz", swiftSettings: strict + [.unsafeFlags(["-parse-as-library"])]),
        .testTarget(name: "TernFuzzTests", dependencies: ["TernFuzz"], swiftSettings: strict),
        .testTarget(name: "CTernIOTests", dependencies: ["CTernIO"], swiftSettings: strict),
        .testTarget(name: "TernStorageTests", dependencies: ["TernStorage", "CTernIO"], swiftSettings: strict),
        .testTarget(name: "TernRaftTests", dependencies: ["TernRaft"], swiftSettings: strict),
        .testTarget(name: "TernProtocolTests", dependencies: ["TernProtocol", "TernProtocolNIO", "TernRaft"], swiftSettings: strict),
        .testTarget(name: "TernBrokerTests", dependencies: ["TernBroker", "TernProtocol", "TernStorage"], swiftSettings: strict),
        .testTarget(name: "TernNodeTests", dependencies: ["TernNode", "TernBroker", "TernProtocol", "TernRaft", "TernStorage"], swiftSettings: strict),
        // Three real `tern serve` processes; needs the `tern` executable built next to the tests.
        .testTarget(
            name: "TernIntegrationTests",
            dependencies: [
                "TernClient", "TernProtocol", "TernLauncher", "TernChaos", "TernRaft", "TernServer", "TernRocketMQProto",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ], swiftSettings: strict),
        .testTarget(
            name: "TernServerTests",
            dependencies: [
                "TernServer", "TernProtocol", "TernRaft", .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: strict),
        .testTarget(
            name: "TernLauncherTests",
            dependencies: [
                "TernLauncher", "TernServer", "TernNameServer", "TernProtocol", .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: strict),
        .testTarget(
            name: "TernRocketMQTests",
            dependencies: [
                "TernRocketMQ", "TernRocketMQProto", "TernProtocol", "TernClient",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ], swiftSettings: strict),
        .testTarget(
            name: "TernOpsTests",
            dependencies: ["TernOps", "TernServer", "TernNode", "TernProtocol"], swiftSettings: strict),
        .testTarget(name: "TernSimulationTests", dependencies: ["TernSimulation", "TernNode", "TernRaft", "TernStorage"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
