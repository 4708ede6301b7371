"""Helpers shared by the lab-cluster test modules (e2e, faults, HA, remove-node, day two): run the real `kprov`
and `kubectl`, write a lab inventory, run a shell on a node, poll until something holds.

Each module keeps its own lab name (`LAB`, tagged with KPROV_TEST_TAG) and passes it in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from provisioner.lab.inventory import SHARED_DISK_KUBELET_CONFIG

REPO = Path(__file__).resolve().parents[2]
KPROV = [str(REPO / ".venv" / "bin" / "kprov")] if (REPO / ".venv" / "bin" / "kprov").exists() else ["kprov"]
BUNDLE = Path(os.environ.get("KPROV_LAB_BUNDLE", "/var/cache/kprov/bundles/kubernetes-1.20.2-lab-amd64.tar"))

T = TypeVar("T")


def figure(line: str) -> None:
    """A measured figure for the CI log: printed in the run's "figures" section at the end (tests/conftest.py),
    from whichever worker ran the test."""
    path = os.environ.get("KPROV_TEST_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(" ".join(line.split("\n")).strip() + "\n")


def skip_reason() -> str | None:
    """Why a lab cluster cannot be built here, or None (only: not root, a tool or the lab bundle missing)."""
    if os.geteuid() != 0:
        return "needs root (nspawn lab)"
    if not shutil.which("systemd-nspawn"):
        return "needs systemd-nspawn (scripts/setup installs it)"
    if not BUNDLE.is_file():
        return f"needs the lab bundle {BUNDLE} (scripts/setup builds it)"
    if not shutil.which("kubectl"):
        return "needs kubectl on the operator machine"
    return None


def kprov(*args: str, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    """The real CLI, no terminal on stdin; with check, a non-zero exit fails with both output tails."""
    try:
        proc = subprocess.run(
            [*KPROV, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(
            f"kprov {' '.join(args)} still running after {timeout} s\n--- stdout\n{out[-6000:]}\n--- stderr\n{err[-4000:]}"
        ) from None
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kprov {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def kubeconfig(lab: str) -> Path:
    """Where `kprov up` merges the lab cluster's admin kubeconfig."""
    return Path.home() / ".kube" / f"kprov-{lab}.conf"


