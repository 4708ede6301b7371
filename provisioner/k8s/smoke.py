"""The smoke test: deploy a hello app, reach its NodePort through every node, scale, check again, clean up."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.inventory.model import Host, Inventory
from provisioner.k8s.kubectl import Kubectl


def probe_address(host: Host) -> str:
    """Where the control machine reaches a node's NodePort: the address it reaches the node at over SSH, unless that
    is a loopback tunnel endpoint (Vagrant's NAT port forward 127.0.0.1:2222, an SSH relay), which forwards SSH
    only: then the node's cluster address."""
    try:
        loopback = ipaddress.ip_address(host.address).is_loopback
    except ValueError:
        loopback = host.address.lower() == "localhost"
    return host.node_ip if loopback and host.node_ip else host.address


@dataclass(frozen=True)
class Probe:
    phase: str
    node: str
    url: str
    status: int | None
    latency_ms: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class SmokeResult:
    probes: tuple[Probe, ...]
    error: str = ""
    diagnostics: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.probes) and all(p.ok for p in self.probes)


#: the label on the namespace the smoke test creates: no other namespace is ever deleted
SMOKE_LABEL = "kprov.io/smoke"


def _smoke_labelled(namespace_json: str) -> bool:
    try:
        labels = (json.loads(namespace_json).get("metadata") or {}).get("labels") or {}
    except (ValueError, AttributeError):
        return False
    return labels.get(SMOKE_LABEL) == "true"


def _ours(ns: str) -> list[str]:
    """kubectl selectors for "namespace ns, and only if the smoke test labelled it" (a name and a label
    selector cannot be combined: the name goes into a field selector)."""
    return ["--field-selector", f"metadata.name={ns}", "-l", f"{SMOKE_LABEL}=true"]


def http_probe(url: str, timeout: float = 5.0) -> tuple[int | None, int, str]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(200).decode("utf-8", "replace")
            return (
                resp.status,
                int((time.monotonic() - t0) * 1000),
                body.strip().splitlines()[0] if body.strip() else "",
            )
    except urllib.error.HTTPError as exc:
        return exc.code, int((time.monotonic() - t0) * 1000), str(exc.reason)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, int((time.monotonic() - t0) * 1000), str(reason)


