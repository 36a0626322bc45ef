#!/usr/bin/env bash
# `bench/retention.sh` (RUN=600 DATA=/tmp/retention-data TERN=.build/release/tern): 10 minutes of steady batched load on a local 3-node cluster with --retention-bytes 2GiB;
# every 10 s the size of each node's data directory; the maximum at the end.
set -euo pipefail
T=${TERN:-.build/release/tern}
D=${DATA:-/tmp/retention-data}
SECONDS_RUN=${RUN:-600}
rm -rf "$D"
"$T" cluster up --data "$D" --base-port 9501 --node-arg=--retention-bytes=2GiB > "$D.cluster.log" 2>&1 &
CP=$!
trap 'kill -TERM $CP 2>/dev/null; wait $CP 2>/dev/null; rm -rf "$D"' EXIT
E=127.0.0.1:9501,127.0.0.1:9502,127.0.0.1:9503
for i in $(seq 1 100); do "$T" admin cluster status --endpoints $E 2>/dev/null | grep -q leader && break; sleep 0.2; done
"$T" bench produce --endpoints $E --size 1024 --inflight 16 --batch 64 --warmup 0 --duration "$SECONDS_RUN" --result-line 2>/dev/null > "$D.produce.txt" &
BP=$!
max=0
start=$(date +%s)
while kill -0 $BP 2>/dev/null; do
    sleep 10
    line="$(( $(date +%s) - start )) s:"
    for n in n1 n2 n3; do
        b=$(du -sb "$D/$n" 2>/dev/null | cut -f1)
        line="$line $n $((b / 1048576)) MiB"
        [ "$b" -gt "$max" ] && max=$b
    done
    echo "$line"
done
cat "$D.produce.txt"
"$T" admin cluster status --endpoints $E
echo "max data directory: $((max / 1048576)) MiB (limit 2048 MiB + two 256 MiB segments = 2560 MiB)"
