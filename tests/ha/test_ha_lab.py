"""Issue 13 on the lab: an HA cluster behind the built-in VIP survives losing the control plane that holds it.

One lab cluster for the whole module (3 control planes + 1 worker, `api_endpoint: vip`, Kubernetes 1.20.2 from the
lab bundle); the tests run in file order and each one builds on the previous one:

  1. `kprov up`: smoke passes, etcd has 3 members, the kubeconfig points at the VIP, haproxy has 3 backends;
  2. stop the VIP holder (`Lab.stop`, a clean poweroff): the API answers through the VIP again (failover time
     printed), `kubectl get nodes` works, a new Deployment rolls out;
  3. start it again: it rejoins with no kprov action, and a second `up` reports 0 changed.

Then `kprov remove-node` (issue 13 steps 3-5, tag r):
  4. the worker, with a Deployment and a PodDisruptionBudget on it: pods move to the (untainted) control planes,
     the Node is gone, the host is clean (no kubelet, no CNI links, no kube iptables chains), smoke passes;
  5. one control plane: etcd has 2 members, haproxy has 2 backends UP on the remaining control planes, the API
     answers through the VIP, keepalived/haproxy/kubelet are stopped on it; a second one is refused (2 members);
  6. `add-node` the worker back: it joins through the VIP; smoke passes.
remove-node runs on static copies of the inventory (`static_inventory`): a `provider: lab` one cannot shrink the lab.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.e2e import labkit
from tests.e2e.labkit import events, json_lines, kprov, node_sh, skip_reason, wait_for

LAB = "kpv" + os.environ.get("KPROV_TEST_TAG", "")
CONTROL_PLANES, NODES = 3, 4
VIP_HOST = 250  # the VIP is <lab subnet> + 250: in the nodes' subnet, above every node address

pytestmark = [pytest.mark.e2e, pytest.mark.lab]


@dataclass
class HA:
    path: Path
    vip: str
    port: int
    subnet: str
    node_names: list[str]
    control_planes: list[str]
    worker: str
    kubeconfig: Path
    notes: dict = field(default_factory=dict)  # what one step leaves for the next (e.g. the stopped node)

    def kubectl(self, *args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc

    def sh(self, node: str, script: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        return node_sh(LAB, node, script, timeout=timeout)


def write_inventory(path: Path, subnet: str, vip: str, nodes: int = NODES) -> Path:
    return labkit.write_inventory(
        path, LAB, nodes, CONTROL_PLANES, lab_extra={"subnet": subnet}, api_endpoint="vip", api_vip=vip
    )


def vip_holder(ha: HA) -> str | None:
    for node in ha.control_planes:
        if node in ha.notes.get("stopped", ()):
            continue
        out = ha.sh(node, "ip -o -4 addr show").stdout
        if re.search(rf"\binet {re.escape(ha.vip)}/", out):
            return node
    return None


def haproxy_backends(ha: HA, node: str) -> dict[str, str]:
    """server name -> status (UP/DOWN) from haproxy's admin socket on a control plane."""
    out = ha.sh(node, "echo 'show stat' | socat stdio /run/haproxy/admin.sock").stdout
    rows = [line.split(",") for line in out.splitlines() if line.startswith("kube-apiserver,")]
    return {r[1]: r[17] for r in rows if r[1] not in ("FRONTEND", "BACKEND")}


