"""Cluster commands: smoke, reset, add-node, status, kubeconfig."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from provisioner.actions import kubeconfig as kc
from provisioner.cli.common import Common, confirm_removal, run_options, yes_option
from provisioner.cli.run import execute, run_plays
from provisioner.engine.roles import Play, load_plays
from provisioner.errors import ExitStatus, InputError, SmokeFailed
from provisioner.inventory.loader import load_inventory
from provisioner.k8s.context import cluster_vars, kubeconfig_path
from provisioner.k8s.kubectl import Kubectl
from provisioner.k8s.smoke import run_smoke as _run_smoke
from provisioner.k8s.smoke import smoke_vars
from provisioner.reporting.console import make_console
from provisioner.secrets import Redactor


def run_smoke(common: Common, keep: bool = False, node_port: int | None = None) -> int:
    inv = load_inventory(common.inventory)
    console = make_console(stderr=common.log_format == "json")
    redactor = Redactor()
    variables = smoke_vars(inv, cluster_vars(inv, redactor), common.extra_vars)
    if node_port is not None:
        variables["smoke_node_port"] = node_port
    kubectl = Kubectl(kubeconfig_path(inv), inv.control_planes[0], common.run_options().connect)
    try:
        result = _run_smoke(inv, kubectl, variables, keep=keep,
                            progress=lambda m: console.print(f"[dim]smoke: {m}[/dim]"))
    finally:
        kubectl.close()
    if common.log_format == "json":
        for p in result.probes:
            click.echo(json.dumps({"smoke": p.node, "phase": p.phase, "url": p.url, "status": p.status,
                                   "latency_ms": p.latency_ms, "ok": p.ok}))
    table = Table(title="SMOKE TEST", title_justify="left", show_edge=False)
    for col in ("phase", "node", "url", "http", "latency"):
        table.add_column(col)
    for p in result.probes:
        table.add_row(p.phase, p.node, p.url, f"[green]{p.status}[/green]" if p.ok else f"[red]{p.status or p.detail}[/red]",
                      f"{p.latency_ms} ms")
    if result.probes:
        console.print(table)
    if not result.ok:
        raise SmokeFailed(f"smoke test failed: {result.error or 'not every node answered'}",
                          hint="see the pod status and events above; `kprov status` shows node health",
                          detail=result.diagnostics or None)
    console.print(f"[green]smoke test passed: the NodePort answered through all {len(inv.hosts)} nodes[/green]")
    return int(ExitStatus.SUCCESS)


@click.command()
@click.option("--keep", is_flag=True, help="Keep the smoke namespace for inspection.")
@click.option("--node-port", type=click.IntRange(30000, 32767), help="NodePort to use (default 30080).")
@run_options(tasks=False)
def smoke(common: Common, keep: bool, node_port: int | None) -> int:
    """Deploy a hello app, reach its NodePort through every node, scale, check again, clean up."""
    return run_smoke(common, keep=keep, node_port=node_port)


@click.command()
@click.option("--containerd-state", is_flag=True, help="Also wipe containerd's images and containers.")
@yes_option
@run_options
def reset(common: Common, containerd_state: bool, yes: bool) -> int:
    """Tear Kubernetes down on the hosts (kubeadm reset + leftovers). Idempotent; `up` rebuilds.

    Asks for confirmation on a terminal (showing the hosts); without one it needs --yes."""
    inv = load_inventory(common.inventory)
    plays = [Play(role="reset", hosts="all")]
    whole_cluster = not common.limit
    if not (common.list_hosts or common.list_tasks or common.list_tags):
        from provisioner.actions.selection import select_hosts

        hosts = select_hosts(inv, common.limit) if common.limit else [h.name for h in inv.hosts]
        wiped = "Kubernetes and containerd's images" if containerd_state else "Kubernetes"
        confirm_removal(f"reset removes {wiped} from {len(hosts)} host(s) of cluster {inv.cluster.name}",
                        hosts, yes)
    common = _with_vars(common, reset_containerd_state=containerd_state)
    rc = execute(common, plays, inventory=inv, title="RESET")
    if rc == 0 and whole_cluster:
        _offer_kubeconfig_removal(inv.cluster.name, common.inventory, yes)
    return rc


def _offer_kubeconfig_removal(cluster: str, inventory: str, yes: bool) -> None:
    """After a reset of the whole cluster, its merged kubeconfig context points at nothing: offer to drop it."""
    holders = kc.merged_into(cluster)
    if not holders:
        return
    name = kc.context_name(cluster)
    where = ", ".join(map(str, holders))
    if not yes and sys.stdin.isatty() and click.confirm(f"remove context {name} from {where}?", default=False,
                                                        err=True):
        _status_removed(kc.remove(cluster))
        return
    click.echo(f"context {name} stays in {where}; remove it with: kprov kubeconfig -i {inventory} --remove",
               err=True)


@click.command("add-node")
@click.option("--host", "names", required=True, multiple=True, help="Inventory host(s) to add.")
@run_options
def add_node(common: Common, names: tuple[str, ...]) -> int:
    """Provision and join only the given host(s); the control plane only mints a token."""
    inv = load_inventory(common.inventory)
    known = {h.name: h for h in inv.hosts}
    for n in names:
        if n not in known:
            raise InputError(f"--host {n!r} is not in {common.inventory}", hint="add it to hosts: first")
        if known[n].is_control_plane and n == inv.control_planes[0].name:
            raise InputError(f"--host {n!r} is the first control plane", hint="use `kprov up` to build the cluster")
    pattern = ",".join(names)
    plays: list[Play] = []
    for p in load_plays():
        if p.role == "control_plane" or any(q.role == p.role for q in plays):
            continue
        plays.append(Play(p.role, pattern, p.serial or p.role == "join"))
    # the cni play also runs on the first control plane: it re-applies the CNI manifest (flannel learns the
    # new node IP) and labels the new node; with the bridge CNI every node needs a route to its pod subnet
    cni_hosts = "all" if inv.cluster.cni == "bridge" else f"{inv.control_planes[0].name},{pattern}"
    plays = [p if p.role != "cni" else Play("cni", cni_hosts) for p in plays]
    # a new control plane is a new backend of the built-in balancer (docs/ha.md): haproxy reloads on every
    # control plane (vip) or every node (local); the API servers are not restarted
    if any(known[n].is_control_plane for n in names) and inv.cluster.api_endpoint in ("vip", "local"):
        lb_hosts = "control_plane" if inv.cluster.api_endpoint == "vip" else "all"
        plays = [p if p.role != "loadbalancer" else Play("loadbalancer", lb_hosts) for p in plays]
    return execute(common, plays, inventory=inv, title="ADD-NODE")


@click.command()
@run_options
def status(common: Common) -> int:
    """Per node: role, versions, Ready, and drift from the desired state (a quick plan)."""
    inv = load_inventory(common.inventory)
    console = Console()
    kubectl = Kubectl(kubeconfig_path(inv), inv.control_planes[0], common.run_options().connect)
    nodes: dict[str, dict] = {}
    try:
        res = kubectl.run(["get", "nodes", "-o", "json"], timeout=30)
        if res.rc == 0:
            from provisioner.facts.parsers import parse_kubectl_nodes

            nodes = {n.name: {"ready": n.ready, "kubelet": n.kubelet_version} for n in parse_kubectl_nodes(res.stdout)}
    except Exception as exc:  # noqa: BLE001 - status reports what it can
        console.print(f"[yellow]cannot query the API server: {exc}[/yellow]")
    finally:
        kubectl.close()
    from provisioner.reporting.sinks import JsonSink

    with open(os.devnull, "w", encoding="utf-8") as devnull:
        report = run_plays(common, inv, load_plays(), JsonSink(devnull), check=True)
    table = Table(title=f"STATUS {inv.cluster.name}", title_justify="left", show_edge=False)
    for col in ("node", "roles", "kubelet", "ready", "drift"):
        table.add_column(col)
    for h in inv.hosts:
        r = report.hosts.get(h.name)
        drift = "unreachable" if r and r.unreachable else (f"{r.changed} change(s) pending" if r and r.changed else "none")
        if r and r.failed:
            drift = f"check failed: {r.first_error[:60]}"
        n = nodes.get(h.name, {})
        ready = "[green]Ready[/green]" if n.get("ready") else ("[red]NotReady[/red]" if n else "not joined")
        table.add_row(h.name, ",".join(h.roles), n.get("kubelet", "-"), ready, drift)
    console.print(table)
    _print_nearest_cert_expiry(inv, common, console)
    return int(ExitStatus.UNREACHABLE) if report.unreachable_hosts else int(ExitStatus.SUCCESS)


def _print_nearest_cert_expiry(inv, common: Common, console: Console) -> None:
    """The certificate that expires first (`kprov certs check` lists them all)."""
    from provisioner.actions.certs import check_certs
    from provisioner.errors import KprovError

    try:
        report = check_certs(inv, common.run_options().connect)
    except KprovError as exc:
        console.print(f"[yellow]certificates not checked: {exc.message}[/yellow]")
        return
    n = report.nearest
    if n is not None:
        days = n.days_left(report.now)
        color = "red" if days < 30 else "green"
        console.print(f"nearest certificate expiry: {n.name} on {n.host}, {n.expires:%Y-%m-%d} "
                      f"([{color}]{days} days[/{color}]; `kprov certs check` lists all)")


@click.command()
@click.option("-i", "--inventory", required=True, type=click.Path(dir_okay=False), help="Inventory YAML file.")
@click.option("--merge", is_flag=True,
              help="Merge into your kubeconfig ($KUBECONFIG's first existing file, else ~/.kube/config) as "
                   "context kprov-<cluster>.")
@click.option("--use", "use_context", is_flag=True, help="With --merge: also make it the current context.")
@click.option("--print", "print_config", is_flag=True, help="Print the kubeconfig itself on stdout.")
@click.option("--remove", is_flag=True, help="Remove the merged kprov-<cluster> entries from your kubeconfig.")
def kubeconfig(inventory: str, merge: bool, use_context: bool, print_config: bool, remove: bool) -> int:
    """Print the path of the cluster's admin kubeconfig (or, with --print, the kubeconfig itself).

    --merge follows kubectl's rules: an existing entry is updated where it is, a new one goes to the first
    existing file of $KUBECONFIG (else ~/.kube/config); the current context changes only with --use or
    when none is set; symlinks and file modes are kept. Status messages go to stderr.
    """
    if use_context and not merge:
        raise InputError("--use needs --merge", hint="kprov kubeconfig -i INVENTORY --merge --use")
    if remove and merge:
        raise InputError("--remove and --merge exclude each other", hint="give one of them")
    inv = load_inventory(inventory, resolve=False)
    path = kubeconfig_path(inv)
    if remove:
        removed = kc.remove(inv.cluster.name)
        _status_removed(removed)
        return 0
    if not path.is_file():
        raise InputError(f"no kubeconfig for cluster {inv.cluster.name} at {path}",
                         hint="run `kprov up` first (it fetches the admin kubeconfig)")
    if merge:
        report = kc.merge(path, inv.cluster.name, use=use_context)
        where = ", ".join(str(f) for f in report.written) or "your kubeconfig (already up to date)"
        note = ("now the current context" if report.switched
                else f"current context stays {report.current_context}" if report.current_context != report.context
                else "the current context")
        click.echo(f"merged context {report.context} into {where}; {note}", err=True)
        for f in report.readable_by_others:
            click.secho(f"warning: {f} is readable by other users; it now holds cluster-admin credentials "
                        f"(chmod 600 {f})", fg="yellow", err=True)
    if print_config:
        click.echo(path.read_text(encoding="utf-8"), nl=False)
    else:
        click.echo(str(path))
    return 0


def _status_removed(report: kc.RemoveReport) -> None:
    if not report.written:
        click.echo(f"no context {report.context} in your kubeconfig: nothing to remove", err=True)
        return
    note = "; it was the current context: none is set now" if report.was_current else ""
    click.echo(f"removed context {report.context} from {', '.join(map(str, report.written))}{note}", err=True)


def merge_kubeconfig(source: Path, target: Path, cluster: str, use_context: bool = False) -> None:
    """Merge into one given kubeconfig file (see provisioner.actions.kubeconfig.merge)."""
    kc.merge(source, cluster, use=use_context, files=[target])


def _with_vars(common: Common, **extra: object) -> Common:
    from dataclasses import replace

    return replace(common, extra_vars={**common.extra_vars, **extra})


COMMANDS = (smoke, reset, add_node, status, kubeconfig)