def kubectl(
    lab: str, *args: str, check: bool = True, stdin: str | None = None, timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig(lab)), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )
    assert not check or proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def node_sh(lab: str, node: str, script: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """`sh -c script` on a lab node (never raises on the script's exit code)."""
    return kprov("lab", "ssh", "--name", lab, node, "--", "sh", "-c", script, check=False, timeout=timeout)


def json_lines(stdout: str, key: str | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a `--log-format json` output (those holding `key`, when given)."""
    docs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [d for d in docs if key is None or key in d]


def events(stdout: str) -> list[dict[str, Any]]:
    """The task events of a `--log-format json` output."""
    return json_lines(stdout, "task")


SYSTEM_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns")


def assert_cluster_healthy(lab: str, names: Sequence[str], version: str = "v1.20.2") -> None:
    """Exactly these nodes, every one Ready at `version` with a lab InternalIP (the inventory's node_ip, not
    a NAT address), and every system pod Running, each control-plane component and addon among them."""
    wait_for(
        f"{len(names)} nodes Ready",
        lambda: (r := ready_nodes(lab)) and sorted(r) == sorted(names) and all(r.values()),
        timeout=300,
    )
    for n in json.loads(kubectl(lab, "get", "nodes", "-o", "json").stdout)["items"]:
        ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        assert ip.startswith("10.") and n["status"]["nodeInfo"]["kubeletVersion"] == version, (n["metadata"], ip)
    pods = json.loads(kubectl(lab, "get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    not_running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") != "Running"]
    assert pods and not not_running, f"system pods not Running: {not_running}"
    all_pods = " ".join(p["metadata"]["name"] for p in pods)
    missing = [c for c in SYSTEM_COMPONENTS if c not in all_pods]
    assert not missing, f"no pod of {missing} in kube-system: {all_pods}"


def wait_for(what: str, predicate: Callable[[], T], timeout: float = 300, interval: float = 2) -> T:
    """Poll until predicate() is truthy; the deadline only bounds a hung test, it is not what is tested."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(interval)


def ready_nodes(lab: str) -> dict[str, bool]:
    """Node name -> Ready, from the API ({} while it does not answer)."""
    proc = kubectl(lab, "get", "nodes", "-o", "json", check=False)
    if proc.returncode != 0:
        return {}
    return {
        n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        for n in json.loads(proc.stdout)["items"]
    }


_PDB_WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: NAMESPACE}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: docker.io/kprov/hello:1.0
        imagePullPolicy: Never
        command: [/bin/sh, -c, 'mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8080 -h /www']
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata: {name: web, namespace: NAMESPACE}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
"""


def pdb_workload(namespace: str) -> str:
    """Deployment `web` (2 replicas of the lab's smoke image, never pulled) and a PodDisruptionBudget that keeps
    one of them: what a drain must respect."""
    return _PDB_WORKLOAD.replace("NAMESPACE", namespace)


#: cluster.vars for lab clusters of the tests (provisioner/lab/inventory.py says why)
SHARED_DISK_KUBELET = {"kubelet_extra_config": SHARED_DISK_KUBELET_CONFIG}


def write_inventory(
    path: Path,
    lab: str,
    nodes: int,
    control_planes: int = 1,
    *,
    lab_extra: dict | None = None,
    cluster_vars: dict | None = None,
    **cluster: Any,
) -> Path:
    """inventories/lab.yaml for lab `lab` with `nodes` nodes and the lab bundle; `cluster` keys override,
    `cluster_vars` are added to cluster.vars."""
    doc = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())
    doc["lab"] = {"name": lab, "nodes": nodes, "control_planes": control_planes, **(lab_extra or {})}
    doc["cluster"].update(name=lab, bundle=str(BUNDLE), **cluster)
    doc["cluster"]["vars"].update(cluster_vars or {})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def static_inventory(lab: str, path: Path, hosts: list[str] | None = None) -> Path:
    """The lab's static inventory (`kprov lab inventory`: bundle and lab workarounds included), only `hosts`."""
    source = kprov("lab", "inventory", "--name", lab).stdout.strip().splitlines()[-1]
    doc = yaml.safe_load(Path(source).read_text())
    if hosts is not None:
        doc["hosts"] = [h for h in doc["hosts"] if h["name"] in hosts]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def lab_down(lab: str) -> None:
    """Remove the lab and the kubeconfig `up` merged for it (before a module's cluster, and after)."""
    kprov("lab", "down", "--name", lab, check=False)
    kubeconfig(lab).unlink(missing_ok=True)


#: bootstrap tokens, a certificate key or token on a command line, PEM private keys
SECRET_SHAPES = re.compile(
    r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b|--certificate-key[= ]+[0-9a-f]{64}|--token[= ]+\S+"
    r"|PRIVATE KEY-----"
)


def lab_processes(lab: str) -> list[tuple[int, str]]:
    """(pid, argv) of the processes running inside this lab's nodes (their cgroup names the lab)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"kprov-{lab}/" not in (proc / "cgroup").read_text():
                continue
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if argv:
            out.append((int(proc.name), argv))
    return out


@dataclass
class Seen:
    """Everything the runs printed or logged, and every argv sampled on the lab's nodes meanwhile."""

    texts: list[str] = field(default_factory=list)
    argvs: set[str] = field(default_factory=set)

    def add(self, *procs: subprocess.CompletedProcess[str]) -> None:
        for p in procs:
            self.texts += [p.stdout, p.stderr]

    def leaks(self, known_tokens: set[str]) -> tuple[int, list[str]]:
        """(lines scanned, the lines and argvs holding a secret's shape or a live bootstrap token)."""
        lines = [line for text in self.texts for line in text.splitlines()] + sorted(self.argvs)
        return len(lines), [x for x in lines if SECRET_SHAPES.search(x) or any(t in x for t in known_tokens)]


class ArgvSampler(threading.Thread):
    """Samples the argv of every process on a lab's nodes while runs go on (as `ps` would)."""

    def __init__(self, lab: str, seen: Seen) -> None:
        super().__init__(daemon=True)
        self.lab, self.seen = lab, seen
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.3):
            for _, argv in lab_processes(self.lab):
                self.seen.argvs.add(argv)


def live_bootstrap_tokens(lab: str, control_plane: str) -> set[str]:
    """The bootstrap tokens the cluster holds now (to look for them, not only their shape)."""
    out = kprov("lab", "ssh", "--name", lab, control_plane, "--", "kubeadm", "token", "list", "-o", "json", check=False)
    return set(re.findall(r'"token":\s*"([a-z0-9]{6}\.[a-z0-9]{16})"', out.stdout))


def assert_no_secret(lab: str, seen: Seen, log: Path) -> str:
    """The secret scan of issue 10: `seen` plus the `--log-file` JSON, against the shapes and the cluster's live
    bootstrap tokens; fails on any leak, returns the figure line to print."""
    seen.texts.append(log.read_text())
    known = live_bootstrap_tokens(lab, f"{lab}-1")
    scanned, leaks = seen.leaks(known)
    assert seen.argvs, "no argv was sampled on the nodes"
    assert not leaks, leaks[:5]
    return (
        f"secret scan: {scanned} lines of output, log and argvs ({len(seen.argvs)} distinct argvs sampled on the "
        f"nodes), {len(known)} live bootstrap tokens checked: no secret found"
    )


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """host -> its counts, from the console recap table of a run (the header's rules are heavy: ┃)."""

    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split(r"[│┃]", line)]

    lines = stdout[stdout.rfind("RECAP") :].splitlines()
    header = next(i for i, line in enumerate(lines) if cells(line)[0] == "host")
    columns = cells(lines[header])[1:]
    rows = {}
    for line in lines[header + 1 :]:
        row = cells(line)
        if len(row) != len(columns) + 1 or not row[0] or not row[1].isdigit():
            continue
        rows[row[0]] = {c: int(v) for c, v in zip(columns, row[1:], strict=True) if v.isdigit()}
    return rows


def role_times(stdout: str) -> list[tuple[str, str]]:
    """The recap's "wall time per role" pairs (the line may be wrapped)."""
    start = stdout.find("wall time per role:")
    pairs: list[tuple[str, str]] = []
    for line in stdout[start + len("wall time per role:") :].splitlines() if start >= 0 else []:
        found = re.findall(r"([a-z_]+) ([\d.]+)s\b", line)
        if not found and pairs:
            break
        pairs += found
    return pairs
