#!/usr/bin/env bash
# Tern next to its peers, in one run: the peers (etcd, NATS JetStream, RabbitMQ quorum queues,
# started by ../shared/bench/peers/run.sh when that folder exists) and then Tern, all with the
# same message size, in-flight levels and windows, one message per publish, latency from send
# to acknowledgement. Prints one table with ratios and draws throughput against p99 latency.
#
#   bench/compare.sh                 # peers + Tern (about 20 minutes)
#   PEERS= bench/compare.sh          # Tern only (about 6 minutes, most of it the 10 M backlog)
#
# Environment: PEERS="etcd nats rabbit"  INFLIGHT="1 16 128"  WARMUP=5  DURATION=20  SIZE=1024
#              BATCH="16x64"  (Tern's batched runs: in-flight x messages per send; empty: none)
#              CONSUME=10000000  (backlog read back from one node; 0: skip; needs about 3.5 GB of
#              disk per million 1 KiB messages across the three nodes)
#              OUT=.build/compare  PEERS_DIR=../shared/bench/peers  PORT=9301
# Output: $OUT/results.txt (RESULT lines, peers' and Tern's), $OUT/compare.md, $OUT/compare.svg.
set -euo pipefail
# Everything runs inside main(), so bash has read the whole file before it starts.
main() {
    cd "$(dirname "$0")/.."
    PEERS=${PEERS-etcd nats rabbit}
    INFLIGHT=${INFLIGHT:-1 16 128}
    WARMUP=${WARMUP:-5}
    DURATION=${DURATION:-20}
    SIZE=${SIZE:-1024}
    BATCH=${BATCH-16x64}
    CONSUME=${CONSUME-10000000}
    OUT=${OUT:-.build/compare}
    PEERS_DIR=${PEERS_DIR:-../shared/bench/peers}
    PORT=${PORT:-9301}
    RESULTS=$OUT/results.txt
    log() { echo "[$(date +%T)] $*" >&2; }

    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)  # absolute: the peers' script runs from its own folder
    : > "$RESULTS"
    echo "# $(date -Is) nproc=$(nproc) kernel=$(uname -r) commit=$(git rev-parse --short HEAD 2>/dev/null || echo none) inflight='$INFLIGHT' warmup=${WARMUP}s duration=${DURATION}s size=$SIZE" >> "$RESULTS"

    log "building tern (release)"
    swift build -c release --product tern >&2
    TERN=.build/release/tern

    if [ -n "$PEERS" ]; then
        if [ -x "$PEERS_DIR/run.sh" ]; then
            for p in $PEERS; do
                log "peer $p (${PEERS_DIR}/run.sh)"
                rm -f "$OUT/peers/results.txt"
                if OUT="$OUT/peers" INFLIGHT="$INFLIGHT" WARMUP="${WARMUP}s" DURATION="${DURATION}s" SIZE="$SIZE" "$PEERS_DIR/run.sh" "$p" >&2; then
                    grep '^RESULT' "$OUT/peers/results.txt" >> "$RESULTS" || log "peer $p left no RESULT lines in $OUT/peers/results.txt"
                else
                    log "peer $p FAILED; its rows are missing from the table"
                fi
            done
        else
            log "no peer scripts at $PEERS_DIR: Tern only"
        fi
    fi

    DATA=$OUT/tern-data
    ENDPOINTS="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
    CLUSTER_PID=
    stop_cluster() {
        if [ -n "$CLUSTER_PID" ]; then
            kill -TERM "$CLUSTER_PID" 2>/dev/null || true
            wait "$CLUSTER_PID" 2>/dev/null || true
            CLUSTER_PID=
        fi
    }
    trap stop_cluster EXIT

    # A fresh three-node cluster per level (as the peers get), its server pids in SERVER_PIDS.
    start_cluster() {
        rm -rf "$DATA"
        "$TERN" cluster up --data "$DATA" --base-port "$PORT" > "$OUT/cluster.log" 2>&1 &
        CLUSTER_PID=$!
        for _ in $(seq 1 100); do
            if "$TERN" admin cluster status --endpoints "$ENDPOINTS" 2>/dev/null | grep -q leader; then break; fi
            sleep 0.2
        done
        SERVER_PIDS=$(pgrep -f "tern serve .*--data $DATA/" | paste -sd, -)
        [ -n "$SERVER_PIDS" ] || { log "the cluster did not start (see $OUT/cluster.log)"; exit 1; }
    }

    run_tern() {  # inflight batch label
        start_cluster
        log "tern $3 inflight=$1 batch=$2 warmup=${WARMUP}s duration=${DURATION}s (servers $SERVER_PIDS)"
        "$TERN" bench produce --endpoints "$ENDPOINTS" --size "$SIZE" --inflight "$1" --batch "$2" \
            --warmup "$WARMUP" --duration "$DURATION" --pids "$SERVER_PIDS" --label "$3" --result-line 2>/dev/null | tee -a "$RESULTS"
        stop_cluster
    }

    for k in $INFLIGHT; do run_tern "$k" 1 tern-3node; done
    for b in $BATCH; do run_tern "${b%x*}" "${b#*x}" "tern-3node-batch${b#*x}"; done

    # A backlog of $CONSUME messages (batched sends), then read from one node, K pulls outstanding.
    if [ "$CONSUME" -gt 0 ]; then
        start_cluster
        log "tern: filling a backlog of $CONSUME messages of $SIZE B (16 x 64 in flight)"
        "$TERN" bench produce --endpoints "$ENDPOINTS" --size "$SIZE" --inflight 16 --batch 64 --messages "$CONSUME" \
            --warmup 0 --duration 3600 --pids "$SERVER_PIDS" --label tern-backlog-fill --result-line 2>/dev/null | tee -a "$RESULTS"
        log "tern: reading the backlog from 127.0.0.1:$PORT, 4 pulls outstanding"
        "$TERN" bench consume --endpoints "127.0.0.1:$PORT" --inflight 4 --duration 600 --pids "$SERVER_PIDS" --result-line 2>/dev/null | tee -a "$RESULTS"
        stop_cluster
        rm -rf "$DATA"
    fi

    python3 bench/compare.py "$RESULTS" --svg "$OUT/compare.svg" | tee "$OUT/compare.md"
    log "table: $OUT/compare.md  plot: $OUT/compare.svg  raw: $RESULTS"
}
main "$@"; exit $?
