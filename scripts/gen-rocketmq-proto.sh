#!/usr/bin/env bash
# Regenerates Sources/TernRocketMQProto from Protos/rocketmq/messaging.proto. Run by hand after
# editing the .proto; the output is committed and neither the build nor CI runs this.
#
# Needs Debian's protobuf-compiler and libprotobuf-dev (the well-known types). The plugins
# protoc-gen-swift and protoc-gen-grpc-swift-2 are built from the local package copies into
# .build-protoc (about 40 s the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
command -v protoc > /dev/null || { echo "protoc not found: apt-get install protobuf-compiler libprotobuf-dev" >&2; exit 1; }
[ -f /usr/include/google/protobuf/duration.proto ] || { echo "google/protobuf/duration.proto not found: apt-get install libprotobuf-dev" >&2; exit 1; }
plugins="$root/scripts/protoc-plugins"
scratch="$root/.build-protoc"
for product in protoc-gen-swift protoc-gen-grpc-swift-2; do
    echo "building $product"
    swift build -c release --package-path "$plugins" --scratch-path "$scratch" --product "$product" > /dev/null
done
bin=$(swift build -c release --package-path "$plugins" --scratch-path "$scratch" --show-bin-path)
out="$root/Sources/TernRocketMQProto"
rm -f "$out"/*.pb.swift "$out"/*.grpc.swift
mkdir -p "$out"
echo "protoc $(protoc --version)"
protoc -I Protos/rocketmq -I /usr/include \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
    --swift_out="$out" --swift_opt=Visibility=Public \
    --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
    --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true \
    messaging.proto
# Generated code keeps the generators' layout: the formatter and linter skip these files.
for f in "$out"/*.swift; do
    { echo "// swift-format-ignore-file"; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
ls -l "$out"
