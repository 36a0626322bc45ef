"""Metrics and the web console on a running three-node group (docs/operations.md; run by
scripts/ops-check.sh, part of `make test`).

1. `tern cluster up` with its HTTP listeners; Prometheus (Debian's package) scrapes the three
   nodes every second while a producer loads the group and a slow consumer reads part of it.
   Prometheus's API must then hold the key series: one leader among three nodes, commit indexes,
   sends per topic, the commit latency's 99th percentile, the slow group's lag equal to what
   `tern admin group describe` says; every tern_ series Prometheus holds must be listed in
   docs/operations.md, and every metric listed there must exist.
2. Headless Chromium (Debian's package) loads the leader's console and a follower's; what they
   show (members and roles, topics and their messages, groups and their lag, a group's queues)
   must equal the cluster's state as the CLI reads it, and the group's lag must equal the
   topic's queue maxima (`tern admin topic describe`) minus its committed offsets. A screenshot
   of the leader's console goes to docs/images/console.png.
"""
import html.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE, HTTP, PROM = 9461, 8461, 9499


def fail(message):
    print(f"ops-check: FAIL: {message}")
    sys.exit(1)


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def prom(query):
    body = json.loads(get(f"http://127.0.0.1:{PROM}/api/v1/query?" + urllib.parse.urlencode({"query": query})))
    if body.get("status") != "success":
        fail(f"Prometheus refused {query}: {body}")
    return body["data"]["result"]


