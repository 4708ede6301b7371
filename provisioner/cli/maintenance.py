"""Day-two commands: `kprov certs check|renew`, `kprov etcd snapshot|restore`, `kprov upgrade [--reconfigure]`.

Each parses its arguments, calls a function of provisioner/actions/ and renders the report it returns. The
actions that change hosts (upgrade --yes, reconfigure --yes, certs renew, etcd restore) take the locks `up`
takes themselves (actions/_remote.maintenance_lock): a concurrent run is refused, exit 2.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from provisioner.cli.common import Common, run_options
from provisioner.errors import ExitStatus, InputError
from provisioner.inventory.loader import load_inventory
from provisioner.k8s.context import kubeconfig_path

if TYPE_CHECKING:
    from provisioner.actions.upgrade import UpgradeReport
    from provisioner.actions.upgrade_plan import UpgradePlan
    from provisioner.inventory.model import Inventory
    from provisioner.k8s.drift import Drift


def day_two_console(common: Common) -> Console:
    """The console of the day-two commands (maintenance, remove-node)."""
    # with --log-format json, stdout carries only JSON lines: the human view goes to stderr; piped output
    # (CI logs) gets room for a whole table row instead of rich's 80 columns
    console = Console(stderr=common.log_format == "json")
    return console if console.is_terminal else Console(stderr=common.log_format == "json", width=120)


# --- certs ----------------------------------------------------------------------------------------------


@click.group()
def certs() -> None:
    """Certificates of the cluster: check expiry, renew."""


@certs.command("check")
@click.option(
    "--warn-days",
    default=30,
    show_default=True,
    type=int,
    help="Exit 1 when a certificate expires within this many days.",
)
@run_options(tasks=("limit",), without=("extra", "log_file"))
def certs_check(common: Common, warn_days: int) -> int:
    """Per control plane, every kubeadm certificate with its expiry and days left; kubelet rotation per node."""
    from provisioner.actions.certs import check_certs

    inv = load_inventory(common.inventory)
    report = check_certs(inv, common.run_options().connect, warn_days=warn_days, limit=common.limit)
    console = day_two_console(common)
    if common.log_format == "json":
        for c in report.certs:
            click.echo(
                json.dumps(
                    {
                        "host": c.host,
                        "certificate": c.name,
                        "expires": c.expires.isoformat(),
                        "days_left": c.days_left(report.now),
                        "authority": c.authority or None,
                        "ca": c.is_ca,
                        "externally_managed": c.externally_managed,
                        "expiring": c.days_left(report.now) < warn_days,
                    }
                )
            )
        for k in report.kubelets:
            click.echo(
                json.dumps(
                    {
                        "host": k.host,
                        "kubelet_rotate_certificates": k.rotate,
                        "kubelet_client_certificate": k.client_cert or None,
                    }
                )
            )
        for host, (msg, _rc) in report.errors.items():
            click.echo(json.dumps({"host": host, "error": msg}))
    table = Table(title=f"CERTIFICATES {inv.cluster.name}", title_justify="left", show_edge=False)
    for col in ("control plane", "certificate", "expires (UTC)", "days left", "signed by"):
        table.add_column(col, no_wrap=True)
    for c in sorted(report.certs, key=lambda c: (c.host, c.is_ca, c.name)):
        days = c.days_left(report.now)
        shown = f"[red]{days}[/red]" if days < warn_days else str(days)
        table.add_row(
            c.host,
            c.name + (" (CA)" if c.is_ca else ""),
            c.expires.strftime("%Y-%m-%d %H:%M"),
            shown,
            c.authority or ("-" if c.is_ca else "ca (kubeconfig)"),
        )
    console.print(table)
    for k in report.kubelets:
        state = {True: "[green]on[/green]", False: "[red]off[/red]", None: "not joined"}[k.rotate]
        console.print(f"kubelet client certificate rotation on {k.host}: {state}")
    for host, (msg, _rc) in report.errors.items():
        console.print(f"[red]{host}: {msg}[/red]")
    if report.nearest is not None:
        n = report.nearest
        console.print(
            f"nearest expiry: {n.name} on {n.host}, {n.expires:%Y-%m-%d %H:%M UTC} ({n.days_left(report.now)} days)"
        )
    if report.errors:
        return max(rc for _m, rc in report.errors.values())
    if report.expiring:
        console.print(
            f"[red]{len(report.expiring)} certificate(s) expire within {warn_days} days: "
            f"run `kprov certs renew -i {common.inventory}`[/red]"
        )
        return int(ExitStatus.TASK_FAILED)
    if report.rotation_off:
        console.print(
            f"[red]kubelet certificate rotation is off on {', '.join(report.rotation_off)}: "
            "set rotateCertificates: true (kubelet_extra_config)[/red]"
        )
        return int(ExitStatus.TASK_FAILED)
    return int(ExitStatus.SUCCESS)


@certs.command("renew")
@run_options(tasks=("limit",), without=("extra", "log_file"))
def certs_renew(common: Common) -> int:
    """kubeadm certs renew all, one control plane at a time (static pods restarted, API healthy before the
    next), then the admin kubeconfig re-fetched (0600)."""
    from provisioner.actions.certs import renew_certs

    inv = load_inventory(common.inventory)
    console = day_two_console(common)
    report = renew_certs(
        inv,
        common.run_options().connect,
        limit=common.limit,
        kubeconfig_dest=str(kubeconfig_path(inv)),
        progress=lambda m: console.print(f"[dim]certs: {m}[/dim]"),
    )
    for s in report.steps:
        if common.log_format == "json":
            click.echo(json.dumps({"host": s.host, "renewed": list(s.renewed), "seconds": s.seconds}))
        console.print(
            f"{s.host}: {len(s.renewed)} certificate(s) renewed, static pods restarted, "
            f"API server healthy ({s.seconds:.0f} s)"
        )
    console.print(f"admin kubeconfig re-fetched: {report.kubeconfig} (0600)")
    return int(ExitStatus.SUCCESS)


# --- etcd -----------------------------------------------------------------------------------------------


@click.group()
def etcd() -> None:
    """etcd snapshot and restore (kubeadm's stacked etcd)."""


@etcd.command("snapshot")
@click.option("--output", type=click.Path(file_okay=False), help="Directory (default ~/.kprov/snapshots/<cluster>).")
@click.option("--keep", type=int, help="Keep only the N newest snapshots of this cluster in the directory.")
@run_options(tasks=False, without=("extra", "log_file"))
def etcd_snapshot(common: Common, output: str | None, keep: int | None) -> int:
    """A consistent snapshot from a healthy member, copied here 0600 with its sha256 and a JSON of metadata."""
    from pathlib import Path

    from provisioner.actions.etcd import snapshot

    inv = load_inventory(common.inventory)
    report = snapshot(inv, common.run_options().connect, output=Path(output) if output else None, keep=keep)
    if common.log_format == "json":
        click.echo(
            json.dumps(
                {
                    **report.metadata,
                    "path": str(report.path),
                    "seconds": report.seconds,
                    "pruned": [str(p) for p in report.pruned],
                }
            )
        )
    console = day_two_console(common)
    console.print(
        f"snapshot of {inv.cluster.name} from member {report.member} (revision {report.revision}): "
        f"{report.path} ({report.size / 1e6:.1f} MB, sha256 {report.sha256[:16]}..., {report.seconds:.1f} s)"
    )
    for p in report.pruned:
        console.print(f"pruned {p}")
    return int(ExitStatus.SUCCESS)


@etcd.command("restore")
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False), help="Snapshot file (.db).")
@click.option("--yes", is_flag=True, help="Confirm: everything written to the cluster after the snapshot is lost.")
@run_options(tasks=False, without=("extra", "log_file"))
def etcd_restore(common: Common, source: str, yes: bool) -> int:
    """Verify the checksum, stop the control planes, restore every member (new cluster token), start, wait."""
    from pathlib import Path

    from provisioner.actions.etcd import restore

    inv = load_inventory(common.inventory)
    console = day_two_console(common)
    report = restore(
        inv,
        common.run_options().connect,
        source=Path(source),
        yes=yes,
        progress=lambda m: console.print(f"[dim]etcd restore: {m}[/dim]"),
    )
    if common.log_format == "json":
        click.echo(
            json.dumps(
                {
                    "restored": str(report.snapshot),
                    "members": list(report.members),
                    "seconds": report.seconds,
                    "old_data_dir_suffix": report.kept_aside,
                }
            )
        )
    console.print(
        f"restored {report.snapshot.name} on {', '.join(report.members)} in {report.seconds:.0f} s; "
        f"API server healthy; the previous data directory is kept as /var/lib/etcd{report.kept_aside}"
    )
    return int(ExitStatus.SUCCESS)


