"""The deployment files, checked (docs/operations.md, "Kubernetes"; run by scripts/deploy-check.sh).

1. deploy/kubernetes/tern.yaml against the Kubernetes API schemas (kubernetes-validate --strict),
   and for what a three-member group needs: a headless service that publishes not-ready
   addresses, a StatefulSet of 3 with a volume per member, anti-affinity, a disruption budget
   that allows one member down, readiness from the node's /ready.
2. The same processes the manifest starts, with the same arguments: three network namespaces
   with their own addresses stand for the pods, each with the pod's DNS names in its hosts
   file; the init container's command copies generated secrets (mount paths are moved under a
   temporary folder: the one change made to the arguments); then `tern serve` with the
   container's arguments, $(POD_NAME) and $(POD_NAMESPACE) expanded as the kubelet does. The
   readiness probe's URL must answer 200 on every member, and a client in one namespace sends
   and reads a message through the stable names over TLS with the admin account.
"""
import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = os.path.join(ROOT, "deploy/kubernetes/tern.yaml")
NAMESPACE = "default"
SUBNET = "10.213.77"


def fail(message):
    print(f"deploy-check: FAIL: {message}")
    sys.exit(1)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def check_schema(venv_bin):
    out = subprocess.run([os.path.join(venv_bin, "kubernetes-validate"), "--strict", MANIFEST], capture_output=True, text=True)
    print(out.stdout.strip())
    if out.returncode != 0:
        fail(f"kubernetes-validate refused {MANIFEST}:\n{out.stdout}{out.stderr}")


def check_shape(docs):
    by_kind = {d["kind"]: d for d in docs}
    for kind in ("Service", "StatefulSet", "PodDisruptionBudget"):
        if kind not in by_kind:
            fail(f"the manifest has no {kind}")
    svc, sts, pdb = by_kind["Service"], by_kind["StatefulSet"], by_kind["PodDisruptionBudget"]
    if svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        fail("the service must be headless and publish not-ready addresses (members find each other before any is ready)")
    spec = sts["spec"]
    if spec["replicas"] != 3 or spec["serviceName"] != svc["metadata"]["name"]:
        fail("the StatefulSet must run 3 members named through the headless service")
    if not spec.get("volumeClaimTemplates"):
        fail("each member needs its own persistent volume")
    pod = spec["template"]["spec"]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
    if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in anti):
        fail("members must be kept on different nodes (required anti-affinity on kubernetes.io/hostname)")
    if pdb["spec"].get("maxUnavailable") != 1:
        fail("the disruption budget must allow exactly one member down (two of three keep the quorum)")
    container = next(c for c in pod["containers"] if c["name"] == "tern")
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    if probe.get("path") != "/ready":
        fail("readiness must come from the node's /ready")
    print("deploy-check: manifest shape ok (headless service, 3 members with volumes, anti-affinity, PDB maxUnavailable 1, readiness /ready)")
    return sts, container, probe


def expand(arg, pod_name):
    return arg.replace("$(POD_NAME)", pod_name).replace("$(POD_NAMESPACE)", NAMESPACE)


def moved(arg, root):
    for prefix in ("/etc/tern", "/var/lib/tern"):
        arg = arg.replace(prefix, root + prefix)
    return arg


