"""`kprov upgrade`, the pure half: facts in, an ordered per-node plan out (no I/O, golden-tested).

Order (kubeadm's): the first control plane `kubeadm upgrade apply`, the other control planes `kubeadm upgrade
node`, then the workers `serial` at a time. Every node: cordon -> drain -> kubeadm/kubelet/kubectl at the target
-> kubeadm upgrade -> kubelet restart -> Ready at the target -> uncordon. A node whose kubelet already reports
the target is done (resumable from facts); one left cordoned by an interrupted upgrade is only uncordoned.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from provisioner.errors import InputError
from provisioner.k8s import drain as k8s_drain
from provisioner.k8s import nodes as k8s_nodes
from provisioner.k8s.versions import KubeVersion, check_upgrade_step, same_version
from provisioner.modules.system import APT_NET

#: annotation kprov puts on a node it cordons, so it only ever uncordons nodes it cordoned itself
CORDON_ANNOTATION = "kprov.io/upgrade-cordoned"
DRAIN_ARGS = ("--ignore-daemonsets", "--delete-emptydir-data", "--force")


@dataclass(frozen=True)
class NodeFacts:
    """One node as the API server and the host see it."""

    name: str
    ready: bool
    kubelet: str  # the version the kubelet reports to the API server
    unschedulable: bool = False
    cordoned_by_kprov: bool = False
    apiserver: str = ""  # control planes: the API server's image tag


@dataclass(frozen=True)
class PodFacts:
    namespace: str
    name: str
    node: str
    labels: Mapping[str, str]
    daemonset: bool = False
    mirror: bool = False


@dataclass(frozen=True)
class PdbFacts:
    namespace: str
    name: str
    selector: Mapping[str, str]
    disruptions_allowed: int


@dataclass(frozen=True)
class NodeUpgrade:
    host: str
    kind: str  # first-control-plane | control-plane | worker
    from_version: str
    to_version: str
    steps: tuple[str, ...]
    evictions: tuple[str, ...] = ()
    blocking_pdbs: tuple[str, ...] = ()
    done: bool = False
    uncordon_only: bool = False


@dataclass(frozen=True)
class UpgradePlan:
    running: str
    target: str
    source: str
    nodes: tuple[NodeUpgrade, ...]
    serial: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pending(self) -> tuple[NodeUpgrade, ...]:
        return tuple(n for n in self.nodes if not n.done or n.uncordon_only)


# --- facts from kubectl JSON (parsed by k8s/nodes.py and k8s/drain.py) ----------------------------------


def parse_nodes(doc: str) -> dict[str, NodeFacts]:
    """`kubectl get nodes -o json` -> the upgrade's facts of each valid Node."""
    return {
        n.name: NodeFacts(
            n.name,
            n.ready,
            n.kubelet_version.lstrip("v"),
            n.unschedulable,
            CORDON_ANNOTATION in n.annotations,
        )
        for n in k8s_nodes.parse_nodes(doc)
    }


def parse_pods(doc: str) -> list[PodFacts]:
    """`kubectl get pods -A -o json` -> the pods still running or pending (finished ones are not evicted)."""
    return [
        PodFacts(p.namespace, p.name, p.node, p.labels, "DaemonSet" in p.owner_kinds, p.mirror)
        for p in k8s_drain.parse_pods(doc)
        if not p.finished
    ]


def parse_pdbs(doc: str) -> list[PdbFacts]:
    """`kubectl get pdb -A -o json` -> the budgets, with their matchLabels."""
    return [
        PdbFacts(b.namespace, b.name, (b.selector or {}).get("matchLabels") or {}, b.disruptions_allowed)
        for b in k8s_drain.parse_budgets(doc)
    ]