# --- upgrade --------------------------------------------------------------------------------------------


@click.command()
@click.option("--to", "target", help="Target version (default: the inventory's kubernetes_version).")
@click.option("--serial", default=1, show_default=True, type=int, help="Workers upgraded at a time.")
@click.option("--drain-timeout", default=300, show_default=True, type=int, help="Seconds a drain may take.")
@click.option("--yes", is_flag=True, help="Upgrade (without it: preflight and plan only, nothing changed).")
@click.option(
    "--reconfigure",
    is_flag=True,
    help="Apply configuration drift (API server SANs, component extra args, kube-proxy config) instead of "
    "a version upgrade, one control plane at a time.",
)
# a node's install run: no --limit of its own, and no --tags/--skip-tags (skipping a step of the install would
# leave a node half upgraded while the upgrade carried on)
@run_options(tasks=("diff", "roles_dir"))
def upgrade(common: Common, target: str | None, serial: int, drain_timeout: int, yes: bool, reconfigure: bool) -> int:
    """Preflight, plan, then kubeadm upgrade node by node: first control plane, other control planes, workers
    --serial at a time (cordon, drain, binaries, kubeadm upgrade, kubelet restart, Ready, uncordon).
    With --reconfigure: the cluster's stored configuration brought to the inventory's (see docs/maintenance.md)."""
    from provisioner.actions.upgrade import UpgradeOptions
    from provisioner.actions.upgrade import upgrade as upgrade_cluster

    inv = load_inventory(common.inventory)
    console = day_two_console(common)
    if reconfigure:
        if target:
            raise InputError(
                "--reconfigure changes the configuration, not the version: --to is not allowed with it",
                hint="run `kprov upgrade --to V --yes` first, then `kprov upgrade --reconfigure --yes`",
            )
        return _reconfigure(common, inv, console, yes)
    opts = UpgradeOptions(target=target, serial=serial, drain_timeout_s=drain_timeout, apply=yes)
    outcome = upgrade_cluster(
        inv,
        common,
        opts,
        open_sink=common.sink,
        show_plan=lambda plan: _render_plan(common, console, inv, plan),
        progress=lambda m: console.print(f"[dim]upgrade: {m}[/dim]"),
    )
    if not outcome.plan.pending:
        console.print(f"every node runs {outcome.plan.target}: nothing to do")
        return int(ExitStatus.SUCCESS)
    if outcome.report is None:
        console.print("nothing changed: rerun with --yes to upgrade")
        return int(ExitStatus.SUCCESS)
    return _render_recap(common, console, outcome.report)


