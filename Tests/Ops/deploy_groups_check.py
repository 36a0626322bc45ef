"""The many-groups manifest, checked (docs/operations.md, "Kubernetes: many groups"; run by
scripts/deploy-check.sh after deploy_check.py).

1. deploy/kubernetes/tern-groups.yaml is what deploy/kubernetes/render-groups.py 2 prints, passes
   kubernetes-validate --strict, and has the shape: name servers as a Deployment behind a
   headless service, and per group a headless service, a budget and a StatefulSet of 3 that
   names its broker group and the name servers' service.
2. The same processes with the same arguments: network namespaces stand for the two name server
   pods and the six group pods, each hosts file giving the pods' names and the name servers'
   service name with both name servers' addresses (what a headless service's DNS answers). Every
   group must register with both name servers; a client in one namespace, given only the
   service name, creates a topic over both groups, sends, consumes everything back, and sees
   both groups in the cluster status.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploy_check import NAMESPACE, ROOT, expand, fail, make_secrets, moved, run  # noqa: E402

MANIFEST = os.path.join(ROOT, "deploy/kubernetes/tern-groups.yaml")
RENDER = os.path.join(ROOT, "deploy/kubernetes/render-groups.py")
SUBNET = "10.213.78"
NS_SERVICE = f"tern-nameserver.{NAMESPACE}.svc.cluster.local"


def check_static(venv_bin):
    rendered = subprocess.run([sys.executable, RENDER, "2"], capture_output=True, text=True, check=True).stdout
    if rendered != open(MANIFEST).read():
        fail("deploy/kubernetes/tern-groups.yaml is not what render-groups.py 2 prints: run it again")
    out = subprocess.run([os.path.join(venv_bin, "kubernetes-validate"), "--strict", MANIFEST], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubernetes-validate refused {MANIFEST}:\n{out.stdout}{out.stderr}")
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    deployment = next((d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "tern-nameserver"), None)
    service = next((d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "tern-nameserver"), None)
    if deployment is None or service is None or service["spec"].get("clusterIP") != "None":
        fail(f"name servers must be a Deployment behind a headless service tern-nameserver (found {kinds})")
    if deployment["spec"]["replicas"] < 2:
        fail("run at least two name servers")
    # Name servers hold the registration key only: one taken over must not get the cluster secret.
    mounted = [i["key"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v for i in v["secret"].get("items", [])]
    ns_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    if mounted != ["registration-key"] or not any(a.startswith("--registration-key=") for a in ns_args) or any("peer-secret" in a for a in ns_args):
        fail(f"name servers must get the registration key and not the peer secret (mounted {mounted}, args {ns_args})")
    groups = {}
    for d in docs:
        if d["kind"] != "StatefulSet":
            continue
        spec = d["spec"]
        container = next(c for c in spec["template"]["spec"]["containers"] if c["name"] == "tern")
        args = container["args"]
        group = next((a.split("=", 1)[1] for a in args if a.startswith("--broker-group=")), None)
        if group is None or f"--nameservers={NS_SERVICE.replace(NAMESPACE, '$(POD_NAMESPACE)')}:9876" not in args:
            fail(f"StatefulSet {d['metadata']['name']} must name its broker group and the name servers' service")
        if spec["replicas"] != 3 or not spec.get("volumeClaimTemplates") or spec["serviceName"] != d["metadata"]["name"]:
            fail(f"StatefulSet {d['metadata']['name']} must run 3 members with volumes through its own headless service")
        if ("Service", spec["serviceName"]) not in kinds or ("PodDisruptionBudget", d["metadata"]["name"]) not in kinds:
            fail(f"group {group} needs its headless service and disruption budget")
        groups[group] = d
    if sorted(groups) != ["g1", "g2"]:
        fail(f"expected groups g1 and g2, found {sorted(groups)}")
    print("deploy-check: groups manifest up to date, valid, and shaped (name server Deployment behind a headless service; a StatefulSet of 3 per group)")
    return deployment, groups


class Pods:
    """Network namespaces on one bridge; every hosts file holds `hosts`."""

    def __init__(self, names, hosts):
        self.names, self.hosts, self.made, self.bridge = names, hosts, [], "ternbr78"

    def __enter__(self):
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "link", "set", self.bridge, "up"])
        for i, name in enumerate(self.names):
            ns = f"tdg-{name}"
            run(["ip", "netns", "add", ns])
            self.made.append(ns)
            run(["ip", "link", "add", f"vtdg{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
            run(["ip", "link", "set", f"vtdg{i}", "master", self.bridge, "up"])
            run(["ip", "-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(self.hosts)
        return self

    def __exit__(self, *exc):
        # The veths go explicitly: a namespace's end may outlive `ip netns del` for a while.
        for i in range(len(self.made)):
            subprocess.run(["ip", "link", "del", f"vtdg{i}"], capture_output=True)
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def prefix(self, name):
        return ["ip", "netns", "exec", f"tdg-{name}"]


def main():
    tern, venv_bin = sys.argv[1], sys.argv[2]
    deployment, groups = check_static(venv_bin)
    if os.geteuid() != 0:
        fail("the process half needs root (network namespaces); CI runs as root")
    ns_names = [f"tern-nameserver-{i}" for i in range(deployment["spec"]["replicas"])]
    pods = {g: [f"tern-{g}-{i}" for i in range(3)] for g in sorted(groups)}
    names = ns_names + [p for g in sorted(pods) for p in pods[g]]
    ip = {n: f"{SUBNET}.{i + 1}" for i, n in enumerate(names)}
    hosts = "127.0.0.1 localhost\n" + "".join(f"{ip[n]} {NS_SERVICE}\n" for n in ns_names)
    hosts += "".join(f"{ip[p]} {p}.tern-{g}.{NAMESPACE}.svc.cluster.local\n" for g in pods for p in pods[g])
    work = tempfile.mkdtemp(prefix="tern-deploy-groups-")
    procs = []
    try:
        make_secrets(work + "/etc/tern/secret-source", work + "/etc/tern/tls", [f"*.tern-{g}.{NAMESPACE}.svc.cluster.local" for g in pods])
        source = work + "/etc/tern/secret-source"
        os.chmod(source + "/peer-secret", 0o600)
        run([tern, "nameserver", "key", "--peer-secret", source + "/peer-secret", "--out", source + "/registration-key"])
        os.makedirs(work + "/etc/tern/secrets")
        init = next(c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == "secrets")
        run([moved(a, work) for a in init["command"]])
        ns_container = deployment["spec"]["template"]["spec"]["containers"][0]
        with Pods(names, hosts) as netns:
            def start(name, container):
                data = work + f"/var/lib/tern-{name}"
                os.makedirs(data)
                args = [moved(expand(a, name), work).replace(work + "/var/lib/tern", data) for a in container["args"]]
                log = open(work + f"/{name}.log", "w")
                procs.append((name, subprocess.Popen(netns.prefix(name) + [tern] + args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
                return args
            for n in ns_names:
                start(n, ns_container)
            for g, sts in groups.items():
                container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "tern")
                for p in pods[g]:
                    example = start(p, container)
            print("deploy-check: started 2 name servers and 6 group members with the manifest's arguments, e.g.:\n  " + " ".join(example))
            ca = work + "/etc/tern/tls/ca.crt"
            auth = ["--nameservers", f"{NS_SERVICE}:9876", "--tls-ca", ca, "--credentials", work + "/etc/tern/secrets/admin.credentials"]
            client = netns.prefix(pods["g1"][0]) + [tern]
            deadline = time.time() + 60
            status = ""
            while time.time() < deadline:
                for name, p, _ in procs:
                    if p.poll() is not None:
                        fail(f"{name} exited with {p.returncode}; its log:\n" + open(work + f"/{name}.log").read()[-3000:])
                # Both name servers must know both groups: each group's leader registered at every address.
                lists = [subprocess.run(netns.prefix(n) + [tern, "admin", "cluster", "status"] + auth[:1] + [f"{ip[n]}:9876"] + auth[2:],
                                        capture_output=True, text=True) for n in ns_names]
                status = "\n".join(r.stdout + r.stderr for r in lists)
                if all(r.returncode == 0 and r.stdout.count(" leader ") == 2 and "g1 " in r.stdout and "g2 " in r.stdout for r in lists):
                    break
                time.sleep(1)
            else:
                fail(f"not every group registered with both name servers within 60 s:\n{status}")
            print("deploy-check: both groups registered with both name servers (through the service name's two addresses)")
            out = run(client + ["admin", "topic", "create", "deploy-groups", "--queues", "4"] + auth).stdout
            if "g1:2 g2:2" not in out:
                fail(f"the topic was not spread over both groups: {out}")
            out = run(client + ["send", "--topic", "deploy-groups", "--count", "8"] + auth).stdout
            if sorted({line.split("/")[0] for line in out.split()}) != ["g1", "g2"]:
                fail(f"sends did not reach both groups: {out}")
            r = run(client + ["consume", "--topic", "deploy-groups", "--group", "dg", "--count", "8"] + auth)
            if "consumed 8 messages" not in r.stdout + r.stderr:
                fail(f"the client did not read back its 8 messages:\n{r.stdout}{r.stderr}")
            print("deploy-check: passed: a topic over g1 and g2 through the name servers' service name, 8 messages sent to both and read back over TLS as admin")
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
