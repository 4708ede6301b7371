"""`kprov remove-node`: take one node out of the cluster, safely by default, also when its machine is gone.

remove() is the command's entry: a surviving control plane's API, the plan (shown through a callback), the
safety check and the confirmation, then the removal under the cluster lock. plan_removal() only reads (kubectl
get, the etcd member list and health, an SSH connect to the host) and returns a RemovalPlan; carry_out()
carries a plan out. Every step looks at the cluster's state before it
acts, so a removal interrupted anywhere is finished by running it again:

  cordon -> drain (Eviction API: PodDisruptionBudgets hold it up to the timeout) -> [control plane: remove
  its etcd member from a surviving control plane, drop its kubeadm ClusterStatus entry, re-render the
  balancer on the remaining nodes] -> stop kubelet (it would register the Node again) -> delete the Node
  -> clean the host with the reset role limited to it (skipped with a warning when the host is unreachable).

kubectl and etcd requests run on a surviving control plane over SSH, against its own API server
(https://<node_ip>:6443) and its own etcd member: they work whatever endpoint the kubeconfigs name, and
kubectl there has the cluster's version.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from provisioner.actions._remote import session
from provisioner.actions.certs import ADMIN_CONF, local_server
from provisioner.actions.run import RunRequest, run_plays
from provisioner.engine.events import RunReport
from provisioner.engine.roles import Play, load_plays
from provisioner.errors import InputError, KprovError
from provisioner.inventory.model import Host, Inventory, frozen_map
from provisioner.k8s import etcd_members as em
from provisioner.k8s.drain import DrainPlan, PodAction, drain_plan
from provisioner.k8s.kubeadm import KUBEADM_CONFIG_GET, parse_kubeadm_config
from provisioner.k8s.nodes import nodes_not_in, parse_node, parse_nodes
from provisioner.transport.ssh import CommandResult, ConnectOptions, SSHHost

ETCD_MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
BALANCED_MODES = ("vip", "local")
LB_ROLE = "loadbalancer"

RunRole = Callable[[Inventory, Sequence[Play]], RunReport]


@dataclass(frozen=True)
class RemoveNodeOptions:
    host: str
    force: bool = False
    drain_timeout_s: int = 300
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    dry_run: bool = False  # only the plan: nothing changed


@dataclass(frozen=True)
class EtcdChange:
    via: str  # the control plane whose etcd answers
    members: tuple[em.EtcdMember, ...]  # before the removal
    member: em.EtcdMember | None  # the removed host's member (None: not, or no longer, a member)


@dataclass(frozen=True)
class BalancerChange:
    mode: str  # cluster.api_endpoint, "" when the inventory has none
    hosts: tuple[str, ...]  # nodes whose balancer config is re-rendered without the host
    note: str


@dataclass(frozen=True)
class RemovalPlan:
    host: str
    in_inventory: bool
    control_plane: bool
    reachable: bool
    unreachable_why: str
    api_via: str  # the surviving control plane kubectl and etcd requests run on
    node_exists: bool
    cordoned: bool
    drain: DrainPlan | None
    etcd: EtcdChange | None
    balancer: BalancerChange | None
    refusals: tuple[str, ...]  # unsafe without --force
    blockers: tuple[str, ...]  # refused even with --force
    warnings: tuple[str, ...]

    @property
    def cleanup(self) -> bool:
        return self.in_inventory and self.reachable

    def steps(self) -> list[str]:
        """What remove_node() does, in order, one line each (what the preview shows)."""
        out = []
        if self.node_exists:
            out.append(f"cordon Node {self.host}" + (" (already cordoned)" if self.cordoned else ""))
            if self.drain is not None and self.reachable:
                out.append(
                    f"drain {self.host}: evict {len(self.drain.moving)} pod(s)"
                    + (
                        f", {len(self.drain.pdb_waits)} held by a PodDisruptionBudget until replacements are Ready"
                        if self.drain.pdb_waits
                        else ""
                    )
                )
            elif self.drain is not None:
                out.append(
                    f"no drain (host unreachable): its {len(self.drain.moving)} pod(s) go with the Node "
                    "and their controllers recreate them elsewhere"
                )
        else:
            out.append(f"Node {self.host}: not in the cluster (already deleted)")
        if self.etcd is not None:
            out.append(
                f"remove etcd member {self.etcd.member.name or self.etcd.member.id} ({self.etcd.member.id}) "
                f"via {self.etcd.via}: {len(self.etcd.members)} -> {len(self.etcd.members) - 1} members"
                if self.etcd.member
                else f"etcd: {self.host} is not a member (already removed)"
            )
        if self.balancer is not None:
            if self.balancer.mode in BALANCED_MODES and self.reachable:
                out.append(f"stop and disable keepalived/haproxy on {self.host}")
            if self.balancer.hosts or self.control_plane:
                out.append(self.balancer.note)
        if self.node_exists:
            if self.reachable:
                out.append(f"stop kubelet on {self.host} (it would register the Node again)")
            out.append(f"delete Node {self.host}")
        if self.cleanup:
            out.append(f"clean {self.host}: the reset role limited to it (kubeadm reset, CNI, iptables, kubelet)")
        else:
            out.append(
                f"skip the host cleanup of {self.host}: "
                + (self.unreachable_why or "not in the inventory (no address)")
            )
        return out


@dataclass(frozen=True)
class Step:
    name: str
    outcome: str  # "done" | "already done" | "skipped"
    detail: str = ""


@dataclass(frozen=True)
class RemovalReport:
    host: str
    steps: tuple[Step, ...]
    warnings: tuple[str, ...]
    seconds: float

    @property
    def changed(self) -> int:
        return sum(s.outcome == "done" for s in self.steps)


@dataclass(frozen=True)
class RemovalOutcome:
    """The plan, the control planes that did not answer, and the report (None: a dry run, or not confirmed)."""

    plan: RemovalPlan
    down: tuple[str, ...]
    report: RemovalReport | None = None


def remove(
    inv: Inventory,
    req: RunRequest,
    opts: RemoveNodeOptions,
    *,
    open_sink: Callable[[], Any],
    show_plan: Callable[[RemovalPlan, Sequence[str]], None] = lambda _p, _d: None,
    confirm: Callable[[RemovalPlan], bool] = lambda _p: True,
    progress: Callable[[str], None] = lambda _m: None,
) -> RemovalOutcome:
    """`kprov remove-node`: plan through a surviving control plane, hand it to `show_plan` (with the control
    planes that did not answer), refuse an unsafe plan (InputError), ask `confirm`, then carry it out under the
    cluster lock. The roles it runs (balancer, reset) report to one sink from `open_sink`, each with a recap."""
    ssh, down = open_api(inv, opts.host, opts.connect)
    try:
        api = ClusterApi(ssh)
        plan = plan_removal(inv, opts, api)
        show_plan(plan, down)
        if opts.dry_run:
            return RemovalOutcome(plan, tuple(down))
        check_allowed(plan, opts.force)
        if not confirm(plan):
            return RemovalOutcome(plan, tuple(down))
        sink = open_sink()
        whole = replace(req, limit=None)

        def run_role(inventory: Inventory, plays: Sequence[Play]) -> RunReport:
            report = run_plays(whole, inventory, plays, sink)
            sink.recap(report, "REMOVE-NODE " + ", ".join(p.role for p in plays).upper())
            return report

        from provisioner.engine.lock import cluster_lock

        with cluster_lock(inv.cluster.name, f"kprov remove-node --host {opts.host}"):
            report = carry_out(inv, opts, plan, api, run_role, progress=progress)
    finally:
        ssh.close()
    return RemovalOutcome(plan, tuple(down), report)


# --- the cluster as one surviving control plane sees it ------------------------------------------------


class ClusterApi:
    """kubectl and etcd requests on one control plane, over one SSH session."""

    def __init__(self, ssh: SSHHost) -> None:
        self.ssh = ssh
        self.server = local_server(ssh.host)

    @property
    def name(self) -> str:
        return self.ssh.host.name

    def kubectl(self, *args: str, timeout: float = 120) -> CommandResult:
        return self.ssh.run(["kubectl", "--kubeconfig", ADMIN_CONF, "--server", self.server, *args], timeout=timeout)

    def kubectl_ok(self, *args: str, what: str, timeout: float = 120) -> str:
        res = self.kubectl(*args, timeout=timeout)
        if res.rc != 0:
            raise KprovError(
                f"{self.name}: {what} failed (exit {res.rc})",
                detail=res.stderr_tail(),
                hint="check the API server (`kprov status`); rerun remove-node: it resumes",
            )
        return res.stdout

    def script(self, text: str, what: str, hint: str | None = None, timeout: float = 120) -> str:
        res = self.ssh.script(text, timeout=timeout)
        if res.rc != 0:
            raise KprovError(
                f"{self.name}: {what} failed (exit {res.rc})",
                detail=res.stderr_tail(),
                hint=hint or "rerun remove-node: it resumes where it stopped",
            )
        return res.stdout

    def etcd_members(self) -> list[em.EtcdMember]:
        listing = self.script(em.list_script(), "listing the etcd members", hint=em.CURL_HINT)
        members = em.parse_members(listing)
        health = self.script(em.health_script(members), "etcd member health")
        return em.parse_members(listing + health)


def open_api(inv: Inventory, removed: str, connect: ConnectOptions) -> tuple[SSHHost, list[str]]:
    """An SSH session to the first reachable control plane other than `removed`, and the unreachable ones."""
    if (
        removed
        and not [cp for cp in inv.control_planes if cp.name != removed]
        and any(cp.name == removed for cp in inv.control_planes)
    ):
        raise InputError(
            f"refusing to remove {removed}: it is the last control plane",
            hint="`kprov reset -i INVENTORY` tears the whole cluster down",
        )
    failed: list[str] = []
    for cp in inv.control_planes:
        if cp.name == removed:
            continue
        ssh = SSHHost(cp, connect)
        try:
            ssh.connect()
            return ssh, failed
        except KprovError as exc:
            ssh.close()
            failed.append(f"{cp.name}: {exc.message}")
    raise InputError(
        f"no reachable control plane other than {removed}" + (f" ({'; '.join(failed)})" if failed else ""),
        hint="kprov removes a node through a surviving control plane: bring one back, or "
        "`kprov reset` the cluster when it is the last one",
    )


def _reachable(host: Host, connect: ConnectOptions) -> str:
    """'' when an SSH session opens, else why not."""
    try:
        with session(host, connect) as ssh:
            ssh.run(["true"], timeout=30)
        return ""
    except KprovError as exc:
        return f"unreachable ({exc.message})"


def inventory_without(inv: Inventory, name: str) -> Inventory:
    """The inventory as it will be once the user removes `name` from it."""
    groups = {g: replace(grp, hosts=tuple(h for h in grp.hosts if h != name)) for g, grp in inv.groups.items()}
    return replace(inv, hosts=tuple(h for h in inv.hosts if h.name != name), groups=frozen_map(groups))


def _balancer_plays() -> list[Play]:
    return [p for p in load_plays() if p.role == LB_ROLE]


def _balancer(inv: Inventory, name: str) -> BalancerChange:
    mode = str(getattr(inv.cluster, "api_endpoint", None) or "")
    rest = tuple(h.name for h in inventory_without(inv, name).hosts)
    if mode not in BALANCED_MODES:
        return BalancerChange(
            mode,
            (),
            f"balancer: not managed by kprov (api_endpoint {mode or 'external'}): "
            f"take {name} out of your load balancer's backends yourself",
        )
    if not _balancer_plays():
        return BalancerChange(
            mode,
            (),
            f"balancer ({mode}): this kprov has no {LB_ROLE} role to re-render: "
            f"take {name} out of the haproxy backends by hand",
        )
    return BalancerChange(
        mode, rest, f"balancer ({mode}): re-render the {LB_ROLE} role on {', '.join(rest)} without {name}"
    )


# --- plan ----------------------------------------------------------------------------------------------


def plan_removal(inv: Inventory, opts: RemoveNodeOptions, api: ClusterApi) -> RemovalPlan:
    """What removing opts.host would do. Reads only: never changes the cluster or a host."""
    name = opts.host
    host = next((h for h in inv.hosts if h.name == name), None)
    node_json = api.kubectl("get", "node", name, "-o", "json", "--ignore-not-found")
    if node_json.rc != 0:
        raise KprovError(
            f"{api.name}: kubectl get node {name} failed (exit {node_json.rc})",
            detail=node_json.stderr_tail(),
            hint="check the API server (`kprov status`)",
        )
    node = parse_node(node_json.stdout)
    if host is None and node is None:
        raise InputError(
            f"--host {name!r}: neither a host of {inv.path} nor a Node of cluster {inv.cluster.name}",
            hint=f"hosts: {', '.join(h.name for h in inv.hosts)}",
        )
    control_plane = bool(host and host.is_control_plane) or bool(node and node.is_control_plane)
    why = _reachable(host, opts.connect) if host is not None else ""
    reachable = host is not None and not why
    refusals: list[str] = []
    blockers: list[str] = []
    warnings: list[str] = []

    drain = None
    if node is not None:
        pods = api.kubectl_ok(
            "get",
            "pods",
            "-A",
            "--field-selector",
            f"spec.nodeName={name}",
            "-o",
            "json",
            what="listing the node's pods",
        )
        pdbs = api.kubectl_ok("get", "pdb", "-A", "-o", "json", what="listing PodDisruptionBudgets")
        drain = drain_plan(name, pods, pdbs, force=opts.force)
        if drain.needs_force and reachable:
            refusals.append(
                f"{len(drain.needs_force)} pod(s) without a controller would be lost: "
                + ", ".join(p.ref for p in drain.needs_force)
            )

    etcd = balancer = None
    if control_plane:
        others = [h for h in inv.control_planes if h.name != name]
        cp_nodes = _control_plane_nodes(api) - {name}
        if not others and not cp_nodes:
            blockers.append(f"{name} is the last control plane")
        members = api.etcd_members()
        node_ip = host.node_ip if host else (node.internal_ip if node else "")
        mine = next((m for m in members if m.is_host(name, node_ip)), None)
        etcd = EtcdChange(api.name, tuple(members), mine)
        if mine is not None:
            why_not = em.removal_refusal(len(members), sum(m.healthy for m in members), mine.healthy)
            if why_not and len(members) <= 1:
                blockers.append(why_not)
            elif why_not:
                refusals.append(why_not)
        balancer = _balancer(inv, name)
    elif str(getattr(inv.cluster, "api_endpoint", "") or "") == "local":
        balancer = BalancerChange("local", (), f"balancer (local): stop {name}'s own API proxy (no other node changes)")
    if not reachable:
        warnings.append(
            f"{name}: {why or 'not in the inventory'}: the host is not cleaned "
            "(kubelet, containers and files stay on it if it ever comes back: run `kprov reset` on it)"
        )
    return RemovalPlan(
        name,
        host is not None,
        control_plane,
        reachable,
        why,
        api.name,
        node is not None,
        bool(node and node.unschedulable),
        drain,
        etcd,
        balancer,
        tuple(refusals),
        tuple(blockers),
        tuple(warnings),
    )


def _control_plane_nodes(api: ClusterApi) -> set[str]:
    out = api.kubectl_ok("get", "nodes", "-o", "json", what="listing the Nodes")
    return {n.name for n in parse_nodes(out) if n.is_control_plane}


def check_allowed(plan: RemovalPlan, force: bool) -> None:
    """InputError (exit 2, nothing changed) when the plan is unsafe: blockers always, refusals without --force."""
    if plan.blockers:
        raise InputError(
            f"refusing to remove {plan.host}: {plan.blockers[0]}",
            hint="`kprov reset -i INVENTORY` tears the whole cluster down",
        )
    if plan.refusals and not force:
        raise InputError(
            f"refusing to remove {plan.host}: {plan.refusals[0]}",
            hint="rerun with --force to remove it anyway (nothing was changed)",
        )


# --- apply ---------------------------------------------------------------------------------------------


def carry_out(
    inv: Inventory,
    opts: RemoveNodeOptions,
    plan: RemovalPlan,
    api: ClusterApi,
    run_role: RunRole,
    progress: Callable[[str], None] = lambda _m: None,
) -> RemovalReport:
    """Carry the plan out (check_allowed first). Every step re-reads the state it changes: rerunnable."""
    check_allowed(plan, opts.force)
    t0 = time.monotonic()
    name = plan.host
    steps: list[Step] = []
    warnings = list(plan.warnings)

    def step(what: str, outcome: str, detail: str = "") -> None:
        steps.append(Step(what, outcome, detail))
        progress(f"{what}: {outcome}" + (f" ({detail})" if detail else ""))

    if plan.node_exists:
        if plan.cordoned:
            step("cordon", "already done")
        else:
            api.kubectl_ok("cordon", name, what=f"cordon {name}")
            step("cordon", "done")
        if plan.reachable:
            _drain(api, name, opts)
            step("drain", "done", f"{len(plan.drain.moving) if plan.drain else 0} pod(s) evicted or deleted")
        else:
            step("drain", "skipped", "host unreachable: its pods go with the Node")

    if plan.etcd is not None:
        member = plan.etcd.member
        if member is None:
            step("etcd member", "already done")
        else:
            out = api.script(em.remove_member_script(member.id), f"removing etcd member {member.name or member.id}")
            step("etcd member", "done" if "removed" in out else "already done", f"{member.name} {member.id}")
        if plan.reachable:
            # its etcd is out of the cluster: stop it, and keep `kubeadm reset` from trying to remove it again
            with session(inv.host(name), opts.connect) as ssh:
                ssh.run(["rm", "-f", ETCD_MANIFEST], timeout=60)
        if _drop_cluster_status(api, name):
            step("kubeadm ClusterStatus entry", "done")
    if plan.balancer is not None and plan.balancer.mode in BALANCED_MODES and plan.reachable:
        # keepalived first: the VIP moves to a remaining control plane before this one's haproxy goes
        with session(inv.host(name), opts.connect) as ssh:
            out = ssh.script(_STOP_BALANCER, timeout=120).stdout
        step("balancer on the host", "done" if "stopped" in out else "already done", "keepalived/haproxy disabled")
    if plan.balancer is not None and plan.balancer.hosts:
        rest = inventory_without(inv, name)
        plays = [
            Play(p.role, ",".join(h for h in plan.balancer.hosts if h in _select(rest, p.hosts)) or "none-left")
            for p in _balancer_plays()
        ]
        report = run_role(rest, [p for p in plays if p.hosts != "none-left"])
        if report.exit_status():
            raise KprovError(
                f"re-rendering the balancer without {name} failed on "
                f"{', '.join(report.failed_hosts + report.unreachable_hosts)}",
                hint="fix it and rerun remove-node: it resumes",
            )
        step("balancer", "done" if report.changed else "already done", plan.balancer.note)
    elif plan.balancer is not None and plan.control_plane:
        warnings.append(plan.balancer.note)

    if plan.node_exists:
        if plan.reachable:
            with session(inv.host(name), opts.connect) as ssh:
                ssh.script(
                    "if systemctl is-active -q kubelet 2>/dev/null; then systemctl stop kubelet; fi\n", timeout=120
                )
        res = api.kubectl("delete", "node", name, "--ignore-not-found", "--wait=true", "--timeout=120s", timeout=180)
        if res.rc != 0:
            raise KprovError(
                f"{api.name}: kubectl delete node {name} failed (exit {res.rc})",
                detail=res.stderr_tail(),
                hint="rerun remove-node: it resumes",
            )
        step("delete Node", "done" if "deleted" in res.stdout else "already done")
    else:
        step("delete Node", "already done")

    if plan.cleanup:
        report = run_role(inv, [Play("reset", name)])
        if report.exit_status():
            host_recap = report.hosts.get(name)
            raise KprovError(
                f"{name}: host cleanup failed: {host_recap.first_error if host_recap else 'see above'}",
                hint=f"the Node is gone; rerun remove-node (or `kprov reset -l {name}`) to finish",
            )
        step("host cleanup", "done" if report.changed else "already done", "reset role")
    else:
        step("host cleanup", "skipped", plan.unreachable_why or "not in the inventory")
    return RemovalReport(name, tuple(steps), tuple(warnings), round(time.monotonic() - t0, 1))


_STOP_BALANCER = """
for s in keepalived haproxy; do
  if systemctl is-enabled -q "$s" 2>/dev/null || systemctl is-active -q "$s" 2>/dev/null; then
    systemctl disable --now "$s" >/dev/null 2>&1 && echo "stopped $s"
  fi
