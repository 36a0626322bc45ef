#!/usr/bin/env python3
"""Tern and its peers side by side, from RESULT lines (bench/compare.sh writes them).

usage: compare.py RESULTS [--svg FILE]
Prints a markdown table with ratios against the best fsyncing peer and against NATS (which does
not fsync before acknowledging), the goals of issue 7 with their verdicts, and draws acknowledged
msg/s against p99 latency to an SVG file.
"""
import math
import re
import sys

FSYNCING = {"etcd", "rabbit"}  # fsync on a quorum before the ack; NATS JetStream does not
GOALS = {"ratio_fsync": 3.0, "p50_1": 0.5, "batch_msgs": 150_000, "batch_p99": 20.0, "rss_mib": 512}


def kv(line):
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S*)', line)}


def load(path):
    rows = []
    for line in open(path):
        if line.startswith("RESULT "):
            r = kv(line)
            if r.get("label", "").endswith("-synccheck"):
                continue
            for k in ("inflight", "acked", "errors"):
                r[k] = int(r.get(k, 0) or 0)
            for k in ("msgs_per_s", "lat_ms_p50", "lat_ms_p99", "lat_ms_p999", "server_cpu_pct", "loadgen_cpu_pct", "machine_busy_pct"):
                r[k] = float(r.get(k, 0) or 0)
            r["batch"] = int(r.get("batch", 1) or 1)
            rows.append(r)
    return rows


