"""Issue 13, `api_endpoint: local` in the lighter form: every node reaches the API through its own haproxy on
127.0.0.1:6444, so losing a control plane's API server does not take a node off the cluster.

One lab cluster (2 control planes + 1 worker, Kubernetes 1.20.2 from the lab bundle), tests in file order:
  1. `kprov up`: controlPlaneEndpoint and every kubelet's kubeconfig are 127.0.0.1:6444, haproxy on every node sees
     both API servers UP, smoke passes;
  2. the first control plane's API server is stopped (its static pod manifest parked; with 2 control planes a
     whole stopped node would also take etcd's quorum, and with it every API server, away: a node-level stop
     needs 3 control planes, which tests/ha/test_ha_lab.py proves for `vip`): haproxy on every node marks it DOWN,
     the worker keeps renewing its lease and stays Ready, a new Deployment rolls out on it, smoke passes through
     the second control plane's address;
  3. the API server comes back: UP again everywhere, and a second `up` changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.e2e import labkit
from tests.e2e.labkit import BUNDLE, REPO, kprov, node_sh, skip_reason, wait_for

LAB = "kpl" + os.environ.get("KPROV_TEST_TAG", "")
CP1, CP2, WORKER = f"{LAB}-1", f"{LAB}-2", f"{LAB}-3"
PORT = 6444
KUBECONFIG = labkit.kubeconfig(LAB)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.lab,
    # not yet green here (first run: etcd lost quorum after a DiskPressure image reclaim, fixed since): opt-in
    # until a run passes; then it joins the default run (~6 min on a quiet machine, 3 nodes)
    pytest.mark.skipif(os.environ.get("KPROV_FULL_LAB") != "1", reason="api_endpoint: local cluster: KPROV_FULL_LAB=1"),
]


def sh(node: str, script: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return node_sh(LAB, node, script, timeout=timeout)


def kubectl(*args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return labkit.kubectl(LAB, *args, check=check, timeout=timeout)


def backends(node: str) -> dict[str, str]:
    """haproxy's view on a node: server name -> UP/DOWN."""
    out = sh(node, "echo 'show stat' | socat stdio /run/haproxy/admin.sock").stdout
    rows = [line.split(",") for line in out.splitlines() if line.startswith("kube-apiserver,")]
    return {r[1]: r[17] for r in rows if r[1] not in ("FRONTEND", "BACKEND")}


def ready(node: str) -> bool:
    res = kubectl("get", "node", node, "-o", "json", check=False)
    return res.returncode == 0 and any(
        c["type"] == "Ready" and c["status"] == "True" for c in json.loads(res.stdout)["status"]["conditions"]
    )


def lease_renewed(node: str) -> datetime | None:
    res = kubectl("-n", "kube-node-lease", "get", "lease", node, "-o", "jsonpath={.spec.renewTime}", check=False)
    return datetime.fromisoformat(res.stdout.strip().replace("Z", "+00:00")) if res.returncode == 0 else None


def smoke(inv: Path) -> None:
    # on a loaded machine a node's kube-proxy can lag the first attempt (docs/ha.md): one more try, reported
    res = kprov("smoke", "-i", str(inv), check=False)
    if res.returncode != 0:
        print(
            f"\nfirst smoke attempt failed (retrying once):\n{res.stdout[-2000:]}{res.stderr[-1000:]}", file=sys.stderr
        )
        # no workaround: `up` restarts the first API server after the control-plane join (docs/ha.md)
        time.sleep(10)
        res = kprov("smoke", "-i", str(inv))
    assert "smoke test passed" in res.stdout, res.stdout[-3000:]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    doc = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())
    doc["lab"] = {"name": LAB, "nodes": 3, "control_planes": 2}
    doc["cluster"].update(name=LAB, bundle=str(BUNDLE), api_endpoint="local")
    # the nodes' disk is this machine's shared disk, near kubelet's default thresholds: a DiskPressure image
    # reclaim deleted the joining control plane's etcd image (no registry to pull it back) and etcd lost quorum
    # (seen in the first run; docs/maintenance.md, lab-only caveat)
    doc["cluster"]["vars"].update(labkit.SHARED_DISK_KUBELET)
    inv = tmp_path_factory.mktemp("local") / "lab-local.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    kprov("lab", "down", "--name", LAB, check=False)
    notes: dict = {"inv": inv}
    try:
        yield notes
    finally:
        figures = {k: v for k, v in notes.items() if k not in ("inv", "kubeconfig")}  # never the kubeconfig (a key)
        labkit.figure(f"[ha local] figures: {json.dumps(figures)}")
        sh(CP1, "[ -e /root/kube-apiserver.yaml ] && mv /root/kube-apiserver.yaml /etc/kubernetes/manifests/; true")
        kprov("lab", "down", "--name", LAB, check=False)
        KUBECONFIG.unlink(missing_ok=True)


