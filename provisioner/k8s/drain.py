"""Drain plan: which pods on a node would be evicted, deleted, left alone or blocked, from kubectl JSON.

Pure functions over `kubectl get pods -A [--field-selector spec.nodeName=N] -o json` and
`kubectl get pdb -A -o json`: parse_pods and parse_budgets are the one parser of each (remove-node's plan and
`kprov upgrade`'s drain preview both read these).

Rules (those of `kubectl drain --ignore-daemonsets --delete-emptydir-data`, plus `--force` when asked):
* a pod owned by a controller (ReplicaSet, StatefulSet, Job, ...) is evicted through the Eviction API,
  so PodDisruptionBudgets are respected; emptyDir data of such a pod is lost;
* DaemonSet pods stay: the DaemonSet controller would recreate them at once; they go with the Node;
* static (mirror) pods stay: they are files on the host and go with the host cleanup;
* finished pods (Succeeded/Failed) are deleted;
* a pod without a controller would be lost for good: refused unless `--force`, which deletes it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.k8s.nodes import nodes_not_in as nodes_not_in  # remove-node's callers import it from here

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class PodAction(str, enum.Enum):
    EVICT = "evict"
    DELETE = "delete (no controller, --force)"
    NEEDS_FORCE = "refused: no controller (--force deletes it)"
    FINISHED = "delete (finished)"
    DAEMONSET = "stays (DaemonSet)"
    STATIC = "stays (static pod, removed with the host)"


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    owner: str  # "ReplicaSet/web-5d4f" or "" (no controller)
    action: PodAction
    pdb: str = ""  # "namespace/name" of the PodDisruptionBudget that covers the pod
    pdb_waits: bool = False  # the budget allows no disruption now: the eviction waits for replacements
    emptydir: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DrainPlan:
    node: str
    pods: tuple[PodPlan, ...]

    def with_action(self, *actions: PodAction) -> tuple[PodPlan, ...]:
        return tuple(p for p in self.pods if p.action in actions)

    @property
    def moving(self) -> tuple[PodPlan, ...]:
        """Pods the drain evicts or deletes."""
        return self.with_action(PodAction.EVICT, PodAction.DELETE, PodAction.FINISHED)

    @property
    def needs_force(self) -> tuple[PodPlan, ...]:
        return self.with_action(PodAction.NEEDS_FORCE)

    @property
    def pdb_waits(self) -> tuple[PodPlan, ...]:
        return tuple(p for p in self.pods if p.pdb_waits)


@dataclass(frozen=True)
class PodInfo:
    """One pod of `kubectl get pods -o json`."""

    namespace: str
    name: str
    node: str  # spec.nodeName ("" while unscheduled)
    labels: Mapping[str, str]
    phase: str
    controller: str  # the controller owner "Kind/name", "" when none
    owner_kinds: tuple[str, ...] = ()  # kinds of every owner reference (controller or not)
    mirror: bool = False  # a static pod's mirror
    emptydir: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class Budget:
    namespace: str
    name: str
    selector: Mapping[str, Any] | None
    disruptions_allowed: int

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _items(text: str) -> list[dict]:
    if not text.strip():
        return []
    doc = json.loads(text)
    items = doc.get("items", []) if isinstance(doc, dict) else []
    return [i for i in items if isinstance(i, dict)]


def parse_budgets(pdb_json: str) -> list[Budget]:
    """`kubectl get pdb -A -o json` -> budgets (policy/v1beta1 and v1 field names)."""
    out = []
    for item in _items(pdb_json):
        meta, spec, status = item.get("metadata", {}), item.get("spec", {}), item.get("status", {})
        allowed = status.get("disruptionsAllowed", status.get("podDisruptionsAllowed", 0))
        out.append(
            Budget(meta.get("namespace", "default"), meta.get("name", ""), spec.get("selector"), int(allowed or 0))
        )
    return out


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against pod labels. A missing selector matches nothing, an empty one everything."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _controller(meta: Mapping[str, Any]) -> str:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref['kind']}/{ref.get('name', '')}" if ref.get("kind") else ""
    return ""


def parse_pods(pods_json: str) -> list[PodInfo]:
    """`kubectl get pods -o json` -> its pods, sorted by namespace/name."""
    pods = []
    for item in _items(pods_json):
        meta, spec, status = item.get("metadata", {}), item.get("spec", {}), item.get("status", {})
        pods.append(
            PodInfo(
                meta.get("namespace", "default"),
                meta.get("name", ""),
                spec.get("nodeName", ""),
                meta.get("labels") or {},
                status.get("phase", ""),
                _controller(meta),
                tuple(o.get("kind", "") for o in meta.get("ownerReferences") or []),
                MIRROR_ANNOTATION in (meta.get("annotations") or {}),
                any("emptyDir" in v for v in spec.get("volumes") or []),
            )
        )
    return sorted(pods, key=lambda p: (p.namespace, p.name))


def drain_plan(node: str, pods_json: str, pdb_json: str, *, force: bool) -> DrainPlan:
    """What draining `node` does to each of its pods (sorted by namespace/name). Pure."""
    budgets = parse_budgets(pdb_json)
    left = {b.ref: b.disruptions_allowed for b in budgets}
    plans = []
    for pod in parse_pods(pods_json):
        if (pod.node or node) != node:
            continue
        kind = pod.controller.partition("/")[0]
        if pod.mirror:
            action = PodAction.STATIC
        elif kind == "DaemonSet":
            action = PodAction.DAEMONSET
        elif pod.finished:
            action = PodAction.FINISHED
        elif not kind:
            action = PodAction.DELETE if force else PodAction.NEEDS_FORCE
        else:
            action = PodAction.EVICT
        pdb, waits = "", False
        if action is PodAction.EVICT:
            for b in budgets:
                if b.namespace == pod.namespace and selector_matches(b.selector, pod.labels):
                    pdb = b.ref
                    if left[b.ref] > 0:
                        left[b.ref] -= 1
                    else:
                        waits = True
                    break
        plans.append(PodPlan(pod.namespace, pod.name, pod.controller, action, pdb, waits, pod.emptydir))
    return DrainPlan(node, tuple(plans))
