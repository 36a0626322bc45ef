#!/usr/bin/env python3
"""The official RocketMQ 5 Python client (rocketmq-python-client from PyPI) against a real
three-node Tern started by `tern cluster up` (with --groups 2: two groups of three behind two
name servers, every topic's queues spread over both), through its gRPC fronts. Run by
scripts/rocketmq-interop.sh, which makes the virtual environment; docs/rocketmq.md lists the
scenarios. Every scenario asserts what the client saw; any failure exits non-zero."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message,
                      MessageListener, Producer, PushConsumer, SimpleConsumer, TransactionChecker,
                      TransactionResolution)

args = None
failures = []


def log(text):
    print("interop: " + text, flush=True)


def check(ok, what):
    if ok:
        log("  ok   " + what)
    else:
        log("  FAIL " + what)
        failures.append(what)


def tern(*argv, timeout=60):
    reach = ["--nameservers", args.nameservers] if args.groups > 1 else ["--endpoints", args.endpoints]
    out = subprocess.run([args.tern, *argv, *reach], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("tern %s: %s %s" % (" ".join(argv), out.stdout, out.stderr))
    return out.stdout


def config():
    return ClientConfiguration(args.grpc, Credentials(), request_timeout=5)


def message(topic, body, tag=None, keys=None, group=None, props=None):
    m = Message()
    m.topic = topic
    m.body = body.encode() if isinstance(body, str) else body
    if tag:
        m.tag = tag
    if keys:
        m.keys = keys
    if group:
        m.message_group = group
    for k, v in (props or {}).items():
        m.add_property(k, v)
    return m


def drain(consumer, want, seconds, invisible=15, ack=True, on_message=None):
    """Receives until `want` messages arrived or time ran out; acknowledges each unless told not to."""
    got = []
    deadline = time.time() + seconds
    while len(got) < want and time.time() < deadline:
        for m in consumer.receive(32, invisible):
            got.append(m)
            if on_message:
                on_message(m)
            if ack:
                consumer.ack(m)
    return got


def diagnose(topic, group, client_id):
    """Where a message that did not arrive is, and how far the group got, for the log."""
    for argv in (("admin", "message", "get", "--topic", topic, "--id", client_id), ("admin", "group", "describe", group),
                 ("admin", "topic", "describe", topic)):
        try:
            log("  %s:\n%s" % (" ".join(argv), tern(*argv)))
        except Exception as e:  # noqa: BLE001
            log("  %s: %s" % (" ".join(argv), e))


def leader():
    """The leader of the group the clients' front is in (with groups: g1)."""
    group = ["--broker-group", "g1"] if args.groups > 1 else []
    status = json.loads(tern("admin", "cluster", "status", "--json", *group))
    for n in status["nodes"]:
        if n["role"] == "leader":
            return n["id"]
    return None


# --- Scenarios -------------------------------------------------------------------------------

def normal(topic, group, count=20):
    log("normal: %d sends with tag, keys and properties; receive and ack" % count)
    p = Producer(config(), (topic,))
    p.startup()
    sent = {}
    for i in range(count):
        r = p.send(message(topic, "normal %d" % i, tag="even" if i % 2 == 0 else "odd", keys="key%d" % i,
                           props={"seq": str(i)}))
        sent[r.message_id] = i
    p.shutdown()
    check(len(sent) == count, "every send acknowledged with its own message id")
    c = SimpleConsumer(config(), group, {topic: FilterExpression()}, await_duration=5)
    c.startup()
    got = drain(c, count, 30)
    c.shutdown()
    by_id = {m.message_id: m for m in got}
    check(set(by_id) == set(sent), "every sent message received once, by the id the send returned")
    check(all(m.body == ("normal %d" % sent[i]).encode() for i, m in by_id.items()), "bodies intact")
    check(all(m.properties.get("seq") == str(sent[i]) for i, m in by_id.items()), "user properties intact")
    check(all(m.tag == ("even" if sent[i] % 2 == 0 else "odd") for i, m in by_id.items()), "tags intact")
    check(all("key%d" % sent[i] in m.keys for i, m in by_id.items()), "keys intact")
    check(all(m.delivery_attempt == 1 for m in got), "first deliveries are attempt 1")
    if args.groups > 1:
        # Receipt handles name the broker group that handed the message out (t2:g2/...).
        brokers = {m.receipt_handle.split("/")[0] for m in got if m.receipt_handle.startswith("t2:")}
        check(brokers == {"t2:g%d" % (k + 1) for k in range(args.groups)},
              "received from every broker group through one front: %s" % sorted(brokers))
    some = next(iter(sent))
    found = tern("admin", "message", "get", "--topic", topic, "--id", some)
    check(re.search(r"\tnormal %d$" % sent[some], found, re.M) is not None and some in found,
          "tern admin message get finds a message by the client's id")


