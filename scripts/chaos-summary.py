#!/usr/bin/env python3
"""Summarises `tern chaos` runs for docs/chaos.md: one row per run (seed, faults, acknowledged,
lost, result) and the recovery time distribution per fault kind over all runs: over every
fault, and over the faults injected into a settled cluster: no node restarted (after a kill or
a full disk) in the 30 s before, since such a node may still be rebuilding its state from its
log, and the next fault then meets two.

Usage: scripts/chaos-summary.py ./tern-chaos/101 ./tern-chaos/102 ...
"""
import json
import re
import sys

SETTLE = 30.0


def quantile(values, q):
    if not values:
        return 0.0
    k = max(0, min(len(values) - 1, int(-(-len(values) * q // 1)) - 1))
    return sorted(values)[k]


rows = []
recovery = {}
settled = {}
for folder in sys.argv[1:]:
    text = open(f"{folder}/report.txt").read()
    seed = re.search(r"^seed (\d+)", text, re.M).group(1)
    faults = re.search(r"^faults injected: (\d+)", text, re.M).group(1)
    m = re.search(r"^sent (\d+), acknowledged (\d+), lost (\d+), unexpected (\d+), out of order (\d+), torn (\d+), early (\d+)", text, re.M)
    result = "PASS" if "result: PASS" in text else "FAIL"
    rows.append((seed, faults) + m.groups() + (result,))
    for line in open(f"{folder}/recovery.csv").read().splitlines()[1:]:
        kind, seconds = line.split(",")
        recovery.setdefault(kind, []).append(float(seconds))
    # Recompute per fault (the same rule as the report) to tell settled faults from compound ones.
    faults, acks = [], []
    for line in open(f"{folder}/history.jsonl"):
        e = json.loads(line)
        if e["op"] == "fault":
            faults.append(e)
        elif e["op"] == "send" and e["ok"] and e["workload"] in ("plain", "idempotent", "ordered"):
            # Runs with --groups: the id names the acknowledging group ("g2/...").
            acks.append((e["t"], e["end"], e.get("id", "").split("/")[0] if "/" in e.get("id", "") else None))
    acks.sort(key=lambda a: a[1])
    for f in faults:
        # A fault in one group (runs with --groups) is judged in that group: its earlier faults,
        # its acknowledgements.
        group = f.get("group")
        if any(g is not f and g.get("group") == group and g["healed"] <= f["t"] and f["t"] - g["healed"] < SETTLE
               and (g["kind"].startswith("kill-") or g["kind"] == "disk-full") for g in faults):
            continue
        first = next((a for a in acks if a[0] >= f["t"] and (group is None or a[2] == group)), None)
        if first:
            settled.setdefault(f["kind"], []).append(first[1] - f["t"])

print("| seed | faults | sent | acknowledged | lost | unexpected | out of order | torn | early | result |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print("| fault | count | p50 s | p99 s | max s | settled: count | p50 s | p99 s | max s |")
print("|---|---|---|---|---|---|---|---|---|")
for kind in sorted(recovery):
    v = recovery[kind]
    w = settled.get(kind, [])
    tail = f"{len(w)} | {quantile(w, 0.5):.3f} | {quantile(w, 0.99):.3f} | {max(w):.3f}" if w else "0 | - | - | -"
    print(f"| {kind} | {len(v)} | {quantile(v, 0.5):.3f} | {quantile(v, 0.99):.3f} | {max(v):.3f} | {tail} |")