def drain_preview(
    node: str, pods: Sequence[PodFacts], pdbs: Sequence[PdbFacts]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(pods a drain of `node` evicts, PDBs that would block it: they allow no disruption of such a pod)."""
    evicted = [p for p in pods if p.node == node and not p.daemonset and not p.mirror]
    blocking = sorted(
        {
            f"{b.namespace}/{b.name}"
            for b in pdbs
            for p in evicted
            if b.namespace == p.namespace
            and b.selector
            and b.disruptions_allowed < 1
            and all(p.labels.get(k) == v for k, v in b.selector.items())
        }
    )
    return tuple(f"{p.namespace}/{p.name}" for p in evicted), tuple(blocking)


# --- package steps for `kubernetes_source: pkgs` (golden-tested; cannot run on the lab) -------------------


def apt_sources(target: str, apt_base: str) -> str:
    """The deb822 source `up` writes (apt_repository `kubernetes`), pointed at the target's minor repository."""
    v = KubeVersion.parse(target)
    return (
        f"Types: deb\nURIs: {apt_base}/v{v.major}.{v.minor}/deb/\nSuites: /\n"
        "Signed-By: /etc/apt/keyrings/kubernetes.gpg\n"
    )


def pkgs_steps(kind: str, target: str, apt_base: str) -> tuple[str, ...]:
    """Shell lines one node runs for `pkgs`: the target minor's apt repository (source + its key), kubeadm
    unheld/installed/held, kubeadm upgrade, then kubelet and kubectl the same way. Each line is idempotent.
    `apt_base` is the role's kubernetes_apt_base (the per-minor repositories live under it)."""
    v = KubeVersion.parse(target)
    pkg = f"{v}-*"
    q = shlex.quote
    uri = f"{apt_base}/v{v.major}.{v.minor}/deb/"
    return (
        f"printf %s {q(apt_sources(target, apt_base))} > /etc/apt/sources.list.d/kubernetes.sources",
        f"curl -fsSL --retry 3 --max-time 120 {q(uri + 'Release.key')} | gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes.gpg",
        f"apt-get update -q {APT_NET}",
        "apt-mark unhold kubeadm",
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {APT_NET} --allow-change-held-packages {q('kubeadm=' + pkg)}",
        "apt-mark hold kubeadm",
        shlex.join(kubeadm_upgrade(kind, target)),
        "apt-mark unhold kubelet kubectl",
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {APT_NET} --allow-change-held-packages "
        + " ".join(q(f"{p}={pkg}") for p in ("kubelet", "kubectl")),
        "apt-mark hold kubelet kubectl",
        "systemctl daemon-reload",
        "systemctl restart kubelet",
    )


def kubeadm_upgrade(kind: str, target: str) -> list[str]:
    """`kubeadm upgrade apply vX` on the first control plane, `kubeadm upgrade node` everywhere else."""
    v = KubeVersion.parse(target)
    if kind != "first-control-plane":
        return ["kubeadm", "upgrade", "node"]
    # a pre-release (the lab's rehearsal target) needs kubeadm's explicit consent
    return ["kubeadm", "upgrade", "apply", f"v{v}", "--yes"] + (["--allow-experimental-upgrades"] if v.pre else [])


def bundle_steps(kind: str, target: str) -> tuple[str, ...]:
    """What one node does for `bundle`: the kubernetes role at the target (binaries + images from the bundle),
    kubeadm upgrade, kubelet restart (shown in the plan; the role runs through the engine)."""
    return (
        f"kprov role kubernetes at {KubeVersion.parse(target)} (bundle binaries and images)",
        shlex.join(kubeadm_upgrade(kind, target)),
        "systemctl restart kubelet",
    )


def node_steps(kind: str, source: str, target: str, apt_base: str = "") -> tuple[str, ...]:
    inner = pkgs_steps(kind, target, apt_base) if source == "pkgs" else bundle_steps(kind, target)
    return ("cordon", "drain", *inner, f"wait Ready at v{KubeVersion.parse(target)}", "uncordon")


# --- the plan ---------------------------------------------------------------------------------------------


def build_plan(
    *,
    control_planes: Sequence[str],
    workers: Sequence[str],
    nodes: Mapping[str, NodeFacts],
    apiservers: Mapping[str, str],
    target: str,
    source: str,
    pods: Sequence[PodFacts] = (),
    pdbs: Sequence[PdbFacts] = (),
    serial: int = 1,
    apt_base: str = "",
) -> UpgradePlan:
    """Validate the step and the cluster's health, then order the nodes. InputError (nothing changed) when the
    step is not allowed or a node is missing / NotReady."""
    if serial < 1:
        raise InputError(f"--serial {serial}: must be 1 or more", hint="--serial 1 upgrades one worker at a time")
    missing = [n for n in (*control_planes, *workers) if n not in nodes]
    if missing:
        raise InputError(
            f"node {missing[0]} is not part of the cluster: no node upgraded",
            hint="join it first (`kprov up` or `kprov add-node`), or remove it from the inventory",
        )
    versions = [apiservers.get(cp, "") for cp in control_planes]
    if not all(versions):
        cp = control_planes[versions.index("")]
        raise InputError(
            f"{cp}: no API server found (is it initialised?): no node upgraded",
            hint="`kprov status` shows the control planes; `kprov up` builds the cluster",
        )
    running = min(versions, key=lambda v: KubeVersion.parse(v).sort_key())
    check_upgrade_step(running, target)
    newer = [
        n
        for n, f in nodes.items()
        if f.kubelet and KubeVersion.parse(f.kubelet).sort_key() > KubeVersion.parse(target).sort_key()
    ]
    if newer:
        raise InputError(
            f"the kubelet on {newer[0]} ({nodes[newer[0]].kubelet}) is newer than the target {target}",
            hint="kubelet must never be newer than the API server: upgrade to at least that version",
        )
    not_ready = [n for n in (*control_planes, *workers) if not nodes[n].ready]
    if not_ready:
        raise InputError(
            f"node {not_ready[0]} is NotReady: no node upgraded",
            hint="an upgrade starts from a healthy cluster: fix the node (`kprov status`), then rerun",
        )
    plan: list[NodeUpgrade] = []
    for i, name in enumerate((*control_planes, *workers)):
        kind = "worker" if name in workers else ("first-control-plane" if i == 0 else "control-plane")
        f = nodes[name]
        at_target = same_version(f.kubelet, target) and (kind == "worker" or same_version(apiservers[name], target))
        evict, blocking = drain_preview(name, pods, pdbs)
        steps = ("uncordon",) if at_target else node_steps(kind, source, target, apt_base)
        plan.append(
            NodeUpgrade(
                name,
                kind,
                apiservers.get(name) or f.kubelet,
                target,
                steps,
                evict,
                blocking,
                done=at_target,
                uncordon_only=at_target and f.unschedulable and f.cordoned_by_kprov,
            )
        )
    notes: tuple[str, ...] = ()
    if KubeVersion.parse(target).pre:
        notes = (f"{target} is a pre-release: kubeadm upgrade apply runs with --allow-experimental-upgrades",)
    return UpgradePlan(running, target, source, tuple(plan), serial, notes)