def tag_filter(topic, group):
    log("tag filter: only 'keep' of keep/drop is received")
    p = Producer(config(), (topic,))
    p.startup()
    keep = {p.send(message(topic, "k%d" % i, tag="keep")).message_id for i in range(5)}
    for i in range(5):
        p.send(message(topic, "d%d" % i, tag="drop"))
    p.shutdown()
    c = SimpleConsumer(config(), group, {topic: FilterExpression("keep")}, await_duration=3)
    c.startup()
    got = drain(c, 5, 20)
    time.sleep(1)
    got += drain(c, 1, 4)
    c.shutdown()
    check({m.message_id for m in got} == keep and len(got) == 5, "exactly the five tagged 'keep'")


def send_groups(p, topic, prefix, groups, per_group):
    """Sends 0..per_group-1 to each of `groups` message groups, interleaved."""
    for i in range(per_group):
        for g in range(groups):
            p.send(message(topic, "%d" % i, group="%s-%d" % (prefix, g)))


def fifo(topic, group, groups=3, per_group=10):
    log("fifo: %d message groups of %d into a FIFO topic, read by a FIFO group" % (groups, per_group))
    p = Producer(config(), (topic,))
    p.startup()
    send_groups(p, topic, "order", groups, per_group)
    try:
        p.send(message(topic, "no group"))
        check(False, "a message without a group is refused by a FIFO topic")
    except Exception:  # noqa: BLE001
        check(True, "a message without a group is refused by a FIFO topic")
    p.shutdown()
    c = SimpleConsumer(config(), group, {topic: FilterExpression()}, await_duration=3)
    c.startup()
    # The first batch is not acknowledged: its queues hand out nothing more until it lapses.
    first = c.receive(4, 10)
    held = {m.message_group for m in first}
    check(bool(first), "a first batch arrives")
    blocked = drain(c, 1, 3, ack=False)
    check(not any(m.message_group in held for m in blocked), "nothing more of those message groups while the batch is invisible")
    got = list(first)
    for m in first:
        c.ack(m)
    for m in blocked:
        c.ack(m)
    got += blocked
    # Then four at a time, each batch acknowledged before the next receive. With groups, every
    # other receive goes to a group whose queues are drained or blocked and waits out the front's
    # shortest long poll (5 s): more time.
    deadline = time.time() + 40 * args.groups
    while len(got) < groups * per_group and time.time() < deadline:
        batch = c.receive(4, 10)
        for m in batch:
            c.ack(m)
        got += batch
    c.shutdown()
    log("  received %d in %.1f s of receives four at a time" % (len(got), time.time() - (deadline - 40 * args.groups)))
    seqs = {}
    for m in got:
        seqs.setdefault(m.message_group, []).append(int(m.body))
    check(len(got) == groups * per_group, "all %d received (got %d)" % (groups * per_group, len(got)))
    check(all(s == list(range(per_group)) for s in seqs.values()) and len(seqs) == groups,
          "each message group in the order sent (%s)" % {g: s for g, s in seqs.items() if s != list(range(per_group))})


