"""Cluster commands: smoke, reset, add-node, status, kubeconfig. Each parses, calls its action, renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from provisioner.actions import kubeconfig as kc
from provisioner.actions import reset as reset_action
from provisioner.actions.add_node import AddNodeOptions
from provisioner.actions.add_node import add_node as add_node_action
from provisioner.actions.status import status as status_action
from provisioner.cli.common import Common, confirm_removal, render_run, run_options, warn, yes_option
from provisioner.inventory.loader import load_inventory


@click.command()
@click.option("--containerd-state", is_flag=True, help="Also wipe containerd's images and containers.")
@yes_option
@run_options
def reset(common: Common, containerd_state: bool, yes: bool) -> int:
    """Tear Kubernetes down on the hosts (kubeadm reset + leftovers). Idempotent; `up` rebuilds.

    Asks for confirmation on a terminal (showing the hosts); without one it needs --yes."""
    inv = load_inventory(common.inventory)
    if not common.listing_only:
        wiped = "Kubernetes and containerd's images" if containerd_state else "Kubernetes"
        hosts = reset_action.targets(common, inv)
        confirm_removal(f"reset removes {wiped} from {len(hosts)} host(s) of cluster {inv.cluster.name}", hosts, yes)
    report = reset_action.reset(
        common, reset_action.ResetOptions(containerd_state), common.sink, inventory=inv, warn=warn
    )
    rc = render_run(report.run, common)
    if report.stale_kubeconfigs:
        _offer_kubeconfig_removal(inv.cluster.name, common.inventory, yes)
    return rc


def _offer_kubeconfig_removal(cluster: str, inventory: str, yes: bool) -> None:
    """After a reset of the whole cluster, its merged kubeconfig context points at nothing: offer to drop it."""
    holders = kc.merged_into(cluster)
    if not holders:
        return
    name = kc.context_name(cluster)
    where = ", ".join(map(str, holders))
    if (
        not yes
        and sys.stdin.isatty()
        and click.confirm(f"remove context {name} from {where}?", default=False, err=True)
    ):
        _status_removed(kc.remove(cluster))
        return
    click.echo(f"context {name} stays in {where}; remove it with: kprov kubeconfig -i {inventory} --remove", err=True)


@click.command("add-node")
@click.option("--host", "names", required=True, multiple=True, help="Inventory host(s) to add.")
@run_options
def add_node(common: Common, names: tuple[str, ...]) -> int:
    """Provision and join only the given host(s); the control plane only mints a token."""
    return render_run(add_node_action(common, AddNodeOptions(names), common.sink, warn=warn), common)


@click.command()
# a quiet plan (nothing listed, no diff, no events) and a table
@run_options(tasks=("limit", "tags", "skip_tags", "forks", "roles_dir"), without=("log_format", "log_file"))
def status(common: Common) -> int:
    """Per node: role, versions, Ready, and drift from the desired state (a quick plan)."""
    report = status_action(common)
    console = Console()
    if report.api_error:
        console.print(f"[yellow]cannot query the API server: {report.api_error}[/yellow]")
    table = Table(title=f"STATUS {report.cluster}", title_justify="left", show_edge=False)
    for col in ("node", "roles", "kubelet", "ready", "drift"):
        table.add_column(col)
    for n in report.nodes:
        ready = {True: "[green]Ready[/green]", False: "[red]NotReady[/red]", None: "not joined"}[n.ready]
        table.add_row(n.host, ",".join(n.roles), "-" if n.ready is None else n.kubelet, ready, n.drift)
    console.print(table)
    if report.certs_error:
        console.print(f"[yellow]certificates not checked: {report.certs_error}[/yellow]")
    c = report.nearest_cert
    if c is not None:
        color = "red" if c.days_left < 30 else "green"
        console.print(
            f"nearest certificate expiry: {c.name} on {c.host}, {c.expires:%Y-%m-%d} "
            f"([{color}]{c.days_left} days[/{color}]; `kprov certs check` lists all)"
        )
    return report.exit_status


@click.command()
@click.option("-i", "--inventory", required=True, type=click.Path(dir_okay=False), help="Inventory YAML file.")
@click.option(
    "--merge",
    is_flag=True,
    help="Merge into your kubeconfig ($KUBECONFIG's first existing file, else ~/.kube/config) as "
    "context kprov-<cluster>.",
)
@click.option("--use", "use_context", is_flag=True, help="With --merge: also make it the current context.")
@click.option("--print", "print_config", is_flag=True, help="Print the kubeconfig itself on stdout.")
@click.option("--remove", is_flag=True, help="Remove the merged kprov-<cluster> entries from your kubeconfig.")
def kubeconfig(inventory: str, merge: bool, use_context: bool, print_config: bool, remove: bool) -> int:
    """Print the path of the cluster's admin kubeconfig (or, with --print, the kubeconfig itself).

    --merge follows kubectl's rules: an existing entry is updated where it is, a new one goes to the first
    existing file of $KUBECONFIG (else ~/.kube/config); the current context changes only with --use or
    when none is set; symlinks and file modes are kept. Status messages go to stderr.
    """
    report = kc.kubeconfig(kc.KubeconfigOptions(inventory, merge=merge, use=use_context, remove=remove))
    if report.removed is not None:
        _status_removed(report.removed)
        return 0
    if report.merged is not None:
        merged = report.merged
        where = ", ".join(str(f) for f in merged.written) or "your kubeconfig (already up to date)"
        note = (
            "now the current context"
            if merged.switched
            else f"current context stays {merged.current_context}"
            if merged.current_context != merged.context
            else "the current context"
        )
        click.echo(f"merged context {merged.context} into {where}; {note}", err=True)
        for f in merged.readable_by_others:
            click.secho(
                f"warning: {f} is readable by other users; it now holds cluster-admin credentials (chmod 600 {f})",
                fg="yellow",
                err=True,
            )
    path = report.path
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
