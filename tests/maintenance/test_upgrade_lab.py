"""`kprov upgrade` rehearsed on the lab: 1.20.2 -> 1.20.3-lab.0 (the same source relinked with a pre-release
version stamp: `KPROV_LAB_BUNDLE_VERSION=1.20.3-lab.0 scripts/build-lab-bundle`).

Opt-in: it runs only when the rehearsal bundle exists (scripts/setup does not build it, to keep the default CI run
within its budget); otherwise it is skipped with that reason. One cluster (1 control plane + 1 worker) and an app
with 2 replicas and a PodDisruptionBudget (minAvailable 1; it tolerates the control plane's taint so a drain always
has somewhere to go):
up at 1.20.2 -> bump the inventory: up and plan refuse -> upgrade (plan only) -> upgrade --yes, killed (SIGKILL)
during the worker's step -> rerun: it finishes, every kubelet and the API server at 1.20.3-lab.0, no node cordoned,
the app never below 1 ready replica (polled throughout) -> a second upgrade has nothing to do.
Prints the figures: wall time per node, total, the app's minimum ready replicas.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import labkit
from tests.e2e.labkit import KPROV, json_lines, kprov, skip_reason

REHEARSAL = Path(
    os.environ.get("KPROV_REHEARSAL_BUNDLE", "/var/cache/kprov/bundles/kubernetes-1.20.3-lab.0-lab-amd64.tar")
)
TARGET = "1.20.3-lab.0"
LAB = "kpmu" + os.environ.get("KPROV_TEST_TAG", "")
CP, WORKER = f"{LAB}-1", f"{LAB}-2"

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

APP = """
apiVersion: v1
kind: Namespace
metadata: {name: kprov-upgrade}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: kprov-upgrade}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      tolerations: [{key: node-role.kubernetes.io/master, operator: Exists, effect: NoSchedule}]
      containers:
        - name: hello
          image: docker.io/kprov/hello:1.0
          imagePullPolicy: Never
          command: [/bin/sh, -c, 'mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 8080 -h /www']
          readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata: {name: hello, namespace: kprov-upgrade}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: hello}}
"""


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return labkit.kubectl(LAB, *args, stdin=stdin, check=check, timeout=120)


def ready_replicas() -> int | None:
    res = kubectl(
        "get", "deployment", "hello", "-n", "kprov-upgrade", "-o", "jsonpath={.status.readyReplicas}", check=False
    )
    return int(res.stdout or 0) if res.returncode == 0 else None


@pytest.fixture(scope="module")
def inventories(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if not REHEARSAL.is_file():
        pytest.skip(
            f"needs the rehearsal bundle {REHEARSAL}: KPROV_LAB_BUNDLE_VERSION={TARGET} scripts/build-lab-bundle"
        )
    d = tmp_path_factory.mktemp("upgrade")
    # the nodes' disk is this machine's shared disk, which other work fills to near kubelet's thresholds; with no
    # registry an image kubelet's garbage collector removes is gone for good (measured: the next version's images
    # vanished before kubeadm used them), and a DiskPressure eviction took the app's pods off a node mid-upgrade
    old = labkit.write_inventory(d / "old.yaml", LAB, 2, cluster_vars=labkit.SHARED_DISK_KUBELET)
    doc = yaml.safe_load(old.read_text())
    doc["cluster"].update(kubernetes_version=TARGET, bundle=str(REHEARSAL))
    new = d / "new.yaml"
    new.write_text(yaml.safe_dump(doc, sort_keys=False))
    kprov("lab", "down", "--name", LAB, check=False)
    try:
        yield old, new
    finally:
        kprov("lab", "down", "--name", LAB, check=False)
        (Path.home() / ".kube" / f"kprov-{LAB}.conf").unlink(missing_ok=True)


def test_upgrade_to_the_rehearsal_target(inventories) -> None:
    old, new = inventories
    kprov("up", "-i", str(old), "--no-smoke")
    kubectl("apply", "-f", "-", stdin=APP)
    deadline = time.monotonic() + 300
    while (ready_replicas() or 0) < 2:
        assert time.monotonic() < deadline, "the app never got 2 ready replicas"
        time.sleep(3)

    refused = kprov("up", "-i", str(new), check=False)
    assert refused.returncode == 2 and "kprov upgrade" in refused.stderr, refused.stderr
    assert kprov("plan", "-i", str(new), check=False).returncode == 2

    plan = kprov("upgrade", "-i", str(new), "--log-format", "json")
    steps = {r["host"]: r for r in json_lines(plan.stdout) if "kind" in r}
    assert not any(r["done"] for r in steps.values()), steps
    assert any("--allow-experimental-upgrades" in s for s in steps[CP]["steps"]), steps

    # the app's ready replicas, polled for the whole upgrade
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            n = ready_replicas()
            if n is not None:
                seen.append(n)
            time.sleep(1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.monotonic()
    try:
        # 1. an upgrade killed during the worker's step (after the control plane is done)
        proc = subprocess.Popen(
            [*KPROV, "upgrade", "-i", str(new), "--yes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        killed_at = ""
        for line in proc.stdout:
            if f"{WORKER}: binaries" in line:
                time.sleep(5)
                proc.send_signal(signal.SIGKILL)
                killed_at = line.strip()
                break
        proc.wait(timeout=2400)
        assert killed_at, "the upgrade ended before the worker's step"
        cordoned = json.loads(kubectl("get", "node", WORKER, "-o", "json").stdout)["spec"].get("unschedulable")
        assert cordoned, "the worker should be left cordoned by the killed run"
        # 2. the rerun continues from the facts and finishes
        run = kprov("upgrade", "-i", str(new), "--yes", "--log-format", "json", timeout=2400)
    finally:
        stop.set()
        poller.join(timeout=10)
    total = time.monotonic() - t0
    recap = {r["upgrade"]: r for r in json_lines(run.stdout) if "upgrade" in r}
    print(
        f"\nUPGRADE FIGURES: killed at {killed_at!r}; rerun recap "
        + json.dumps({h: [r["status"], r["seconds"]] for h, r in recap.items()})
        + f"; total {total:.0f} s; app ready replicas min {min(seen)} over {len(seen)} polls"
    )
    assert recap[CP]["status"] == "unchanged" and recap[WORKER]["status"] == "upgraded", recap

    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {f"v{TARGET}"}
    assert not any(n["spec"].get("unschedulable") for n in nodes)
    server = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert server == f"v{TARGET}"
    assert seen and min(seen) >= 1, seen

    again = kprov("upgrade", "-i", str(new), "--yes")
    assert "nothing to do" in again.stdout + again.stderr
    assert kprov("plan", "-i", str(new), check=False).returncode != 2