class OrderListener(MessageListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.seqs = {}

    def consume(self, message):
        with self.lock:
            self.seqs.setdefault(message.message_group, []).append(int(message.body))
        return ConsumeResult.SUCCESS


def fifo_push(topic, group, groups=3, per_group=20):
    log("fifo push consumer: %d message groups of %d, consumed in order by a FIFO group's push consumer" % (groups, per_group))
    p = Producer(config(), (topic,))
    p.startup()
    send_groups(p, topic, "push-order", groups, per_group)
    p.shutdown()
    listener = OrderListener()
    c = PushConsumer(config(), group, listener, {topic: FilterExpression()})
    c.startup()
    deadline = time.time() + 40
    while time.time() < deadline and sum(len(v) for v in listener.seqs.values()) < groups * per_group:
        time.sleep(0.2)
    c.shutdown()
    check(sum(len(v) for v in listener.seqs.values()) == groups * per_group, "all %d consumed" % (groups * per_group))
    check(all(v == list(range(per_group)) for v in listener.seqs.values()) and len(listener.seqs) == groups,
          "each message group consumed once, in the order sent")


def delay(topic, group, seconds=4):
    log("delay: a message due in %d s is not delivered early" % seconds)
    p = Producer(config(), (topic,))
    p.startup()
    due = int(time.time()) + seconds
    m = message(topic, "later")
    m.delivery_timestamp = due
    r = p.send(m)
    p.shutdown()
    c = SimpleConsumer(config(), group, {topic: FilterExpression()}, await_duration=5)
    c.startup()
    arrived = {}
    got = drain(c, 1, seconds + 20, on_message=lambda m: arrived.setdefault(m.message_id, time.time()))
    c.shutdown()
    check(len(got) == 1 and got[0].message_id == r.message_id, "the delayed message is delivered")
    if len(got) != 1:
        diagnose(topic, group, r.message_id)
    if got:
        check(arrived[r.message_id] >= due - 0.05, "not before its time (%.2f s after it)" % (arrived[r.message_id] - due))


class RecordChecker(TransactionChecker):
    """Answers checks from a record file the sending process wrote: COMMIT, ROLLBACK or nothing."""

    def __init__(self, path):
        self.path = path
        self.asked = []

    def check(self, message):
        self.asked.append(message.message_id)
        with open(self.path) as f:
            records = json.load(f)
        answer = records.get(message.message_id)
        return TransactionResolution.COMMIT if answer == "commit" else TransactionResolution.ROLLBACK


HALF_SENDER = r"""
import json, os, sys
from rocketmq import *
class Never(TransactionChecker):
    def check(self, message):
        raise RuntimeError("this producer dies before checks")
grpc, topic, path = sys.argv[1:4]
p = Producer(ClientConfiguration(grpc, Credentials(), request_timeout=5), (topic,), checker=Never())
p.startup()
records = {}
for outcome in ("commit", "rollback"):
    tx = p.begin_transaction()
    m = Message(); m.topic = topic; m.body = outcome.encode()
    r = p.send(m, tx)
    records[r.message_id] = outcome
with open(path, "w") as f:
    json.dump(records, f)
os._exit(0)   # gone without ending either transaction, as a crashed producer
"""


def transaction(topic, group):
    log("transaction: half messages left by a producer that died; a restarted producer answers the check-back")
    record = tempfile.mktemp(prefix="tern-interop-tx-")
    out = subprocess.run([sys.executable, "-c", HALF_SENDER, args.grpc, topic, record], capture_output=True, text=True,
                         timeout=60)
    check(out.returncode == 0, "the first producer sent two half messages and exited (%s)" % out.stderr[-300:])
    with open(record) as f:
        records = json.load(f)
    committed = [i for i, o in records.items() if o == "commit"]
    checker = RecordChecker(record)
    p = Producer(config(), (topic,), checker=checker)
    p.startup()
    c = SimpleConsumer(config(), group, {topic: FilterExpression()}, await_duration=5)
    c.startup()
    got = drain(c, 1, 40)
    time.sleep(3)
    got += drain(c, 1, 3)
    c.shutdown()
    p.shutdown()
    os.unlink(record)
    check(set(checker.asked) >= set(records), "the new producer was asked about both half messages")
    check([m.message_id for m in got] == committed, "only the committed one is delivered, once")


def invisible(topic, group):
    log("invisible duration: not redelivered while invisible; a change to 2 s brings it back as attempt 2")
    p = Producer(config(), (topic,))
    p.startup()
    r = p.send(message(topic, "once more"))
    p.shutdown()
    c = SimpleConsumer(config(), group, {topic: FilterExpression()}, await_duration=2)
    c.startup()
    first = drain(c, 1, 20, invisible=20, ack=False)
    check(len(first) == 1 and first[0].message_id == r.message_id, "received, not acknowledged")
    again = drain(c, 1, 3, invisible=20, ack=False)
    check(again == [], "not received again while invisible")
    changed_at = time.time()
    c.change_invisible_duration(first[0], 2)
    back = drain(c, 1, 20, invisible=20)
    c.shutdown()
    check(len(back) == 1 and back[0].message_id == r.message_id and back[0].delivery_attempt == 2,
          "back after the change, as attempt 2")
    if back:
        check(time.time() - changed_at >= 1.9, "not before the changed time")


def traced(topic, group):
    log("trace: a delayed message received, redelivered after a changed invisible time, then acknowledged; "
        "tern admin message trace shows every step")
    tern("admin", "topic", "trace", topic, "on")
    p = Producer(config(), (topic,))
    p.startup()
    m = message(topic, "traced", keys="trace-me")
    m.delivery_timestamp = int(time.time()) + 2
    r = p.send(m)
    p.shutdown()
    c = SimpleConsumer(config(), group, {topic: FilterExpression()}, await_duration=5)
    c.startup()
    first = drain(c, 1, 20, invisible=20, ack=False)
    if first:
        c.change_invisible_duration(first[0], 1)
    back = drain(c, 1, 20, invisible=20)
    c.shutdown()
    check(len(first) == 1 and len(back) == 1 and back[0].delivery_attempt == 2, "received, changed, received again as attempt 2, acknowledged")
    # By the client's message id (indexed like a key) and by the key.
    for ref in (r.message_id, "trace-me"):
        traces = json.loads(tern("admin", "message", "trace", ref, "--topic", topic, "--json"))
        steps = [s["step"] for s in traces[0]["steps"]] if len(traces) == 1 else []
        check(steps == ["delayed", "released", "received", "invisible changed", "received", "acknowledged"],
              "the trace by %s shows every step: %s" % ("client id" if ref != "trace-me" else "key", steps))
        if len(traces) == 1:
            t = traces[0]
            attempts = [s.get("attempt") for s in t["steps"] if s["step"] == "received"]
            check(attempts == [1, 2] and t["leader"] != "" and t["term"] > 0 and all(s["group"] == group for s in t["steps"][2:]),
                  "receives numbered 1 and 2, by group %s; stored by %s in term %d" % (group, t["leader"], t["term"]))
            times = [s["at"] for s in t["steps"]]
            check(times == sorted(times), "the steps' times ascend")


class Listener(MessageListener):
    def __init__(self, fail_once):
        self.fail_once = fail_once
        self.lock = threading.Lock()
        self.seen = {}

    def consume(self, message):
        with self.lock:
            self.seen.setdefault(message.message_id, []).append(message.delivery_attempt)
            if message.message_id in self.fail_once and len(self.seen[message.message_id]) == 1:
                return ConsumeResult.FAILURE
        return ConsumeResult.SUCCESS


def push(topic, group, count=20):
    log("push consumer: %d messages, one failed once and redelivered" % count)
    p = Producer(config(), (topic,))
    p.startup()
    ids = [p.send(message(topic, "push %d" % i)).message_id for i in range(count)]
    p.shutdown()
    listener = Listener({ids[3]})
    c = PushConsumer(config(), group, listener, {topic: FilterExpression()})
    c.startup()
    deadline = time.time() + 40
    while time.time() < deadline and (len(listener.seen) < count or len(listener.seen.get(ids[3], [])) < 2):
        time.sleep(0.2)
    c.shutdown()
    check(set(listener.seen) == set(ids), "every message consumed")
    check(listener.seen.get(ids[3], [])[:2] == [1, 2], "the failed one again, as attempt 2")


def broker_groups():
    log("console across groups: g1's node lists every broker group the name servers know")
    with urllib.request.urlopen("http://127.0.0.1:%d/api/broker-groups" % args.http_base_port, timeout=10) as r:
        b = json.loads(r.read())
    groups = {g["group"]: g for g in b["groups"]}
    check(b["nameservers"] == args.nameservers.split(","), "the node's name servers: %s" % b["nameservers"])
    check(sorted(groups) == ["g%d" % (k + 1) for k in range(args.groups)], "every broker group listed: %s" % sorted(groups))
    check(all(len(g["members"]) == 3 and g["leader"] in {m["id"] for m in g["members"]} and g["term"] > 0 for g in groups.values()),
          "each with its three members and a leader among them")


def across_kill(topic, group, count=300):
    log("leader SIGKILL while producing and consuming: nothing acknowledged is lost")
    p = Producer(config(), (topic,))
    p.startup()
    acked, errors = [], []
    # The leader is made n1, the node whose gRPC front the clients were configured with: its death
    # takes the clients' first address away too, and they go on through the route's others.
    if leader() != "n1":
        tern("admin", "transfer-leader", "--to", "n1", *(["--broker-group", "g1"] if args.groups > 1 else []))
        time.sleep(1)
    victim = leader()
    killed = []

    def produce():
        for i in range(count):
            if i == count // 3:
                subprocess.run(["pkill", "-9", "-f", "serve --id %s --listen 127.0.0.1:%d " % (victim, args.base_port + int(victim[1:]) - 1)])
                killed.append(time.time())
            try:
                acked.append(p.send(message(topic, "k%d" % i)).message_id)
            except Exception as e:  # noqa: BLE001  (a send may fail during the election; it is not acknowledged)
                errors.append(str(e)[:200])

    # A push consumer of a second group reads the same topic through the kill.
    pushed = Listener(set())
    pc = PushConsumer(config(), group + "-push", pushed, {topic: FilterExpression()})
    pc.startup()
    try:
        across_kill_run(topic, group, p, pc, pushed, acked, errors, produce, killed, victim, count)
    finally:
        pc.shutdown()


def across_kill_run(topic, group, p, pc, pushed, acked, errors, produce, killed, victim, count):
    t = threading.Thread(target=produce)
    t.start()
    consumed = set()
    c = SimpleConsumer(config(), group, {topic: FilterExpression()}, await_duration=3)
    c.startup()
    deadline = time.time() + 90
    while time.time() < deadline and (t.is_alive() or not set(acked) <= consumed):
        try:
            for m in c.receive(32, 15):
                consumed.add(m.message_id)
                try:
                    c.ack(m)
                except Exception:  # noqa: BLE001  (redelivered later if the ack was lost)
                    pass
        except Exception as e:  # noqa: BLE001
            log("  receive failed (retried): %s" % str(e)[:160])
            time.sleep(0.5)
    t.join()
    c.shutdown()
    p.shutdown()
    deadline = time.time() + 60
    while time.time() < deadline and not set(acked) <= set(pushed.seen):
        time.sleep(0.2)
    log("  killed %s; %d of %d sends acknowledged, %d failed during the election" % (victim, len(acked), count, len(errors)))
    check(set(acked) <= set(pushed.seen), "every acknowledged message pushed to the push consumer too (missing: %d)" % len(set(acked) - set(pushed.seen)))
    check(bool(killed), "the leader was killed mid-run")
    check(len(acked) >= count * 0.9, "sends went on through the new leader")
    lost = set(acked) - consumed
    check(not lost, "every acknowledged message consumed (lost: %d)" % len(lost))


SECURED_CLIENT = r"""
import json, sys
from rocketmq import *
grpc, ak, sk, topic = sys.argv[1:5]
cfg = ClientConfiguration(grpc, Credentials(ak, sk), request_timeout=5)
out = {"sent": None, "got": [], "send_error": None, "receive_error": None}
p = Producer(cfg, (topic,), tls_enable=True)
p.startup()
try:
    m = Message(); m.topic = topic; m.body = b"over tls"
    out["sent"] = p.send(m).message_id
except Exception as e:
    out["send_error"] = str(e)[:300]
p.shutdown()
c = SimpleConsumer(cfg, "g-secured", {topic: FilterExpression()}, await_duration=3, tls_enable=True)
c.startup()
try:
    for _ in range(5):
        for msg in c.receive(8, 15):
            out["got"].append(msg.message_id); c.ack(msg)
        if out["got"]:
            break
except Exception as e:
    out["receive_error"] = str(e)[:300]
c.shutdown()
print("RESULT " + json.dumps(out))
"""


RAW_ROUTE = r"""
import datetime, hashlib, hmac, sys
import grpc
from rocketmq.grpc_protocol import definition_pb2, service_pb2, service_pb2_grpc
grpc_addr, ca, ak, sk, topic = sys.argv[1:6]
channel = grpc.secure_channel(grpc_addr, grpc.ssl_channel_credentials(open(ca, "rb").read()))
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
signature = hmac.new(sk.encode(), date.encode(), hashlib.sha1).hexdigest()
metadata = [("authorization", "MQv2-HMAC-SHA1 Credential=%s, SignedHeaders=x-mq-date-time, Signature=%s" % (ak, signature)),
            ("x-mq-date-time", date)]
response = service_pb2_grpc.MessagingServiceStub(channel).QueryRoute(
    service_pb2.QueryRouteRequest(topic=definition_pb2.Resource(name=topic)), metadata=metadata, timeout=10)
print("CODE %d" % response.status.code)
"""


def secured(base_port, grpc_base_port, nameserver_base_port):
    log("TLS and access control: a second cluster with --tls-cert and --acl; signed clients over TLS")
    work = tempfile.mkdtemp(prefix="tern-interop-tls-")
    def openssl(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True)
    with open(work + "/ext.cnf", "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", work + "/ca.key", "-out", work + "/ca.pem", "-days", "30", "-subj", "/CN=tern interop ca")
    openssl("req", *ec, "-keyout", work + "/node.key", "-out", work + "/node.csr", "-subj", "/CN=tern node")
    openssl("x509", "-req", "-in", work + "/node.csr", "-CA", work + "/ca.pem", "-CAkey", work + "/ca.key", "-CAcreateserial",
            "-out", work + "/node.pem", "-days", "30", "-extfile", work + "/ext.cnf")
    data = work + "/data"
    endpoints = ",".join("127.0.0.1:%d" % (base_port + k) for k in range(3))
    nameservers = ",".join("127.0.0.1:%d" % (nameserver_base_port + k) for k in range(2))
    groups = ["--groups", str(args.groups), "--nameserver-base-port", str(nameserver_base_port)] if args.groups > 1 else []
    # No HTTP listeners: this cluster runs beside the main one (its default ports would clash).
    up = subprocess.Popen([args.tern, "cluster", "up", "--data", data, "--base-port", str(base_port), "--grpc-base-port", str(grpc_base_port),
                           "--http-base-port", "0", "--tls-cert", work + "/node.pem", "--tls-key", work + "/node.key", "--tls-ca", work + "/ca.pem", "--acl",
                           *groups],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in up.stdout:
            if "Ctrl-C stops" in line:
                break
        threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()
        reach = ["--nameservers", nameservers] if args.groups > 1 else ["--endpoints", endpoints]
        admin = [*reach, "--tls-ca", work + "/ca.pem", "--credentials", data + "/admin.credentials"]
        def tern_admin(*argv):
            out = subprocess.run([args.tern, *argv, *admin], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError("tern %s: %s %s" % (" ".join(argv), out.stdout, out.stderr))
            return out.stdout
        tern_admin("admin", "topic", "create", "secure", "--queues", "2")
        tern_admin("admin", "topic", "create", "closed", "--queues", "2")
        with open(work + "/app.credentials", "w") as f:
            f.write("access-key = app\nsecret-key = app-secret-0123456789\n")
        os.chmod(work + "/app.credentials", 0o600)
        tern_admin("admin", "acl", "put", "app", "--secret-from", work + "/app.credentials", "--topic", "secure=pub|sub", "--default-group", "sub")
        listed = tern_admin("admin", "acl", "list")
        check(re.search(r"^app ", listed, re.M) is not None and "missing" not in listed, "the account is listed (on every group): %r" % listed[-300:])
        env = dict(os.environ, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=work + "/ca.pem")
        def client(ak, sk, topic):
            out = subprocess.run([sys.executable, "-c", SECURED_CLIENT, "127.0.0.1:%d" % grpc_base_port, ak, sk, topic], capture_output=True,
                                 text=True, timeout=120, env=env)
            for line in out.stdout.splitlines():
                if line.startswith("RESULT "):
                    return json.loads(line[7:])
            raise RuntimeError("secured client printed no result: %s" % out.stderr[-500:])
        ok = client("app", "app-secret-0123456789", "secure")
        check(ok["sent"] is not None and ok["got"] == [ok["sent"]], "a signed client sends and receives over TLS (%s)" % ok)
        denied = client("app", "app-secret-0123456789", "closed")
        check(denied["sent"] is None and "40300" in (denied["send_error"] or ""), "a topic the account has no right on: FORBIDDEN (%s)" % denied["send_error"])
        wrong = client("app", "not-the-secret-0123456789", "secure")
        check(wrong["sent"] is None and not wrong["got"], "a wrong secret sends and receives nothing (%s)" % wrong["send_error"])
        def raw(ak, sk):
            out = subprocess.run([sys.executable, "-c", RAW_ROUTE, "127.0.0.1:%d" % grpc_base_port, work + "/ca.pem", ak, sk, "secure"],
                                 capture_output=True, text=True, timeout=60)
            return out.stdout.strip() or out.stderr[-300:]
        check(raw("app", "app-secret-0123456789") == "CODE 20000", "a signed route query: OK")
        check(raw("app", "not-the-secret-0123456789") == "CODE 40100", "a wrong secret: UNAUTHORIZED")
        check(raw("nobody", "not-the-secret-0123456789") == "CODE 40100", "an unknown account: UNAUTHORIZED")
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
    if not failures:
        subprocess.run(["rm", "-rf", work])


def main():
    global args
    ap = argparse.ArgumentParser()
    ap.add_argument("--tern", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--base-port", type=int, default=9411)
    ap.add_argument("--grpc-base-port", type=int, default=8411)
    ap.add_argument("--only", help="run the scenarios whose names contain this")
    ap.add_argument("--groups", type=int, default=1, help="broker groups behind name servers (tern cluster up --groups)")
    ap.add_argument("--nameserver-base-port", type=int, default=9590)
    ap.add_argument("--http-base-port", type=int, default=8611, help="with --groups: the nodes' HTTP listeners (the console across groups)")
    args = ap.parse_args()
    args.endpoints = ",".join("127.0.0.1:%d" % (args.base_port + k) for k in range(3))
    args.nameservers = ",".join("127.0.0.1:%d" % (args.nameserver_base_port + k) for k in range(2))
    args.grpc = "127.0.0.1:%d" % args.grpc_base_port
    subprocess.run(["rm", "-rf", args.data])
    up = subprocess.Popen([args.tern, "cluster", "up", "--data", args.data, "--base-port", str(args.base_port),
                           "--grpc-base-port", str(args.grpc_base_port), "--http-base-port", str(args.http_base_port if args.groups > 1 else 0),
                           *(["--groups", str(args.groups), "--nameserver-base-port", str(args.nameserver_base_port)] if args.groups > 1 else []),
                           "--node-arg=--transaction-check-first-ms=1000", "--node-arg=--transaction-check-interval-ms=2000"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in up.stdout:
            print("cluster: " + line.rstrip(), flush=True)
            if "Ctrl-C stops" in line:
                break
        threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()
        for t, kind in (("normal", "normal"), ("tags", "normal"), ("fifo", "fifo"), ("fifo-push", "fifo"), ("delay", "delay"), ("txn", "transaction"),
                        ("invisible", "normal"), ("push", "mixed"), ("kill", "normal"), ("traced", "mixed")):
            tern("admin", "topic", "create", t, "--queues", "4", "--type", kind)
        tern("admin", "group", "create", "g-fifo", "--fifo")
        tern("admin", "group", "create", "g-fifo-push", "--fifo")
        scenarios = [
            ("normal", lambda: normal("normal", "g-normal")),
            ("tags", lambda: tag_filter("tags", "g-tags")),
            ("fifo", lambda: fifo("fifo", "g-fifo")),
            ("fifo-push", lambda: fifo_push("fifo-push", "g-fifo-push")),
            ("delay", lambda: delay("delay", "g-delay")),
            ("transaction", lambda: transaction("txn", "g-txn")),
            ("invisible", lambda: invisible("invisible", "g-invisible")),
            ("trace", lambda: traced("traced", "g-traced")),
            ("push", lambda: push("push", "g-push")),
            ("console", broker_groups),
            ("kill", lambda: across_kill("kill", "g-kill")),
            # Beside the main cluster: with groups, past its second group's ports.
            ("secured", lambda: secured(args.base_port + 10 * args.groups, args.grpc_base_port + 10 * args.groups,
                                        args.nameserver_base_port + 10)),
        ]
        for name, s in scenarios:
            if args.only and args.only not in name:
                continue
            if name == "console" and args.groups == 1:
                continue  # the single-group console is checked by scripts/ops-check.sh
            try:
                s()
            except Exception as e:  # noqa: BLE001
                check(False, "scenario raised %r" % e)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
    if not failures:
        subprocess.run(["rm", "-rf", args.data])  # kept for a look when something failed
    if failures:
        log("%d check(s) failed:" % len(failures))
        for f in failures:
            log("  " + f)
        sys.exit(1)
    log("all scenarios passed")


if __name__ == "__main__":
    main()