def cpu_us_per_msg(r):
    """Server plus load-generator CPU time per acknowledged message, in microseconds."""
    if r["msgs_per_s"] <= 0:
        return float("nan")
    return (r["server_cpu_pct"] + r["loadgen_cpu_pct"]) / 100 / r["msgs_per_s"] * 1e6


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        return 2
    svg = None
    if "--svg" in args:
        i = args.index("--svg")
        svg = args[i + 1]
        del args[i:i + 2]
    rows = load(args[0])
    single = [r for r in rows if r["batch"] == 1]
    levels = sorted({r["inflight"] for r in single})
    tern = {r["inflight"]: r for r in single if r["system"] == "tern"}
    peers = [r for r in single if r["system"] != "tern"]

    def best(level, systems):
        c = [r for r in peers if r["inflight"] == level and r["system"] in systems]
        return max(c, key=lambda r: r["msgs_per_s"]) if c else None

    print("## One message per publish, K in flight (3 nodes, loopback, %s B)\n" % (rows[0].get("size", "?") if rows else "?"))
    print("| system | in flight | acked msg/s | p50 ms | p99 ms | p99.9 ms | server CPU % [per node] | load gen CPU % | machine busy % | CPU µs/msg | Tern ÷ this |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for level in levels:
        for r in sorted([r for r in single if r["inflight"] == level], key=lambda r: (r["system"] != "tern", r["label"])):
            t = tern.get(level)
            ratio = "" if r["system"] == "tern" or not t or r["msgs_per_s"] <= 0 else "%.2fx" % (t["msgs_per_s"] / r["msgs_per_s"])
            print("| %s | %d | %s | %.3f | %.3f | %.3f | %.0f [%s] | %.0f | %.0f | %.1f | %s |" % (
                r["label"], level, f"{r['msgs_per_s']:,.0f}", r["lat_ms_p50"], r["lat_ms_p99"], r["lat_ms_p999"],
                r["server_cpu_pct"], r.get("server_cpu_pct_each", ""), r["loadgen_cpu_pct"], r["machine_busy_pct"], cpu_us_per_msg(r), ratio))
    batched = [r for r in rows if r["system"] == "tern" and r["batch"] > 1]
    if batched:
        print("\n## Tern, batched sends\n")
        print("| run | in flight × per send | acked msg/s | MB/s | p50 ms | p99 ms | leader fdatasync/s | bytes per fdatasync | server CPU % | machine busy % |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in batched:
            print("| %s | %d × %d | %s | %s | %.3f | %.3f | %s | %s | %.0f | %.0f |" % (
                r["label"], r["inflight"], r["batch"], f"{r['msgs_per_s']:,.0f}", r.get("MB_per_s", ""), r["lat_ms_p50"], r["lat_ms_p99"],
                r.get("fsync_per_s", "?"), r.get("bytes_per_fsync", "?"), r["server_cpu_pct"], r["machine_busy_pct"]))

    print("\n## Goals (issue 7)\n")
    verdicts = []

    def goal(text, ok, measured):
        verdicts.append(ok)
        print("- %s: %s — %s" % (text, "**met**" if ok else ("**missed**" if ok is False else "not measured"), measured))

    top = max(levels) if levels else None
    t = tern.get(top) if top else None
    bf, nats = (best(top, FSYNCING), best(top, {"nats"})) if top else (None, None)
    if t and bf:
        need = GOALS["ratio_fsync"] * bf["msgs_per_s"]
        goal("%d in flight: at least %.0fx the best fsyncing peer (%s, %s msg/s, so %s)" % (top, GOALS["ratio_fsync"], bf["label"], f"{bf['msgs_per_s']:,.0f}", f"{need:,.0f}"),
             t["msgs_per_s"] >= need, "Tern %s msg/s = %.2fx" % (f"{t['msgs_per_s']:,.0f}", t["msgs_per_s"] / bf["msgs_per_s"]))
    else:
        goal("%s in flight: at least 3x the best fsyncing peer" % top, None, "no peer or no Tern row")
    if t and nats:
        goal("%d in flight: more than NATS JetStream without fsync (%s msg/s)" % (top, f"{nats['msgs_per_s']:,.0f}"),
             t["msgs_per_s"] > nats["msgs_per_s"], "Tern %s msg/s = %.2fx" % (f"{t['msgs_per_s']:,.0f}", t["msgs_per_s"] / nats["msgs_per_s"]))
    else:
        goal("more than NATS at %s in flight" % top, None, "no NATS row")
    one = tern.get(1)
    goal("1 in flight: p50 at most %.1f ms" % GOALS["p50_1"], (one["lat_ms_p50"] <= GOALS["p50_1"]) if one else None,
         "p50 %.3f ms" % one["lat_ms_p50"] if one else "no row")
    timed = [r for r in batched if r["label"] != "tern-backlog-fill"]  # the fill has no warm-up
    if timed:
        b = max(timed, key=lambda r: r["msgs_per_s"])
        goal("batched: at least %s msg/s with p99 under %.0f ms" % (f"{GOALS['batch_msgs']:,}", GOALS["batch_p99"]),
             b["msgs_per_s"] >= GOALS["batch_msgs"] and b["lat_ms_p99"] < GOALS["batch_p99"],
             "%s msg/s, p99 %.1f ms (%s; %s fdatasync/s, %s bytes each)" % (f"{b['msgs_per_s']:,.0f}", b["lat_ms_p99"], b["label"], b.get("fsync_per_s"), b.get("bytes_per_fsync")))
    consumed = [kv(l) for l in open(args[0]) if l.startswith("CONSUME ")]
    if consumed:
        c = consumed[-1]
        mbs = float(c.get("MB_per_s", 0))
        goal("consuming a backlog of %s messages from one node: at least 300 MB/s" % f"{int(c.get('messages', 0)):,}", mbs >= 300,
             "%.0f MB/s (%s msg/s, %s pulls outstanding; server CPU %s%% [%s])" % (mbs, f"{float(c.get('msgs_per_s', 0)):,.0f}", c.get("inflight"), c.get("server_cpu_pct"), c.get("server_cpu_pct_each")))
    else:
        goal("consuming a backlog from one node: at least 300 MB/s", None, "not run (CONSUME=0)")
    peaks = [int(x) for r in rows + consumed if r.get("system") == "tern" for x in r.get("peak_rss_mib_each", "").split("/") if x.isdigit()]
    goal("a node's peak resident memory under %d MiB through these runs" % GOALS["rss_mib"], (max(peaks) < GOALS["rss_mib"]) if peaks else None,
         "peak %d MiB" % max(peaks) if peaks else "no figures")
    if svg:
        draw(rows, svg)
        print("\nPlot: %s" % svg)
    return 0


def draw(rows, path):
    """Acknowledged msg/s (y, log) against p99 latency in ms (x, log), one line per system."""
    W, H, L, R, T, B = 760, 480, 70, 170, 30, 50
    series = {}
    for r in rows:
        if r["msgs_per_s"] > 0 and r["lat_ms_p99"] > 0 and r["label"] != "tern-backlog-fill":
            series.setdefault(r["label"], []).append(r)
    xs = [r["lat_ms_p99"] for s in series.values() for r in s] or [1]
    ys = [r["msgs_per_s"] for s in series.values() for r in s] or [1]
    x0, x1 = 10 ** math.floor(math.log10(min(xs))), 10 ** math.ceil(math.log10(max(xs)))
    y0, y1 = 10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(max(ys)))

    def px(x):
        return L + (math.log10(x) - math.log10(x0)) / (math.log10(x1) - math.log10(x0)) * (W - L - R)

    def py(y):
        return H - B - (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) * (H - T - B)

    colours = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>']
    d = x0
    while d <= x1 * 1.0001:
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%g</text>' % (px(d), T, px(d), H - B, px(d), H - B + 16, d))
        d *= 10
    d = y0
    while d <= y1 * 1.0001:
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>' % (L, py(d), W - R, py(d), L - 6, py(d) + 4, f"{d:,.0f}"))
        d *= 10
    out.append('<text x="%d" y="%d" text-anchor="middle">p99 latency, send to acknowledgement (ms, log)</text>' % ((L + W - R) // 2, H - 12))
    out.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">acknowledged msg/s (log)</text>' % ((T + H - B) // 2, (T + H - B) // 2))
    for k, (label, s) in enumerate(sorted(series.items(), key=lambda kv: (not kv[0].startswith("tern"), kv[0]))):
        c = colours[k % len(colours)]
        s = sorted(s, key=lambda r: r["inflight"] * r["batch"])
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, " ".join("%.1f,%.1f" % (px(r["lat_ms_p99"]), py(r["msgs_per_s"])) for r in s)))
        for r in s:
            tag = "%d" % r["inflight"] if r["batch"] == 1 else "%dx%d" % (r["inflight"], r["batch"])
            out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/><text x="%.1f" y="%.1f" fill="%s">%s</text>' % (px(r["lat_ms_p99"]), py(r["msgs_per_s"]), c, px(r["lat_ms_p99"]) + 5, py(r["msgs_per_s"]) - 5, c, tag))
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>' % (W - R + 12, T + 18 * k, c, W - R + 30, T + 18 * k + 10, label))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    sys.exit(main())