def _reconfigure(common: Common, inv: Inventory, console: Console, yes: bool) -> int:
    from provisioner.actions.reconfigure import ReconfigureOptions, reconfigure_cluster

    opts = ReconfigureOptions(extra_vars=dict(common.extra_vars), apply=yes)
    outcome = reconfigure_cluster(
        inv, common.run_options().connect, opts, progress=lambda m: console.print(f"[dim]reconfigure: {m}[/dim]")
    )
    report = outcome.report
    if report is None:
        if outcome.drift is None:
            console.print(f"{inv.control_planes[0].name} is not initialised: nothing to reconfigure")
            return int(ExitStatus.SUCCESS)
        _render_drift(common, console, outcome.drift)
        console.print(
            "nothing changed: rerun with --yes to reconfigure" if outcome.drift else "no drift: nothing to do"
        )
        return int(ExitStatus.SUCCESS)
    _render_drift(common, console, report.drift)
    if not report.drift:
        console.print("no drift: nothing to do")
        return int(ExitStatus.SUCCESS)
    for step in report.steps:
        console.print(
            f"{step.host}: {', '.join(step.actions) or 'nothing needed (already done)'} ({step.seconds:.0f} s)"
        )
        if common.log_format == "json":
            click.echo(json.dumps({"reconfigure": step.host, "actions": list(step.actions), "seconds": step.seconds}))
    console.print(f"cluster: {', '.join(report.cluster_actions) or '-'}; no drift left ({report.seconds:.0f} s)")
    return int(ExitStatus.SUCCESS)