def run_smoke(
    inv: Inventory,
    kubectl: Kubectl,
    variables: Mapping[str, Any],
    *,
    manifest: str,
    keep: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> SmokeResult:
    """The smoke test through `kubectl` with the smoke role's `variables` and the rendered `manifest`."""
    ns = str(variables["smoke_namespace"])
    port = int(variables["smoke_node_port"])
    timeout = int(variables["smoke_timeout"])
    probes: list[Probe] = []
    touched = False

    def k(*args: str, stdin: str | None = None, t: float = 120):
        return kubectl.run(list(args), stdin=stdin, timeout=t)

    def fail(msg: str) -> SmokeResult:
        return SmokeResult(tuple(probes), msg, diagnostics(kubectl, ns))

    try:
        res = k("get", "nodes", "-o", "name", t=60)
        if res.rc != 0:
            return SmokeResult(
                (),
                f"cannot talk to the API server ({kubectl.where}): {res.stderr_tail(2)}",
                "is the cluster up? `kprov up` builds it and fetches its kubeconfig",
            )
        # only a namespace the smoke test made (it carries SMOKE_LABEL) is ever deleted or written to
        res = k("get", "namespace", ns, "--ignore-not-found", "-o", "json", t=60)
        if res.rc != 0:
            return SmokeResult((), f"cannot look up namespace {ns}: {res.stderr_tail(2)}")
        if res.stdout.strip() and not _smoke_labelled(res.stdout):
            return SmokeResult(
                (),
                f"namespace {ns} exists and was not made by kprov's smoke test "
                f"(no label {SMOKE_LABEL}=true): left untouched",
                "set smoke_namespace to a namespace of its own (the default is kprov-smoke)",
            )
        if res.stdout.strip():
            # left by an interrupted run (or still terminating): it would refuse new objects
            res = k("delete", "namespace", *_ours(ns), "--ignore-not-found", "--wait=true", "--timeout=180s", t=200)
            if res.rc != 0:
                return fail(f"namespace {ns} from an earlier run cannot be removed: {res.stderr_tail(3)}")
        touched = True
        progress(f"deploying the hello app into namespace {ns} ({kubectl.where})")
        res = k("apply", "-f", "-", stdin=manifest)
        if res.rc != 0:
            return fail(f"kubectl apply failed: {res.stderr_tail(5)}")
        phases = [
            (f"{variables['smoke_replicas']} replicas", int(variables["smoke_replicas"])),
            ("one replica per node", len(inv.hosts)),
        ]
        for label, replicas in phases:
            res = k("scale", "deployment/hello", "-n", ns, f"--replicas={replicas}")
            if res.rc != 0:
                return fail(f"kubectl scale failed: {res.stderr_tail(5)}")
            progress(f"waiting for {replicas} ready replicas")
            res = k("rollout", "status", "deployment/hello", "-n", ns, f"--timeout={timeout}s", t=timeout + 30)
            if res.rc != 0:
                return fail(
                    f"deployment hello did not become ready with {replicas} replicas: "
                    f"{res.stderr_tail(3) or res.stdout.strip()[-300:]}"
                )
            for h in inv.hosts:
                at = probe_address(h)
                url = f"http://[{at}]:{port}/" if ":" in at else f"http://{at}:{port}/"
                deadline = time.monotonic() + 90
                while True:  # kube-proxy programs rules asynchronously: retry briefly
                    status, ms, detail = http_probe(url)
                    if status == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                probes.append(Probe(label, h.name, url, status, ms, detail))
            probe_cmd = variables.get("smoke_in_cluster_probe")
            if probe_cmd and label == phases[0][0]:
                # service name -> cluster DNS -> ClusterIP -> a pod, from inside a pod
                t0 = time.monotonic()
                # cluster DNS may still be starting on a cluster that was just built
                k(
                    "rollout",
                    "status",
                    "deployment/coredns",
                    "-n",
                    "kube-system",
                    f"--timeout={timeout}s",
                    t=timeout + 30,
                )
                deadline = time.monotonic() + 90
                while True:
                    res = k("exec", "-n", ns, "deployment/hello", "--", *[str(a) for a in probe_cmd], t=60)
                    if res.rc == 0 or time.monotonic() > deadline:
                        break
                    time.sleep(3)
                probes.append(
                    Probe(
                        "in-cluster",
                        "(pod)",
                        f"http://hello.{ns}.svc.cluster.local/",
                        200 if res.rc == 0 else None,
                        int((time.monotonic() - t0) * 1000),
                        res.stdout.strip()[:80] if res.rc == 0 else res.stderr_tail(1),
                    )
                )
            bad = [p for p in probes if p.phase.startswith(label) or p.node == "(pod)"]
            bad = [p for p in bad if not p.ok]
            if bad:
                return fail("unreachable through " + ", ".join(f"{p.node} ({p.detail or p.status})" for p in bad))
        return SmokeResult(tuple(probes))
    finally:
        if not keep and touched:
            # interrupted (Ctrl-C): start the deletion and go, rather than wait up to 150 s for it; the next smoke
            # test waits for a namespace that is still terminating
            wait = "true" if sys.exc_info()[0] is None else "false"
            k("delete", "namespace", *_ours(ns), "--ignore-not-found", f"--wait={wait}", "--timeout=120s", t=150)


def diagnostics(kubectl: Kubectl, ns: str) -> str:
    """Pod status and recent events: which pod on which node failed and why."""
    lines: list[str] = []
    res = kubectl.run(["get", "pods", "-n", ns, "-o", "json"], timeout=30)
    if res.rc == 0:
        try:
            for pod in json.loads(res.stdout).get("items", []):
                st = pod.get("status", {})
                node = pod.get("spec", {}).get("nodeName", "?")
                reasons = []
                for cs in st.get("containerStatuses", []) or []:
                    state = cs.get("state", {})
                    for key in ("waiting", "terminated"):
                        if key in state:
                            reasons.append(
                                f"{key}: {state[key].get('reason', '')} {state[key].get('message', '')}".strip()
                            )
                    if not cs.get("ready"):
                        reasons.append("not ready")
                for cond in st.get("conditions", []) or []:
                    if cond.get("status") != "True" and cond.get("message"):
                        reasons.append(cond["message"])
                lines.append(
                    f"pod {pod['metadata']['name']} on {node}: {st.get('phase')} {'; '.join(reasons)}".rstrip()
                )
        except (ValueError, KeyError):
            pass
    ev = kubectl.run(
        [
            "get",
            "events",
            "-n",
            ns,
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
            "--no-headers",
        ],
        timeout=30,
    )
    if ev.rc == 0:
        lines.extend(f"event {line}" for line in ev.stdout.strip().splitlines()[-10:])
    return "\n".join(lines)