def make_secrets(source, tls_dir, names):
    os.makedirs(source)
    os.makedirs(tls_dir)
    with open(os.path.join(source, "peer-secret"), "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    secret = os.urandom(16).hex()
    with open(os.path.join(source, "admin.credentials"), "w") as f:
        f.write(f"access-key = admin\nsecret-key = {secret}\n")
    ca_key, ca_crt = os.path.join(tls_dir, "ca.key"), os.path.join(tls_dir, "ca.crt")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key, "-out", ca_crt,
         "-days", "2", "-subj", "/CN=tern test CA"])
    key, csr, crt = os.path.join(source, "tls.key"), os.path.join(tls_dir, "tls.csr"), os.path.join(tls_dir, "tls.crt")
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=tern"])
    ext = os.path.join(tls_dir, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + f",DNS:*.tern.{NAMESPACE}.svc.cluster.local\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext])
    os.remove(ca_key)
    return secret


class Pods:
    """Three network namespaces on one bridge, each with the pods' names in its hosts file."""

    def __init__(self, names):
        self.names = names
        self.made = []
        self.bridge = "ternbr77"

    def __enter__(self):
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "link", "set", self.bridge, "up"])
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{SUBNET}.{i + 1} {n}.tern.{NAMESPACE}.svc.cluster.local {n}.tern\n" for i, n in enumerate(self.names))
        for i, name in enumerate(self.names):
            ns = f"tdc-{name}"
            run(["ip", "netns", "add", ns])
            self.made.append(ns)
            run(["ip", "link", "add", f"vtdc{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
            run(["ip", "link", "set", f"vtdc{i}", "master", self.bridge, "up"])
            run(["ip", "-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(hosts)
        return self

    def __exit__(self, *exc):
        # The veths go explicitly: a namespace's end may outlive `ip netns del` for a while.
        for i in range(len(self.made)):
            subprocess.run(["ip", "link", "del", f"vtdc{i}"], capture_output=True)
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def prefix(self, name):
        return ["ip", "netns", "exec", f"tdc-{name}"]


PROBE = r"""
import base64, ssl, sys, urllib.request
url, ca, auth = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
req = urllib.request.Request(url)
if auth:
    req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
try:
    with urllib.request.urlopen(req, context=ctx, timeout=3) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write("HTTP %d %s" % (e.code, e.read().decode())); sys.exit(2)
"""


def main():
    tern, venv_bin = sys.argv[1], sys.argv[2]
    check_schema(venv_bin)
    with open(MANIFEST) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    sts, container, probe = check_shape(docs)
    names = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
    init = next(c for c in sts["spec"]["template"]["spec"]["initContainers"] if c["name"] == "secrets")
    if os.geteuid() != 0:
        fail("the process half needs root (network namespaces); CI runs as root")
    work = tempfile.mkdtemp(prefix="tern-deploy-check-")
    procs = []
    try:
        source = work + "/etc/tern/secret-source"
        secret = make_secrets(source, work + "/etc/tern/tls", [f"{n}.tern.{NAMESPACE}.svc.cluster.local" for n in names])
        os.makedirs(work + "/etc/tern/secrets")
        # The init container's command, paths moved.
        run([moved(a, work) for a in init["command"]])
        for f in os.listdir(work + "/etc/tern/secrets"):
            mode = os.stat(os.path.join(work + "/etc/tern/secrets", f)).st_mode & 0o777
            if mode != 0o600:
                fail(f"the init container left {f} with mode {oct(mode)}")
        with Pods(names) as pods:
            for name in names:
                data = work + f"/var/lib/tern-{name}"
                os.makedirs(data)
                args = [moved(expand(a, name), work).replace(work + "/var/lib/tern", data) for a in container["args"]]
                cmd = pods.prefix(name) + [tern if container["command"][0] == "tern" else container["command"][0]] + args
                log = open(work + f"/{name}.log", "w")
                procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
            print("deploy-check: started " + " ".join(names) + " with the StatefulSet's arguments, e.g.:\n  " + " ".join(args))
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
            scheme = probe.get("scheme", "HTTP").lower()
            ca = work + "/etc/tern/tls/ca.crt"
            deadline = time.time() + 60
            ready = set()
            while time.time() < deadline and len(ready) < len(names):
                for name, p, _ in procs:
                    if p.poll() is not None:
                        fail(f"{name} exited with {p.returncode}; its log:\n" + open(work + f"/{name}.log").read()[-3000:])
                    url = f"{scheme}://{name}.tern.{NAMESPACE}.svc.cluster.local:{port}{probe['path']}"
                    r = subprocess.run(pods.prefix(name) + [sys.executable, "-c", PROBE, url, ca, ""], capture_output=True, text=True)
                    if r.returncode == 0:
                        ready.add(name)
                time.sleep(0.5)
            if len(ready) < len(names):
                fail(f"only {sorted(ready)} answered their readiness probe within 60 s")
            print(f"deploy-check: every member ready ({probe['path']} over {scheme.upper()})")
            # A client in tern-0's namespace, through the stable names, TLS and the admin account.
            endpoints = ",".join(f"{n}.tern.{NAMESPACE}.svc.cluster.local:9001" for n in names)
            client = pods.prefix(names[0]) + [tern]
            auth = ["--endpoints", endpoints, "--tls-ca", ca, "--credentials", work + "/etc/tern/secrets/admin.credentials"]
            run(client + ["admin", "topic", "create", "deploy-check", "--queues", "2"] + auth)
            run(client + ["send", "--topic", "deploy-check", "--count", "5"] + auth)
            r = run(client + ["consume", "--topic", "deploy-check", "--group", "dc", "--count", "5"] + auth)
            out = r.stdout + r.stderr
            if "consumed 5 messages" not in out:
                fail(f"the client did not read back its 5 messages:\n{out}")
            api = f"https://{names[1]}.tern.{NAMESPACE}.svc.cluster.local:8101/api/cluster"
            r = subprocess.run(pods.prefix(names[1]) + [sys.executable, "-c", PROBE, api, ca, f"admin:{secret}"], capture_output=True, text=True)
            cluster = json.loads(r.stdout)
            roles = sorted(m["role"] for m in cluster["members"])
            if roles != ["follower", "follower", "leader"]:
                fail(f"the admin API shows roles {roles}")
            # Access control holds on every path but the probes: a wrong secret and no credentials
            # are both refused with 401.
            base = f"https://{names[1]}.tern.{NAMESPACE}.svc.cluster.local:8101"
            for path, auth, want in (("/api/cluster", "admin:wrong", 401), ("/api/cluster", "", 401), ("/metrics", "", 401), ("/", "", 401),
                                     ("/api/groups", "", 401), ("/metrics", f"admin:{secret}", 200), ("/health", "", 200)):
                r = subprocess.run(pods.prefix(names[1]) + [sys.executable, "-c", PROBE, base + path, ca, auth], capture_output=True, text=True)
                got = 200 if r.returncode == 0 else int(r.stdout.split()[1]) if r.stdout.startswith("HTTP ") else None
                if got != want:
                    fail(f"GET {path} {'with ' + auth.split(':')[0] + ' credentials' if auth else 'without credentials'} answered {got}, not {want}: {r.stdout[:200]} {r.stderr[-300:]}")
            print("deploy-check: access control holds on the HTTP listener (401 without credentials or with a wrong secret; the probes open)")
            print(f"deploy-check: passed: 5 messages sent and read back through {endpoints} over TLS as admin; the admin API on {names[1]} shows {roles}")
    finally:
        for name, p, log in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for name, p, log in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
            log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
