"""`kprov upgrade`: preflight from facts (nothing changed when it refuses), then node by node in kubeadm's order.

The pure half (rules, order, drain preview, pkgs steps) is upgrade_plan.py; this module gathers the facts and
carries the plan out. Every node: cordon (annotated, so only kprov's cordons are undone) -> drain -> binaries
at the target (bundle: the kubernetes role through the engine; pkgs: apt) -> kubeadm upgrade -> kubelet restart
-> Ready at the target -> uncordon. A rerun after an interruption starts again from the facts.

`upgrade()` is the command's entry: the plan (shown through a callback before anything changes), then, with
`apply`, the run under the maintenance locks; `prepare()` and `run()` are its two halves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from provisioner.actions._remote import checked, maintenance_lock, on_hosts, session
from provisioner.actions.certs import ADMIN_CONF, local_server
from provisioner.actions.run import RunRequest, run_plays
from provisioner.actions.upgrade_plan import (
    CORDON_ANNOTATION,
    DRAIN_ARGS,
    NodeUpgrade,
    UpgradePlan,
    build_plan,
    kubeadm_upgrade,
    parse_nodes,
    parse_pdbs,
    parse_pods,
    pkgs_steps,
)
from provisioner.actions.versions import NodeVersions, probe_versions
from provisioner.errors import InputError, KprovError, TaskFailed
from provisioner.inventory.model import Host, Inventory
from provisioner.k8s.kubectl import api_ready
from provisioner.k8s.versions import parse_version, same_version
from provisioner.transport.ssh import ConnectOptions, SSHHost

DEFAULT_APT_BASE = ""  # "": upgrade() takes -e, the cluster's vars or the kubernetes role's kubernetes_apt_base


@dataclass(frozen=True)
class UpgradeOptions:
    target: str | None = None
    serial: int = 1
    drain_timeout_s: int = 300
    ready_timeout_s: int = 300
    apt_base: str = DEFAULT_APT_BASE
    apply: bool = False  # False: preflight and plan only, nothing changed (`kprov upgrade` without --yes)


@dataclass(frozen=True)
class NodeResult:
    host: str
    from_version: str
    to_version: str
    seconds: float
    status: str  # upgraded | uncordoned | unchanged | failed | not started
    message: str = ""


@dataclass(frozen=True)
class UpgradeReport:
    plan: UpgradePlan
    nodes: tuple[NodeResult, ...]

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.status in ("failed", "not started"))


@dataclass(frozen=True)
class UpgradeOutcome:
    """The plan, and the report of the run (None when nothing ran: no --yes, or nothing pending)."""

    plan: UpgradePlan
    report: UpgradeReport | None = None


def apt_base_of(inv: Inventory, extra_vars: Mapping[str, Any]) -> str:
    """kubernetes_apt_base as `up` would see it: -e, then the cluster's vars, then the kubernetes role's default."""
    from provisioner.engine.roles import load_role

    return str(
        extra_vars.get("kubernetes_apt_base")
        or inv.cluster.vars.get("kubernetes_apt_base")
        or load_role("kubernetes").defaults.get("kubernetes_apt_base", "")
    )


def upgrade(
    inv: Inventory,
    req: RunRequest,
    opts: UpgradeOptions,
    *,
    open_sink: Callable[[], Any],
    show_plan: Callable[[UpgradePlan], None] = lambda _p: None,
    progress: Callable[[str], None] = lambda _m: None,
) -> UpgradeOutcome:
    """`kprov upgrade`: preflight and plan (handed to `show_plan` before any change); with opts.apply and
    something pending, the upgrade node by node under the maintenance locks. The binaries of a bundle
    cluster are installed by the `bundle` and `kubernetes` plays of `up`, limited to the node, events to a
    sink from `open_sink`."""
    connect = req.connect()
    opts = dataclasses.replace(opts, apt_base=opts.apt_base or apt_base_of(inv, req.extra_vars))
    locked = maintenance_lock(inv, connect, "kprov upgrade") if opts.apply else contextlib.nullcontext()
    with locked:
        plan = prepare(inv, connect, opts)
        show_plan(plan)
        if not plan.pending or not opts.apply:
            return UpgradeOutcome(plan)

        def install_role(tinv: Inventory, host: str) -> bool:
            # the plays of `up` that put Kubernetes binaries and images on a host (bundle delivery, then install);
            # after the first control plane (upgraded first: it has the target bundle) serves it to the others
            from provisioner.actions.add_node import SEEDED_ROLES, seed_vars, seeded
            from provisioner.engine.roles import Play, load_plays

            seed = inv.control_planes[0].name
            site = [p for p in load_plays() if p.role in SEEDED_ROLES]
            if host == seed:
                plays, one = [Play(p.role, host) for p in site], dataclasses.replace(req, limit=(host,))
            else:
                plays = [seeded(p, seed, host) for p in site]
                one = dataclasses.replace(req, limit=(seed, host), extra_vars={**req.extra_vars, **seed_vars(seed)})
            return int(run_plays(one, tinv, plays, open_sink()).exit_status()) == 0

        return UpgradeOutcome(plan, run(inv, connect, plan, opts, install_role=install_role, progress=progress))


def target_inventory(inv: Inventory, target: str, only: str | None = None) -> Inventory:
    """The inventory at the target version; with `only`, reduced to that host and the first control plane, the
    bundle's seed (the binaries of one node are installed as if the cluster were those two: nothing is sent to,
    or asked of, the nodes still waiting their turn; the seed, upgraded first, only serves the target bundle)."""
    cluster = dataclasses.replace(inv.cluster, kubernetes_version=target)
    if only is None:
        return dataclasses.replace(inv, cluster=cluster)
    keep = {only, inv.control_planes[0].name}
    groups = {
        name: dataclasses.replace(g, hosts=tuple(h for h in g.hosts if h in keep)) for name, g in inv.groups.items()
    }
    hosts = tuple(h for h in inv.hosts if h.name in keep)
    return dataclasses.replace(inv, cluster=cluster, hosts=hosts, groups=groups)


def _kubectl(ssh: SSHHost, *args: str, timeout: float = 120) -> str:
    res = checked(
        ssh,
        ssh.run(["kubectl", "--kubeconfig", ADMIN_CONF, *args], timeout=timeout),
        f"kubectl {' '.join(args[:2])}",
        hint="is the API server healthy? (`kprov status`)",
    )
    return res.stdout


def prepare(inv: Inventory, connect: ConnectOptions, opts: UpgradeOptions) -> UpgradePlan:
    """Preflight and plan. Refuses (InputError, exit 2, nothing changed) on a bad step or an unhealthy cluster."""
    target = str(parse_version(opts.target or inv.cluster.kubernetes_version, "target version"))
    versions = probe_versions(inv.hosts, connect)
    down = {n: v for n, v in versions.items() if isinstance(v, KprovError)}
    if down:
        name, err = next(iter(down.items()))
        raise InputError(f"{name}: {err.message}: no node upgraded", hint="every node must be reachable to upgrade")
    cps, cp1 = inv.control_planes, inv.control_planes[0]
    with session(cp1, connect) as ssh:
        nodes = parse_nodes(_kubectl(ssh, "get", "nodes", "-o", "json"))
        pods = parse_pods(_kubectl(ssh, "get", "pods", "-A", "-o", "json"))
        pdbs = parse_pdbs(_kubectl(ssh, "get", "pdb", "-A", "-o", "json"))

    # each control plane's own API server (etcd included in its readiness) answers
    def ready(ssh: SSHHost) -> bool:
        return api_ready(ssh, local_server(ssh.host), ADMIN_CONF)

    unhealthy = [n for n, ok in on_hosts(cps, connect, ready).items() if ok is not True]
    if unhealthy:
        raise InputError(
            f"{unhealthy[0]}: API server (or its etcd) not ready: no node upgraded",
            hint="an upgrade starts from a healthy control plane: check it (`kprov status`), then rerun",
        )
    apiservers = {h.name: v.apiserver for h in cps if isinstance(v := versions[h.name], NodeVersions)}
    plan = build_plan(
        control_planes=[h.name for h in cps],
        workers=[h.name for h in inv.workers],
        nodes=nodes,
        apiservers=apiservers,
        target=target,
        source=inv.cluster.kubernetes_source,
        pods=pods,
        pdbs=pdbs,
        serial=opts.serial,
        apt_base=opts.apt_base,
    )
    if plan.pending:
        _check_source(inv, target)
    return plan


def _check_source(inv: Inventory, target: str) -> None:
    """The binaries of the target exist: for `bundle`, cluster.bundle is a bundle of the target (for `pkgs` the
    per-minor apt repository is only known to the hosts: its absence fails the first node's apt step)."""
    if inv.cluster.kubernetes_source == "bundle":
        from provisioner.bundle import read_manifest

        try:
            have = read_manifest(inv.cluster.bundle or "").kubernetes_version
        except (KprovError, OSError) as exc:
            raise InputError(
                f"cluster.bundle {inv.cluster.bundle}: {exc}: no node upgraded",
                hint=f"point cluster.bundle at a bundle of {target} (`kprov bundle build`)",
            ) from None
        if not same_version(have, target):
            raise InputError(
                f"cluster.bundle is a bundle of {have}, not of the target {target}: no node upgraded",
                hint=f"point cluster.bundle at a bundle of {target} (`kprov bundle build`)",
            )


def _wait_ready_script(node: str, target: str, timeout_s: int) -> str:
    k = f"kubectl --kubeconfig {ADMIN_CONF}"
    jp = shlex.quote('{.status.nodeInfo.kubeletVersion} {.status.conditions[?(@.type=="Ready")].status}')
    return f"""
end=$(( $(date +%s) + {timeout_s} ))
until [ "$({k} get node {shlex.quote(node)} -o jsonpath={jp} 2>/dev/null)" = {shlex.quote(f"v{target} True")} ]; do
  [ "$(date +%s)" -lt "$end" ] || {{ echo "{node} not Ready at v{target} within {timeout_s}s" >&2; exit 1; }}
  sleep 3
done
"""


def run(
    inv: Inventory,
    connect: ConnectOptions,
    plan: UpgradePlan,
    opts: UpgradeOptions,
    *,
    install_role: Callable[[Inventory, str], bool],
    progress: Callable[[str], None] = lambda _m: None,
) -> UpgradeReport:
    """Carry the plan out: control planes one by one, then workers `serial` at a time. A failed node stops
    the upgrade before any further node is touched; a rerun resumes from the facts."""
    cp1 = inv.control_planes[0]
    k = ["kubectl", "--kubeconfig", ADMIN_CONF]

    def on_cp1(argv: list[str], what: str, timeout: float = 120) -> str:
        with session(cp1, connect) as ssh:
            return checked(ssh, ssh.run(argv, timeout=timeout), what).stdout

    def uncordon(name: str) -> None:
        on_cp1([*k, "uncordon", name], f"uncordon {name}")
        on_cp1([*k, "annotate", "node", name, f"{CORDON_ANNOTATION}-"], f"unannotate {name}")

    def one(n: NodeUpgrade) -> NodeResult:
        t0 = time.monotonic()
        host = inv.host(n.host)
        try:
            if n.done:
                if n.uncordon_only:
                    progress(f"{n.host}: already at v{plan.target}, uncordoning")
                    uncordon(n.host)
                    return NodeResult(
                        n.host, n.from_version, n.to_version, round(time.monotonic() - t0, 1), "uncordoned"
                    )
                return NodeResult(n.host, n.from_version, n.to_version, 0.0, "unchanged")
            progress(f"{n.host}: cordon and drain")
            on_cp1(
                [*k, "annotate", "--overwrite", "node", n.host, f"{CORDON_ANNOTATION}={plan.target}"],
                f"annotate {n.host}",
            )
            on_cp1([*k, "cordon", n.host], f"cordon {n.host}")
            with session(cp1, connect) as ssh:
                res = ssh.run(
                    [*k, "drain", n.host, *DRAIN_ARGS, f"--timeout={opts.drain_timeout_s}s"],
                    timeout=opts.drain_timeout_s + 60,
                )
            if res.rc != 0:
                raise TaskFailed(
                    f"{n.host}: drain did not finish within {opts.drain_timeout_s}s "
                    f"(a PodDisruptionBudget or a stuck pod): node left cordoned, not upgraded",
                    hint="fix what blocks the eviction, then rerun `kprov upgrade` (it resumes)",
                    detail=res.stderr_tail(),
                )
            with session(host, connect) as ssh:
                if plan.source == "pkgs":
                    progress(f"{n.host}: packages at {plan.target}, kubeadm upgrade, kubelet restart")
                    script = "set -e\n" + "\n".join(pkgs_steps(n.kind, plan.target, opts.apt_base)) + "\n"
                    checked(ssh, ssh.script(script, timeout=1800), "package upgrade")
                else:
                    progress(f"{n.host}: binaries and images of {plan.target} from the bundle")
                    if not install_role(target_inventory(inv, plan.target, only=n.host), n.host):
                        raise TaskFailed(
                            f"{n.host}: installing {plan.target} from the bundle failed: not upgraded",
                            hint="see the task output above; rerun `kprov upgrade` (it resumes)",
                        )
                    # resumable: an API server already at the target was applied by an interrupted run
                    already = n.kind == "first-control-plane" and same_version(
                        _apiserver_version(host, connect), plan.target
                    )
                    if not already:
                        progress(f"{n.host}: {shlex.join(kubeadm_upgrade(n.kind, plan.target))}")
                        checked(
                            ssh,
                            ssh.run(kubeadm_upgrade(n.kind, plan.target), timeout=1800),
                            "kubeadm upgrade",
                            hint=f"see /var/log on {n.host}; rerun `kprov upgrade` to resume",
                        )
                    checked(
                        ssh,
                        ssh.script("systemctl daemon-reload && systemctl restart kubelet", timeout=120),
                        "kubelet restart",
                    )
            progress(f"{n.host}: waiting for Ready at v{plan.target}")
            with session(cp1, connect) as ssh:
                checked(
                    ssh,
                    ssh.script(
                        _wait_ready_script(n.host, plan.target, opts.ready_timeout_s), timeout=opts.ready_timeout_s + 60
                    ),
                    f"{n.host} Ready at the target",
                )
            uncordon(n.host)
            return NodeResult(n.host, n.from_version, n.to_version, round(time.monotonic() - t0, 1), "upgraded")
        except KprovError as exc:
            return NodeResult(
                n.host,
                n.from_version,
                n.to_version,
                round(time.monotonic() - t0, 1),
                "failed",
                exc.message + (f" ({exc.detail.strip().splitlines()[-1]})" if exc.detail else ""),
            )

    results: list[NodeResult] = []
    cps = [n for n in plan.nodes if n.kind != "worker"]
    workers = [n for n in plan.nodes if n.kind == "worker"]
    for n in cps:
        results.append(one(n))
        if results[-1].status == "failed":
            break
    else:
        for i in range(0, len(workers), plan.serial):
            batch = workers[i : i + plan.serial]
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                results.extend(pool.map(one, batch))
            if any(r.status == "failed" for r in results):
                break
    seen = {r.host for r in results}
    results.extend(
        NodeResult(n.host, n.from_version, n.to_version, 0.0, "not started")
        for n in plan.nodes
        if n.host not in seen and not n.done
    )
    return UpgradeReport(plan, tuple(results))


def _apiserver_version(host: Host, connect: ConnectOptions) -> str:
    v = probe_versions([host], connect).get(host.name)
    return v.apiserver if isinstance(v, NodeVersions) else ""
