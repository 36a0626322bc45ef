#!/usr/bin/env python3
"""Summarises `tern chaos` runs for docs/chaos.md: one row per run (seed, faults, acknowledged,
lost, result) and the recovery time distribution per fault kind over all runs.

Usage: scripts/chaos-summary.py ./tern-chaos/101 ./tern-chaos/102 ...
"""
import re
import sys


def quantile(values, q):
    if not values:
        return 0.0
    k = max(0, min(len(values) - 1, int(-(-len(values) * q // 1)) - 1))
    return sorted(values)[k]


rows = []
recovery = {}
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

print("| seed | faults | sent | acknowledged | lost | unexpected | out of order | torn | early | result |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print("| fault | count | p50 s | p99 s | max s |")
print("|---|---|---|---|---|")
for kind in sorted(recovery):
    v = recovery[kind]
    print(f"| {kind} | {len(v)} | {quantile(v, 0.5):.3f} | {quantile(v, 0.99):.3f} | {max(v):.3f} |")
