#!/usr/bin/env bash
# Two builds of tern side by side, in one run, interleaved in rounds (the machine is shared and
# noisy): each round starts a fresh local three-node cluster of each build in turn and sends
# as fast as acknowledgements allow with K sends outstanding (tern bench produce). Prints each
# run's RESULT line, then the median msg/s of each build and their ratio (after / before).
#
#   bench/before-after.sh BEFORE_TERN AFTER_TERN            # e.g. a worktree's build and this one
#   ROUNDS=3 INFLIGHT=128 SIZE=1024 DURATION=10 bench/before-after.sh ...
#   BEFORE_ARGS=--node-arg=--insecure-peers bench/before-after.sh T T   # one build, a setting apart
#   AFTER_ARGS="--tls-cert C --tls-key K" AFTER_CLIENT_ARGS="--tls-ca CA" ...  # and the client's flags
#
# Each build runs its own `tern cluster up` and its own `tern bench produce`.
set -euo pipefail
BEFORE=${1:?usage: bench/before-after.sh BEFORE_TERN AFTER_TERN}
AFTER=${2:?usage: bench/before-after.sh BEFORE_TERN AFTER_TERN}
ROUNDS=${ROUNDS:-3}
INFLIGHT=${INFLIGHT:-128}
SIZE=${SIZE:-1024}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
BEFORE_ARGS=${BEFORE_ARGS:-}
AFTER_ARGS=${AFTER_ARGS:-}
BEFORE_CLIENT_ARGS=${BEFORE_CLIENT_ARGS:-}
AFTER_CLIENT_ARGS=${AFTER_CLIENT_ARGS:-}
PORT=${PORT:-9301}
OUT=${OUT:-.build/before-after}
DATA="$OUT/data"
ENDPOINTS="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: > "$RESULTS"
log() { echo "# $(date -u +%H:%M:%S) $*" | tee -a "$RESULTS"; }

CLUSTER_PID=
stop_cluster() {
    if [ -n "$CLUSTER_PID" ]; then
        kill -TERM "$CLUSTER_PID" 2>/dev/null || true
        wait "$CLUSTER_PID" 2>/dev/null || true
        CLUSTER_PID=
    fi
}
trap stop_cluster EXIT

run() {  # binary label [extra cluster up arguments] [extra client arguments], split on spaces
    rm -rf "$DATA"
    # shellcheck disable=SC2086
    "$1" cluster up --data "$DATA" --base-port "$PORT" ${3:-} > "$OUT/cluster-$2.log" 2>&1 &
    CLUSTER_PID=$!
    for _ in $(seq 1 150); do
        # shellcheck disable=SC2086
        if "$1" admin cluster status --endpoints "$ENDPOINTS" ${4:-} 2>/dev/null | grep -q leader; then break; fi
        sleep 0.2
    done
    local pids
    pids=$(pgrep -f "tern serve .*--data $DATA/" | paste -sd, -)
    [ -n "$pids" ] || { log "the $2 cluster did not start (see $OUT/cluster-$2.log)"; exit 1; }
    # shellcheck disable=SC2086
    "$1" bench produce --endpoints "$ENDPOINTS" ${4:-} --size "$SIZE" --inflight "$INFLIGHT" --warmup "$WARMUP" \
        --duration "$DURATION" --pids "$pids" --label "$2" --result-line 2>/dev/null | tee -a "$RESULTS"
    stop_cluster
}

log "before=$BEFORE $BEFORE_ARGS $BEFORE_CLIENT_ARGS after=$AFTER $AFTER_ARGS $AFTER_CLIENT_ARGS rounds=$ROUNDS inflight=$INFLIGHT size=$SIZE duration=${DURATION}s nproc=$(nproc)"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
        run "$BEFORE" before "$BEFORE_ARGS" "$BEFORE_CLIENT_ARGS"
        run "$AFTER" after "$AFTER_ARGS" "$AFTER_CLIENT_ARGS"
    else
        run "$AFTER" after "$AFTER_ARGS" "$AFTER_CLIENT_ARGS"
        run "$BEFORE" before "$BEFORE_ARGS" "$BEFORE_CLIENT_ARGS"
    fi
done
rm -rf "$DATA"
python3 - "$RESULTS" <<'EOF'
import re, statistics, sys
rates = {"before": [], "after": []}
for line in open(sys.argv[1]):
    if not line.startswith("RESULT"):
        continue
    fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    label = fields.get("label")
    rate = fields.get("msgs_per_s")
    if label in rates and rate:
        rates[label].append(float(rate))
b, a = statistics.median(rates["before"]), statistics.median(rates["after"])
rounds = [x / y for x, y in zip(rates["after"], rates["before"])]
print(f"before: {rates['before']} msg/s, median {b:,.0f}")
print(f"after:  {rates['after']} msg/s, median {a:,.0f}")
print(f"after / before: medians {a / b:.3f}; per round {[round(r, 3) for r in rounds]}, median {statistics.median(rounds):.3f}")
EOF
