# The two commands a fresh machine needs (README.md): `make demo` and `make test`.
.PHONY: setup demo test release

setup:
	@scripts/setup.sh

release: setup
	swift build -c release --product tern

# Main job. For now: the storage benchmark on both io backends (5 s per shape).
demo: release
	.build/release/tern bench storage --duration 5

# Builds with warnings as errors (debug), runs every test, then the simulator's checks
# (a 100-seed sweep, determinism across processes, planted bugs caught).
test: setup
	swift build --build-tests
	swift test
	scripts/sim-check.sh
