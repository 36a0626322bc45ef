#!/usr/bin/env bash
# The simulator's CI checks, on a release build of tern-sim:
#  1. a sweep of 100 seeds x 60 virtual seconds with faults;
#  2. determinism across processes: one seed twice, the same trace digest;
#  3. each planted bug that the checkers are known to catch is caught within its seed budget
#     (Raft bugs, and the broker's: dedupe, offsets, queue order, reads).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product tern-sim
SIM=.build/release/tern-sim

echo "sim-check: sweep of seeds 1-100, 60 virtual seconds each"
$SIM --seeds 1-100 --seconds 60

echo "sim-check: five-member groups, seeds 1-30, 60 virtual seconds each"
$SIM --seeds 1-30 --seconds 60 --nodes 5

echo "sim-check: message trace on (its state in every snapshot and replay), seeds 1-30, 60 virtual seconds each"
$SIM --seeds 1-30 --seconds 60 --message-trace

echo "sim-check: two broker groups behind two name servers with a routed producer, seeds 1-20, 60 virtual seconds each"
$SIM --seeds 1-20 --seconds 60 --groups 2

echo "sim-check: seeds that found bugs (docs/simulation.md), 60 virtual seconds each"
for seed in 17 22 30 38 40 45 54 59 64 181 235 290 1085 1240 1703; do
    out=$($SIM --seed "$seed" --seconds 60)
    echo "${out%%$'\n'*}" | cut -c1-120
done

echo "sim-check: determinism across two processes"
a=$($SIM --seed 7 --seconds 20 | grep -o 'digest [0-9a-f]*')
b=$($SIM --seed 7 --seconds 20 | grep -o 'digest [0-9a-f]*')
if [ "$a" != "$b" ] || [ -z "$a" ]; then
    echo "sim-check: seed 7 gave '$a' then '$b'" >&2
    exit 1
fi
echo "sim-check: seed 7 -> $a twice"
a=$($SIM --seed 7 --seconds 20 --groups 2 | grep -o 'digest [0-9a-f]*')
b=$($SIM --seed 7 --seconds 20 --groups 2 | grep -o 'digest [0-9a-f]*')
if [ "$a" != "$b" ] || [ -z "$a" ]; then
    echo "sim-check: seed 7 with two groups gave '$a' then '$b'" >&2
    exit 1
fi
echo "sim-check: seed 7 with two groups -> $a twice"

# Budgets: seeds x virtual seconds per planted bug, above the measured seeds-to-detection
# (docs/simulation.md lists those).
caught=0
failed=0
while read -r plant seeds seconds groups; do
    if out=$($SIM --plant "$plant" --seeds "$seeds" --seconds "$seconds" --groups "${groups:-1}" 2>&1); then
        echo "sim-check: $(echo "$out" | grep 'caught by')"
        caught=$((caught + 1))
    else
        echo "sim-check: planted bug $plant ESCAPED every checker over seeds $seeds ($seconds s each)" >&2
        failed=$((failed + 1))
    fi
done <<'BUDGETS'
dedupe-off 1-20 30
offsets-in-memory-only 1-30 30
reverse-batch 1-10 30
read-wrong-slot 1-10 30
release-early 1-10 30
release-twice 1-10 30
lock-without-fence 1-20 30
send-back-twice 1-10 30
dead-letter-early 1-10 30
deliver-half 1-10 30
redeliver-early 1-10 30
ack-before-fsync 1-200 30
vote-without-log-check 1-60 30
skip-truncation 1-60 30
no-check-quorum 1-200 30
apply-uncommitted 1-60 30
lose-persisted-vote 1-800 10
commit-earlier-term 1-20 30
heartbeat-commit-capped 1-10 30
truncate-peer-frames 1-3 10
snapshot-drops-dedupe 1-10 30
compact-past-applied 1-10 30
trim-ignores-pins 1-40 30
install-before-durable 1-30 30
change-before-term-commit 1-10 30
two-changes-pending 1-10 30
learner-in-quorum 1-60 30
removed-leader-keeps-leading 1-20 30
skip-group-check 1-10 60 2
sticky-routing 1-10 60 2
retry-other-group 1-10 60 2
BUDGETS
echo "sim-check: $caught passed, $failed failed"
[ "$failed" -eq 0 ]