done
true
"""


def _select(inv: Inventory, pattern: str) -> list[str]:
    groups = inv.group_members()
    out: list[str] = []
    for part in (p.strip() for p in pattern.split(",") if p.strip()):
        base, _, sl = part.partition("[")
        members = groups.get(base, [base] if any(h.name == base for h in inv.hosts) else [])
        if sl:
            a, colon, b = sl.rstrip("]").partition(":")
            members = members[int(a) if a else None : int(b) if b else None] if colon else members[int(a) : int(a) + 1]
        out.extend(m for m in members if m not in out)
    return out


def _drain(api: ClusterApi, name: str, opts: RemoveNodeOptions) -> None:
    args = ["drain", name, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={opts.drain_timeout_s}s"]
    if opts.force:
        args.append("--force")
    res = api.kubectl(*args, timeout=opts.drain_timeout_s + 120)
    if res.rc == 0:
        return
    left = ""
    pods = api.kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={name}", "-o", "json")
    pdbs = api.kubectl("get", "pdb", "-A", "-o", "json")
    if pods.rc == 0 and pdbs.rc == 0:
        still = drain_plan(name, pods.stdout, pdbs.stdout, force=opts.force)
        left = ", ".join(f"{p.ref}" + (f" (PodDisruptionBudget {p.pdb})" if p.pdb else "") for p in still.moving)
    raise KprovError(
        f"drain of {name} did not finish within {opts.drain_timeout_s}s" + (f"; still on it: {left}" if left else ""),
        detail=res.stderr_tail(),
        hint="a PodDisruptionBudget may allow no disruption (scale up its workload) or a pod may not "
        "stop; rerun remove-node (optionally with a larger --drain-timeout): it resumes",
    )


def _drop_cluster_status(api: ClusterApi, name: str) -> bool:
    """kubeadm (< 1.22) lists each control plane in the kubeadm-config ClusterStatus; `kubeadm reset` drops
    the entry of a reachable one, a dead one's stays and misleads later joins. True when it was dropped."""
    res = api.kubectl(*KUBEADM_CONFIG_GET)
    if res.rc != 0:
        return False
    stored = parse_kubeadm_config(res.stdout)
    if name not in stored.api_endpoints:
        return False
    status = {**stored.cluster_status, "apiEndpoints": {k: v for k, v in stored.api_endpoints.items() if k != name}}
    patch = json.dumps({"data": {"ClusterStatus": yaml.safe_dump(status, sort_keys=False)}})
    api.kubectl_ok(
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "kubeadm-config",
        "--type",
        "merge",
        "-p",
        patch,
        what="updating kubeadm's ClusterStatus",
    )
    return True