def test_1_up_with_a_local_balancer_on_every_node(lab) -> None:
    t0 = time.monotonic()
    kprov("up", "-i", str(lab["inv"]), "--no-smoke")
    lab["up_s"] = round(time.monotonic() - t0, 1)
    lab["up"] = True
    cm = json.loads(kubectl("get", "cm", "-n", "kube-system", "kubeadm-config", "-o", "json").stdout)
    assert f"controlPlaneEndpoint: 127.0.0.1:{PORT}" in cm["data"]["ClusterConfiguration"]
    for node in (CP1, CP2, WORKER):
        conf = sh(node, "grep -h 'server:' /etc/kubernetes/kubelet.conf").stdout
        assert f"https://127.0.0.1:{PORT}" in conf, (node, conf)
        up = wait_for(
            f"2 API servers UP in {node}'s haproxy",
            lambda n=node: (b := backends(n)) and set(b.values()) == {"UP"} and b,
            timeout=120,
        )
        assert len(up) == 2, up
    wait_for("3 Ready nodes", lambda: all(ready(n) for n in (CP1, CP2, WORKER)))
    smoke(lab["inv"])


def test_2_losing_a_control_planes_api_server(lab) -> None:
    if not lab.get("up"):
        pytest.skip("the cluster was not built")
    # the operator's kubeconfig points at the first control plane (docs/ha.md): reach the second one instead
    text = KUBECONFIG.read_text()
    lab["kubeconfig"] = text
    cp2 = kubectl("get", "node", CP2, "-o", 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}').stdout
    assert re.fullmatch(r"[0-9.]+", cp2.strip()), cp2
    cp2 = cp2.strip()
    KUBECONFIG.write_text(re.sub(r"(?m)^(\s*server:\s*).*$", lambda m: f"{m.group(1)}https://{cp2}:6443", text))

    stopped = datetime.now(UTC)
    t0 = time.monotonic()
    res = sh(
        CP1,
        "mv /etc/kubernetes/manifests/kube-apiserver.yaml /root/ && "
        "while ss -Hltn '( sport = :6443 )' | grep -q .; do sleep 1; done; echo down",
    )
    assert "down" in res.stdout, res.stdout + res.stderr
    lab["apiserver_stop_s"] = round(time.monotonic() - t0, 1)
    for node in (CP1, CP2, WORKER):
        wait_for(
            f"{node}'s haproxy marking {CP1} DOWN",
            lambda n=node: sum(v == "DOWN" for v in backends(n).values()) == 1,
            timeout=60,
            interval=1,
        )
    lab["marked_down_s"] = round(time.monotonic() - t0, 1)
    # the worker's kubelet keeps talking to the API (through its haproxy, to the second API server)
    renewed = wait_for(
        "the worker's lease renewed after the stop",
        lambda: (r := lease_renewed(WORKER)) and r > stopped and r,
        timeout=120,
    )
    lab["lease_renewed_after_s"] = round((renewed - stopped).total_seconds(), 1)
    assert ready(WORKER) and ready(CP2)
    kubectl("create", "namespace", "kprov-local")
    kubectl(
        "-n",
        "kprov-local",
        "create",
        "deployment",
        "after-stop",
        "--image=docker.io/kprov/hello:1.0",
        "--",
        "/bin/sh",
        "-c",
        "mkdir -p /www && echo ok >/www/index.html && exec httpd -f -p 8080 -h /www",
    )
    kubectl(
        "-n",
        "kprov-local",
        "patch",
        "deployment",
        "after-stop",
        "--type=json",
        "-p",
        '[{"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"}]',
    )
    kubectl("-n", "kprov-local", "rollout", "status", "deployment/after-stop", "--timeout=240s", timeout=300)
    smoke(lab["inv"])
    assert ready(WORKER)


def test_3_the_api_server_comes_back(lab) -> None:
    if not lab.get("up"):
        pytest.skip("the cluster was not built")
    sh(CP1, "mv /root/kube-apiserver.yaml /etc/kubernetes/manifests/")
    for node in (CP1, CP2, WORKER):
        wait_for(
            f"both API servers UP again in {node}'s haproxy",
            lambda n=node: set(backends(n).values()) == {"UP"},
            timeout=240,
            interval=2,
        )
    KUBECONFIG.write_text(lab["kubeconfig"])  # as `up` fetched it (a rewritten server line would be a change)
    res = kprov("up", "-i", str(lab["inv"]), "--no-smoke", "--log-format", "json")
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{") and '"task"' in line]
    changed = [(e["host"], e["task"]) for e in events if e["changed"]]
    assert events and not changed, f"second up changed: {changed}"
