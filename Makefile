# The two commands a fresh machine needs (README.md): `make demo` and `make test`.
.PHONY: setup demo test lint format release bench-storage bench-compare chaos sim-sweep fuzz

setup:
	@scripts/setup.sh

release: setup
	swift build -c release --product tern

# Main job: a local three-node cluster on 127.0.0.1:9001-9003 (data in ./tern-data) runs a short
# demo (create a topic, send, consume, SIGKILL the leader, send through the new one) and stops.
# `tern cluster up` without --demo keeps the cluster running until Ctrl-C.
demo: release
	.build/release/tern cluster up --demo

# The storage benchmark on both io backends (5 s per shape).
bench-storage: release
	.build/release/tern bench storage --duration 5

# Tern next to etcd, NATS JetStream and RabbitMQ (../shared/bench/peers), same load, one table
# with ratios and the goals, and an SVG plot in .build/compare (docs/benchmarks.md).
bench-compare: setup
	bench/compare.sh

# Checks the format, builds with warnings as errors (debug), runs every test, then the official
# RocketMQ 5 Python client against a three-node cluster's gRPC fronts and against two groups
# behind name servers (docs/rocketmq.md), then
# Prometheus and headless Chromium against a cluster's metrics and console, then the Kubernetes
# manifest against the API schemas and its processes in network namespaces (docs/operations.md),
# then the simulator's checks
# (a 100-seed sweep, determinism across processes, planted bugs caught), then every fuzz target
# for 10 s from its corpus (docs/security.md), then short chaos runs on real processes (60 s of
# faults, 30 s with retention stress, 40 s of member replacements among leader kills and
# isolations, and 40 s across two groups with name server faults; docs/chaos.md).
test: setup lint
	swift build --build-tests
	swift test
	scripts/rocketmq-interop.sh .build/debug/tern
	scripts/rocketmq-interop.sh .build/debug/tern --groups 2 --base-port 9511 --grpc-base-port 8511
	scripts/ops-check.sh .build/debug/tern
	scripts/deploy-check.sh .build/debug/tern
	scripts/sim-check.sh
	FUZZ_SECONDS=10 scripts/fuzz.sh
	.build/debug/tern chaos --duration 60 --every 5 --seed 1 --out .build/chaos-ci
	.build/debug/tern chaos --duration 30 --every 5 --seed 2 --retention-stress --out .build/chaos-ci-retention
	.build/debug/tern chaos --duration 40 --every 5 --seed 3 --kinds replace-node,kill-leader,isolate-leader --out .build/chaos-ci-replace
	.build/debug/tern chaos --groups 2 --duration 40 --every 4 --seed 5 --out .build/chaos-ci-groups

# Every fuzz target under libFuzzer and AddressSanitizer, 60 s each from the checked-in corpus
# (about 6 minutes with the build; docs/security.md). FUZZ_SECONDS=N changes the time per target.
fuzz: setup
	scripts/fuzz.sh

# The toolchain's formatter with the checked-in .swift-format; `make test` fails on a difference.
lint:
	swift format lint --strict -r --configuration .swift-format Sources Simulation Tests Fuzz

format:
	swift format format -i -r --configuration .swift-format Sources Simulation Tests Fuzz

# The simulator over many seeds, outside CI (60 virtual seconds each; about 1.7 s a seed here).
# A failing seed prints its replay command. docs/simulation.md records the runs.
SEEDS ?= 1001-3000
sim-sweep:
	swift build -c release --product tern-sim
	.build/release/tern-sim --seeds $(SEEDS) --seconds 60

# The chaos suite for people: five minutes of faults on a real three-node cluster (the harness is
# the test-only tern-chaos binary, built beside tern).
chaos: release
	swift build -c release --product tern-chaos
	.build/release/tern chaos --duration 300