def etcd_members(ha: HA, via: str | None = None) -> list[str]:
    """Member names from etcd's v3 gateway on a control plane, with kubeadm's apiserver-etcd client cert."""
    via = via or next(n for n in ha.control_planes if n not in ha.notes.get("stopped", ()))
    pki = ha.path.parent / f"pki-{via}"
    pki.mkdir(exist_ok=True)
    for name in ("etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key"):
        out = kprov("lab", "ssh", "--name", LAB, via, "--", "cat", f"/etc/kubernetes/pki/{name}").stdout
        (pki / Path(name).name).write_text(out)
        (pki / Path(name).name).chmod(0o600)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key"))
    address = next(a for n, a in ha.notes["addresses"].items() if n == via)
    req = urllib.request.Request(f"https://{address}:2379/v3/cluster/member/list", data=b"{}", method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
        return sorted(m.get("name", "") for m in json.load(resp)["members"])


def api_answers(ha: HA) -> bool:
    return ha.kubectl("get", "--raw", "/healthz", "--request-timeout=3s", check=False, timeout=20).returncode == 0


def ready_nodes(ha: HA) -> dict[str, bool]:
    proc = ha.kubectl("get", "nodes", "-o", "json", check=False)
    if proc.returncode != 0:
        return {}
    return {
        n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        for n in json.loads(proc.stdout)["items"]
    }


@pytest.fixture(scope="module")
def ha(tmp_path_factory) -> HA:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from provisioner.lab import Lab

    kprov("lab", "down", "--name", LAB, check=False)
    kubeconfig = Path.home() / ".kube" / f"kprov-{LAB}.conf"
    try:
        lab = Lab(LAB)
        nodes = lab.up(NODES, CONTROL_PLANES)
        subnet = ipaddress.IPv4Network(lab.state().subnet)
        vip = str(subnet.network_address + VIP_HOST)
        path = write_inventory(tmp_path_factory.mktemp("ha") / "lab-ha.yaml", str(subnet), vip)
        names = sorted(n.name for n in nodes)
        obj = HA(
            path=path,
            vip=vip,
            port=8443,
            subnet=str(subnet),
            node_names=names,
            control_planes=names[:CONTROL_PLANES],
            worker=names[CONTROL_PLANES],
            kubeconfig=kubeconfig,
        )
        obj.notes["addresses"] = {n.name: str(n.address) for n in nodes}
        yield obj
    finally:
        kprov("lab", "down", "--name", LAB, check=False)
        kubeconfig.unlink(missing_ok=True)


def test_1_up_behind_the_vip(ha: HA) -> None:
    up = kprov("up", "-i", str(ha.path), "--no-smoke", "--log-format", "json")
    ha.notes["up"] = True
    # after each control-plane join the first control plane's API server restarts (stale watch cache,
    # kubernetes#97294, docs/ha.md): once per joining control plane, always on the first one
    restarts = [
        (e["host"], e["status"])
        for e in events(up.stdout)
        if "restart the first control plane's API server" in e["task"] and e["status"] != "skipped"
    ]
    assert restarts == [(h, "changed") for h in ha.control_planes[1:]], restarts

    # the fetched kubeconfig points at the VIP, and the API answers there (certificates carry the VIP)
    server = yaml.safe_load(ha.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert server == f"https://{ha.vip}:{ha.port}"
    ready = wait_for("4 Ready nodes", lambda: (r := ready_nodes(ha)) and len(r) == NODES and all(r.values()) and r)
    assert sorted(ready) == ha.node_names
    cm = json.loads(ha.kubectl("get", "cm", "-n", "kube-system", "kubeadm-config", "-o", "json").stdout)
    assert f"controlPlaneEndpoint: {ha.vip}:{ha.port}" in cm["data"]["ClusterConfiguration"]
    sans = ha.sh(
        ha.control_planes[0],
        "openssl x509 -noout -text -in /etc/kubernetes/pki/apiserver.crt 2>/dev/null "
        "|| cat /etc/kubernetes/pki/apiserver.crt",
    )
    if "Subject Alternative Name" in sans.stdout:
        assert f"IP Address:{ha.vip}" in sans.stdout

    # etcd: one member per control plane
    assert etcd_members(ha) == ha.control_planes

    # exactly one control plane holds the VIP; every haproxy sees every API server healthy; workers run no balancer
    assert vip_holder(ha) in ha.control_planes
    for node in ha.control_planes:
        backends = wait_for(
            f"3 backends UP on {node}",
            lambda node=node: (b := haproxy_backends(ha, node)) and set(b.values()) == {"UP"} and b,
            timeout=60,
        )
        assert sorted(backends) == ha.control_planes
    assert "inactive" in ha.sh(ha.worker, "systemctl is-active haproxy keepalived || true").stdout


def test_1b_smoke_through_every_node(ha: HA) -> None:
    """A test of its own: the failover steps below do not depend on it (run the module without -x)."""
    if not ha.notes.get("up"):
        pytest.skip("the cluster was not built")
    # on a loaded machine a node's kube-proxy can lag the first attempt's 90 s probe window (seen on the first
    # control plane with load averages of 50-90 on 2 cores): one more try, reported
    smoke = kprov("smoke", "-i", str(ha.path), check=False)
    if smoke.returncode != 0:
        print(
            f"\nfirst smoke attempt failed (retrying once):\n{smoke.stdout[-2000:]}{smoke.stderr[-1000:]}",
            file=sys.stderr,
        )
        labkit.figure("[ha] the first smoke attempt failed, retried once (its output is in the test's stderr)")
        # no workaround here: the first API server's stale view after control-plane joins (docs/ha.md) is fixed
        # by `up` itself; a second failure is a failure
        time.sleep(10)
        smoke = kprov("smoke", "-i", str(ha.path))
    assert "smoke test passed" in smoke.stdout, smoke.stdout[-3000:]
    assert smoke.stdout.count(" 200 ") >= 2 * NODES, smoke.stdout[-3000:]


def test_2_losing_the_vip_holder(ha: HA) -> None:
    from provisioner.lab import Lab

    if not ha.notes.get("up"):
        pytest.skip("the cluster was not built")

    holder = vip_holder(ha)
    assert holder, "nobody holds the VIP"
    t0 = time.monotonic()
    Lab(LAB).stop([holder])
    stopped = time.monotonic()
    ha.notes["stopped"] = [holder]
    back = wait_for("the API through the VIP", lambda: api_answers(ha) and time.monotonic(), timeout=120, interval=0.5)
    failover = back - t0
    new_holder = vip_holder(ha)
    ha.notes["failover_s"] = round(failover, 1)
    labkit.figure(
        f"[ha] failover: {holder} stopped ({stopped - t0:.1f}s for a clean poweroff); the API answered through the "
        f"VIP {ha.vip}:{ha.port} {failover:.1f}s after the stop began, {back - stopped:.1f}s after the node was "
        f"down; VIP now on {new_holder}"
    )
    assert new_holder and new_holder != holder
    if failover > 30:  # issue 13 asks for 30 s; a busy shared machine is slower: report, do not flake
        labkit.figure(f"[ha] WARNING: failover took {failover:.1f}s (> 30 s)")

    assert holder in ha.kubectl("get", "nodes").stdout
    # a new Deployment rolls out with one control plane down (the lab's smoke image, never pulled)
    ha.kubectl("create", "namespace", "kprov-ha")
    ha.kubectl(
        "-n",
        "kprov-ha",
        "create",
        "deployment",
        "after-failover",
        "--image=docker.io/kprov/hello:1.0",
        "--replicas=2",
        "--",
        "/bin/sh",
        "-c",
        "mkdir -p /www && echo ok >/www/index.html && exec httpd -f -p 8080 -h /www",
    )
    ha.kubectl(
        "-n",
        "kprov-ha",
        "patch",
        "deployment",
        "after-failover",
        "--type=json",
        "-p",
        '[{"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"}]',
    )
    ha.kubectl("-n", "kprov-ha", "rollout", "status", "deployment/after-failover", "--timeout=240s", timeout=300)
    assert sorted(etcd_members(ha)) == ha.control_planes  # the member is down, not gone


def test_3_the_stopped_node_rejoins(ha: HA) -> None:
    from provisioner.lab import Lab

    stopped = ha.notes.get("stopped") or []
    if not stopped:
        pytest.skip("test_2 did not stop a node")
    Lab(LAB).start(stopped)
    ha.notes["stopped"] = []
    wait_for(
        "every node Ready again",
        lambda: (r := ready_nodes(ha)) and len(r) == NODES and all(r.values()),
        timeout=420,
        interval=3,
    )
    for node in ha.control_planes:
        wait_for(
            f"3 backends UP on {node}",
            lambda node=node: (b := haproxy_backends(ha, node)) and len(b) == 3 and set(b.values()) == {"UP"},
            timeout=240,
        )
    assert vip_holder(ha) != stopped[0], "the returning node took the VIP back (nopreempt)"

    again = kprov("up", "-i", str(ha.path), "--no-smoke", "--log-format", "json")
    changed = [(e["host"], e["task"]) for e in events(again.stdout) if e["changed"]]
    assert not changed, f"second up changed: {changed}"
    ha.kubectl("delete", "namespace", "kprov-ha", "--wait=false")


# --- issue 13 steps 3-5 on this cluster: kprov remove-node (tag r) ----------------------------------------

RM_WORKLOAD = labkit.pdb_workload("kprov-rm")


def static_inventory(ha: HA, without: tuple[str, ...] = ()) -> Path:
    """This cluster as a static inventory (a `provider: lab` one cannot shrink the lab), without some hosts."""
    source = kprov("lab", "inventory", "--name", LAB).stdout.strip().splitlines()[-1]
    doc = yaml.safe_load(Path(source).read_text())
    doc["cluster"] = yaml.safe_load(ha.path.read_text())["cluster"]
    doc["hosts"] = [h for h in doc["hosts"] if h["name"] not in without]
    path = ha.path.with_name(f"static-without-{'-'.join(without) or 'none'}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def rm_report(proc: subprocess.CompletedProcess[str]) -> dict:
    return json_lines(proc.stdout, "removed")[0]


def test_4_remove_the_worker_with_a_pdb(ha: HA) -> None:
    # the control planes are tainted: both replicas start on the worker; untainted afterwards, so they can move
    ha.kubectl("create", "namespace", "kprov-rm")
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(ha.kubeconfig), "apply", "-f", "-"],
        input=RM_WORKLOAD,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    ha.kubectl("-n", "kprov-rm", "rollout", "status", "deployment/web", "--timeout=240s", timeout=300)
    for cp in ha.control_planes:
        ha.kubectl("taint", "nodes", cp, "node-role.kubernetes.io/master-", check=False)
    pods = json.loads(ha.kubectl("-n", "kprov-rm", "get", "pods", "-o", "json").stdout)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {ha.worker}

    inv = static_inventory(ha)
    dry = kprov("remove-node", "-i", str(inv), "--host", ha.worker, "--dry-run", "--log-format", "json")
    plan = next(json.loads(line) for line in dry.stdout.splitlines() if line.startswith('{"remove_node"'))
    webs = [p["action"] for p in plan["pods"] if p["pod"].startswith("kprov-rm/web-")]
    assert len(webs) == 2 and all("PodDisruptionBudget kprov-rm/web" in a for a in webs), plan
    # no terminal and no --yes: refused after the plan, before any change (issue 15's guard rail)
    no_tty = kprov("remove-node", "-i", str(inv), "--host", ha.worker, check=False)
    assert no_tty.returncode == 2 and "confirm with --yes" in no_tty.stderr, no_tty.stderr
    assert "Traceback" not in no_tty.stderr and ha.worker in ready_nodes(ha)

    t0 = time.monotonic()
    out = kprov("remove-node", "-i", str(inv), "--host", ha.worker, "--yes", "--log-format", "json")
    ha.notes["remove_worker_s"] = round(time.monotonic() - t0, 1)
    assert all(s["outcome"] == "done" for s in rm_report(out)["steps"]), out.stdout[-2000:]
    assert ha.worker not in ready_nodes(ha)
    pods = json.loads(ha.kubectl("-n", "kprov-rm", "get", "pods", "-o", "json").stdout)["items"]
    assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} <= set(ha.control_planes)
    ha.kubectl("-n", "kprov-rm", "rollout", "status", "deployment/web", "--timeout=120s")
    res = ha.sh(
        ha.worker,
        "systemctl is-active kubelet || true; ip -o link | grep -cE 'cni0|veth' || true; "
        "iptables-save | grep -cE 'KUBE-|CNI-' || true",
    )
    assert res.stdout.split() == ["inactive", "0", "0"], res.stdout
    smoke = kprov("smoke", "-i", str(static_inventory(ha, (ha.worker,))))
    assert "smoke test passed" in smoke.stdout, smoke.stdout[-3000:]


def test_5_remove_a_control_plane(ha: HA) -> None:
    gone = ha.control_planes[-1]
    rest = [cp for cp in ha.control_planes if cp != gone]
    inv = static_inventory(ha, (ha.worker,))
    t0 = time.monotonic()
    out = kprov("remove-node", "-i", str(inv), "--host", gone, "--yes", "--log-format", "json")
    ha.notes["remove_cp_s"] = round(time.monotonic() - t0, 1)
    steps = {s["step"]: s["outcome"] for s in rm_report(out)["steps"]}
    assert steps["etcd member"] == "done" and steps["balancer"] == "done", steps
    ha.notes["removed_cp"] = gone
    assert etcd_members(ha, via=rest[0]) == rest
    for node in rest:
        backends = wait_for(
            f"2 backends UP on {node}",
            lambda n=node: (b := haproxy_backends(ha, n)) and set(b.values()) == {"UP"} and b,
            timeout=60,
        )
        assert sorted(backends) == rest, backends
    assert wait_for("the API through the VIP", lambda: api_answers(ha), timeout=60)
    assert gone not in ready_nodes(ha)
    assert ha.sh(gone, "systemctl is-active keepalived haproxy kubelet || true").stdout.split() == ["inactive"] * 3

    # a second control plane: etcd would be left with one member, no spare: refused, nothing changed
    inv2 = static_inventory(ha, (ha.worker, gone))
    refused = kprov("remove-node", "-i", str(inv2), "--host", rest[-1], "--yes", check=False)
    assert refused.returncode == 2 and "2 members" in refused.stderr, refused.stderr
    assert etcd_members(ha, via=rest[0]) == rest
    labkit.figure(
        f"[ha] remove-node: worker {ha.notes.get('remove_worker_s')}s, control plane {ha.notes['remove_cp_s']}s"
    )


def test_6_add_the_worker_back(ha: HA) -> None:
    gone = ha.notes["removed_cp"]
    inv = static_inventory(ha, (gone,))
    kprov("add-node", "-i", str(inv), "--host", ha.worker)
    wait_for("the worker Ready again", lambda: ready_nodes(ha).get(ha.worker), timeout=300, interval=3)
    kubelet_conf = ha.sh(ha.worker, "grep server: /etc/kubernetes/kubelet.conf").stdout
    assert ha.vip in kubelet_conf, kubelet_conf
    smoke = kprov("smoke", "-i", str(inv))
    assert "smoke test passed" in smoke.stdout, smoke.stdout[-3000:]
