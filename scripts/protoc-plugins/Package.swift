// swift-tools-version:6.1
// Only for scripts/gen-rocketmq-proto.sh: builds the two protoc plugins from the local package
// copies (the versions Tern's own Package.swift uses at run time). Not part of the product.
import PackageDescription

let package = Package(
    name: "TernProtocPlugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
    ],
    targets: [.target(name: "Unused", path: "Unused")]
)
