#!/usr/bin/env bash
# Runs every fuzz target under libFuzzer (docs/security.md, "Fuzzed decoders"), one after
# another, each for FUZZ_SECONDS (default 60) or FUZZ_RUNS executions, starting from the
# checked-in corpus (Fuzz/corpus/TARGET, read only; new inputs go to .build/fuzz-work/TARGET).
# Prints each target's executions and coverage; exits non-zero at the first crash, hang (a run
# over 10 s) or leak, keeping the input in .build/fuzz-work/ and printing how to replay it.
#
#   scripts/fuzz.sh                      # make fuzz: five targets, 60 s each (about 6 minutes)
#   FUZZ_SECONDS=10 scripts/fuzz.sh      # what make test runs (about 1 minute after the build)
#   FUZZ_RUNS=10000000 FUZZ_SECONDS=1800 scripts/fuzz.sh frame request   # a long campaign
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
RUNS=${FUZZ_RUNS:--1}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(frame request peer sql recovery)
BUILD=${FUZZ_BUILD:-.build/fuzz}
WORK=.build/fuzz-work
build() {
    echo "fuzz: building tern-fuzz with libFuzzer and AddressSanitizer (release, $BUILD)"
    # -sanitize=fuzzer is also handed to the frontend directly: the driver sometimes leaves it
    # out of the library modules' compile jobs (seen on fresh builds here: 243 coverage
    # counters instead of about 25,000, a fuzzer running blind).
    swift build -c release --sanitize fuzzer --sanitize address -Xswiftc -DFUZZING -Xswiftc -Xfrontend -Xswiftc -sanitize=fuzzer \
        --product tern-fuzz --build-path "$BUILD" 2>&1 |
        grep -Ev "Cannot export local symbol" | tail -1
}
# The coverage counters libFuzzer finds: the decoders' modules must be instrumented, or the
# fuzzer runs blind.
counters() {
    local c
    c=$(TERN_FUZZ_TARGET=frame "$BUILD/release/tern-fuzz" -runs=1 2>&1 | grep -o "([0-9]* inline 8-bit counters)" | grep -o "[0-9]*" | head -1 || true)
    echo "${c:-0}"
}
build
if [ "$(counters)" -lt 20000 ]; then
    echo "fuzz: only $(counters) coverage counters: rebuilding $BUILD from scratch"
    rm -rf "$BUILD"
    build
    [ "$(counters)" -ge 20000 ] || { echo "fuzz: the build is not instrumented for coverage ($(counters) counters)"; exit 1; }
fi
echo "fuzz: $(counters) coverage counters"
mkdir -p "$WORK"
for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$t"
    max_len=4096
    [ "$t" = recovery ] && max_len=12288
    log="$WORK/$t.log"
    set +e
    TERN_FUZZ_TARGET=$t "$BUILD/release/tern-fuzz" -max_total_time="$SECONDS_EACH" -runs="$RUNS" -max_len=$max_len -timeout=10 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$WORK/$t-" "$WORK/$t" "Fuzz/corpus/$t" > "$log" 2>&1
    status=$?
    set -e
    runs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "$log" | grep -o "[0-9]*$" || echo "?")
    secs=$(grep -o "Done [0-9]* runs in [0-9]* second" "$log" | grep -o "in [0-9]*" | grep -o "[0-9]*" || echo "?")
    cov=$(grep -E "DONE|INITED" "$log" | tail -1 | grep -o "cov: [0-9]*" || echo "cov: ?")
    echo "fuzz: $t: $runs executions in ${secs}s, $cov, exit $status"
    if [ $status -ne 0 ]; then
        grep -E "ERROR|Fatal error|SUMMARY|Test unit written|deadly" "$log" | head -8
        echo "fuzz: $t FAILED; the whole log is $log. Replay an input with: swift build --product tern-fuzz && .build/debug/tern-fuzz $t FILE"
        echo "fuzz: then copy the input into Fuzz/corpus/$t/ (a regression input) and fix the bug"
        exit 1
    fi
done