class DataAttrs(html.parser.HTMLParser):
    """Every element's data- attributes, in document order."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def handle_starttag(self, tag, attrs):
        d = {k[5:]: v for k, v in attrs if k.startswith("data-")}
        if d:
            self.rows.append(d)


def chromium(args, url):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        fail("chromium is not installed (Debian's chromium package; .ci/run installs it)")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=" + tempfile.mkdtemp(prefix="tern-chromium-")] + args + [url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def documented_metrics():
    text = open(os.path.join(ROOT, "docs/operations.md")).read()
    section = text[text.index("## Metrics"):]
    section = section[: section.index("\n## ", 4)]
    return set(re.findall(r"^\| `(tern_[a-z_]+)`", section, re.M))


def main():
    tern = sys.argv[1]
    work = tempfile.mkdtemp(prefix="tern-ops-check-")
    endpoints = ",".join(f"127.0.0.1:{BASE + i}" for i in range(3))
    cli = [tern]
    ep = ["--endpoints", endpoints]
    procs = []
    try:
        up = subprocess.Popen(
            [tern, "cluster", "up", "--data", work + "/data", "--base-port", str(BASE), "--grpc-base-port", "0", "--http-base-port", str(HTTP)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        procs.append(up)
        # `cluster up` prints "leader: ID" once it has one; a reader thread so that silence cannot
        # hang the check.
        import queue
        import threading
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in up.stdout], daemon=True).start()
        deadline = time.time() + 60
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                fail("the cluster did not elect a leader within 60 s")
            if line.startswith("leader:"):
                break
        config = work + "/prometheus.yml"
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tern\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{HTTP}', '127.0.0.1:{HTTP + 1}', '127.0.0.1:{HTTP + 2}']\n")
        promlog = open(work + "/prometheus.log", "w")
        procs.append(subprocess.Popen(
            ["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + work + "/prom", f"--web.listen-address=127.0.0.1:{PROM}"],
            stdout=promlog, stderr=subprocess.STDOUT, start_new_session=True))
        subprocess.run(cli + ["admin", "topic", "create", "ops", "--queues", "4"] + ep, check=True, capture_output=True)
        bench = subprocess.run(cli + ["bench", "produce", "--topic", "ops", "--inflight", "16", "--duration", "8", "--warmup", "0"] + ep,
                               capture_output=True, text=True)
        if bench.returncode != 0:
            fail(f"the load failed: {bench.stderr[-2000:]}")
        subprocess.run(cli + ["consume", "--topic", "ops", "--group", "slow", "--count", "300"] + ep, check=True, capture_output=True)
        subprocess.run(cli + ["admin", "snapshot"] + ep, check=True, capture_output=True)  # for tern_snapshot_age_seconds
        time.sleep(4)  # a few scrapes after the load and the consumer's last commit

        # 1. Prometheus.
        up_targets = prom('up{job="tern"}')
        if sorted(r["value"][1] for r in up_targets) != ["1", "1", "1"]:
            fail(f"Prometheus does not scrape three healthy nodes: {up_targets}")
        leaders = prom('sum(tern_raft_role{role="leader"})')
        if not leaders or leaders[0]["value"][1] != "1":
            fail(f"one leader expected among the three nodes, Prometheus says {leaders}")
        if len(prom("tern_raft_commit_index")) != 3:
            fail("tern_raft_commit_index is not there for three nodes")
        sent = prom('sum(increase(tern_topic_send_requests_total{topic="ops"}[1m]))')
        if not sent or float(sent[0]["value"][1]) <= 0:
            fail(f"no sends counted for topic ops: {sent}")
        p99 = prom("max(histogram_quantile(0.99, rate(tern_raft_commit_latency_seconds_bucket[1m])))")
        if not p99 or p99[0]["value"][1] in ("NaN", "+Inf"):
            fail(f"no commit latency percentile: {p99}")
        group = json.loads(subprocess.run(cli + ["admin", "group", "describe", "slow", "--json"] + ep, check=True, capture_output=True, text=True).stdout)
        lag = prom('max(tern_consumer_group_lag_messages{group="slow"})')
        if not lag or int(float(lag[0]["value"][1])) != group["lag"]:
            fail(f"Prometheus has the slow group's lag as {lag}, tern admin group describe as {group['lag']}")
        names = set(json.loads(get(f"http://127.0.0.1:{PROM}/api/v1/label/__name__/values"))["data"])
        exposed = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names if n.startswith("tern_")}
        documented = documented_metrics()
        if exposed - documented:
            fail(f"metrics not listed in docs/operations.md: {sorted(exposed - documented)}")
        if documented - exposed:
            fail(f"metrics listed in docs/operations.md that no node exposed: {sorted(documented - exposed)}")
        print(f"ops-check: Prometheus scraped 3 nodes: 1 leader, {float(sent[0]['value'][1]):.0f} sends on ops in the last minute, commit p99 "
              f"{float(p99[0]['value'][1]) * 1000:.2f} ms, group slow lag {group['lag']} (as the CLI says); {len(exposed)} metrics, each documented")

        # A name other than the listener's (a web page rebinding its name to 127.0.0.1) is refused.
        req = urllib.request.Request(f"http://127.0.0.1:{HTTP}/api/messages?topic=ops&key=k", headers={"Host": "rebound.example:%d" % HTTP})
        try:
            urllib.request.urlopen(req, timeout=5)
            fail("a request naming another host was answered")
        except urllib.error.HTTPError as e:
            if e.code != 421:
                fail(f"a request naming another host got {e.code}, not 421")
        print("ops-check: a request naming another host than the listener's is refused (421)")

        # 2. The console.
        status = json.loads(subprocess.run(cli + ["admin", "cluster", "status", "--json"] + ep, check=True, capture_output=True, text=True).stdout)
        roles = {n["id"]: n["role"] for n in status["nodes"]}
        leader = next(i for i, r in roles.items() if r == "leader")
        described = subprocess.run(cli + ["admin", "topic", "describe", "ops"] + ep, check=True, capture_output=True, text=True).stdout
        maxima = {int(m.group(1)): int(m.group(3)) for m in re.finditer(r"^(\d+)\s+(\d+)\s+(\d+)\s*$", described, re.M)}
        committed = {q["queue"]: q.get("committed", 0) for q in group["queues"] if q["topic"] == "ops"}
        expected_lag = sum(maxima[q] - committed.get(q, 0) for q in maxima)
        if expected_lag != group["lag"]:
            fail(f"tern admin group describe says lag {group['lag']}, the topic's maxima minus the committed offsets give {expected_lag}")
        for node in (leader, next(i for i in roles if i != leader)):
            port = HTTP + int(node[1:]) - 1
            dom = chromium(["--virtual-time-budget=8000", "--dump-dom"], f"http://127.0.0.1:{port}/")
            attrs = DataAttrs()
            attrs.feed(dom)
            shown_roles = {r["node"]: r["role"] for r in attrs.rows if "node" in r and "role" in r}
            if shown_roles != roles:
                fail(f"{node}'s console shows roles {shown_roles}, the cluster has {roles}")
            topics = {r["topic"]: int(r["messages"]) for r in attrs.rows if "topic" in r}
            if topics.get("ops") != sum(maxima.values()):
                fail(f"{node}'s console shows {topics.get('ops')} messages in ops, the topic holds {sum(maxima.values())}")
            groups = {r["group"]: int(r["lag"]) for r in attrs.rows if "group" in r}
            if groups.get("slow") != expected_lag:
                fail(f"{node}'s console shows lag {groups.get('slow')} for group slow; the topic's maxima minus its committed offsets give {expected_lag}")
            print(f"ops-check: {node}'s console ({roles[node]}) shows the roles, ops's {topics['ops']} messages and group slow's lag {expected_lag}, as the CLI reads them")
        # The screenshot: the leader's console after its charts have points (three minutes of
        # history are kept; a few seconds of load show).
        port = HTTP + int(leader[1:]) - 1
        subprocess.run(cli + ["bench", "produce", "--topic", "ops", "--inflight", "8", "--duration", "6", "--warmup", "0"] + ep, capture_output=True)
        os.makedirs(os.path.join(ROOT, "docs/images"), exist_ok=True)
        shot = os.path.join(ROOT, "docs/images/console.png")
        chromium(["--window-size=1400,1000", "--virtual-time-budget=8000", "--screenshot=" + shot], f"http://127.0.0.1:{port}/")
        if not os.path.exists(shot) or os.path.getsize(shot) < 10_000:
            fail("no screenshot was written")
        print(f"ops-check: passed; screenshot of {leader}'s console in docs/images/console.png")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