# --- `up`: Nodes the inventory no longer lists ---------------------------------------------------------


def unknown_nodes(inv: Inventory, connect: ConnectOptions) -> list[str]:
    """Nodes in the cluster that are not hosts of the inventory ([] when no control plane answers)."""
    try:
        ssh, _ = open_api(inv, "", connect)
    except KprovError:
        return []
    try:
        res = ClusterApi(ssh).kubectl("get", "nodes", "-o", "json", timeout=60)
    finally:
        ssh.close()
    return nodes_not_in(res.stdout, (h.name for h in inv.hosts)) if res.rc == 0 else []


def describe_pods(plan: DrainPlan) -> list[tuple[str, str, str]]:
    """(pod, owner, what happens) rows for the preview, the moving pods first."""
    order = {
        a: i
        for i, a in enumerate(
            [
                PodAction.EVICT,
                PodAction.DELETE,
                PodAction.FINISHED,
                PodAction.NEEDS_FORCE,
                PodAction.DAEMONSET,
                PodAction.STATIC,
            ]
        )
    }
    rows = []
    for p in sorted(plan.pods, key=lambda p: (order[p.action], p.ref)):
        what = p.action.value
        if p.pdb:
            what += f", PodDisruptionBudget {p.pdb}" + (" (waits: no disruption allowed now)" if p.pdb_waits else "")
        if p.emptydir and p.action is PodAction.EVICT:
            what += ", emptyDir data lost"
        rows.append((p.ref, p.owner or "-", what))
    return rows