def _render_drift(common: Common, console: Console, drift: Drift) -> None:
    if common.log_format == "json":
        for item in drift.items:
            click.echo(
                json.dumps({"drift": item.field, "kind": item.kind, "cluster": item.stored, "inventory": item.wanted})
            )
    for item in drift.items:
        console.print(f"drift: {item.line()}")


def _render_plan(common: Common, console: Console, inv: Inventory, plan: UpgradePlan) -> None:
    table = Table(
        title=f"UPGRADE PLAN {inv.cluster.name}: {plan.running} -> {plan.target} ({plan.source})",
        title_justify="left",
        show_edge=False,
    )
    for col in ("#", "node", "step", "version", "drain evicts", "blocking PDBs"):
        table.add_column(col)
    for i, n in enumerate(plan.nodes, 1):
        what = (
            "done"
            if n.done and not n.uncordon_only
            else (
                "uncordon"
                if n.uncordon_only
                else ("kubeadm upgrade apply" if n.kind == "first-control-plane" else "kubeadm upgrade node")
            )
        )
        table.add_row(
            str(i),
            n.host,
            what,
            f"{n.from_version} -> {n.to_version}",
            ", ".join(n.evictions) or "-",
            ", ".join(n.blocking_pdbs) or "-",
        )
    console.print(table)
    for note in plan.notes:
        console.print(f"note: {note}")
    if common.log_format == "json":
        for n in plan.nodes:
            click.echo(
                json.dumps(
                    {
                        "host": n.host,
                        "kind": n.kind,
                        "from": n.from_version,
                        "to": n.to_version,
                        "done": n.done,
                        "steps": list(n.steps),
                        "evictions": list(n.evictions),
                        "blocking_pdbs": list(n.blocking_pdbs),
                    }
                )
            )


def _render_recap(common: Common, console: Console, report: UpgradeReport) -> int:
    recap = Table(title="UPGRADE RECAP", title_justify="left", show_edge=False)
    for col in ("node", "version", "status", "wall time", "message"):
        recap.add_column(col)
    for r in report.nodes:
        color = {"failed": "red", "not started": "yellow"}.get(r.status, "green")
        recap.add_row(
            r.host,
            f"{r.from_version} -> {r.to_version}",
            f"[{color}]{r.status}[/{color}]",
            f"{r.seconds:.0f} s",
            r.message,
        )
        if common.log_format == "json":
            click.echo(
                json.dumps(
                    {
                        "upgrade": r.host,
                        "from": r.from_version,
                        "to": r.to_version,
                        "status": r.status,
                        "seconds": r.seconds,
                        "msg": r.message,
                    }
                )
            )
    console.print(recap)
    return int(ExitStatus.TASK_FAILED) if report.failed else int(ExitStatus.SUCCESS)
