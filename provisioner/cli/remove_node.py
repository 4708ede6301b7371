"""`kprov remove-node`: parse arguments, show the plan, confirm, call provisioner.actions.remove_node, render."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from provisioner.cli.common import Common, run_options
from provisioner.cli.maintenance import day_two_console
from provisioner.errors import ExitStatus, InputError

if TYPE_CHECKING:
    from provisioner.actions.remove_node import RemovalPlan


def _show_plan(console: Console, plan: RemovalPlan, common: Common) -> None:
    from provisioner.actions.remove_node import describe_pods

    kind = "control plane" if plan.control_plane else "worker"
    reach = "reachable" if plan.reachable else (plan.unreachable_why or "not in the inventory")
    console.print(f"[bold]REMOVE-NODE {plan.host}[/bold] ({kind}, {reach}; cluster seen through {plan.api_via})")
    for i, line in enumerate(plan.steps(), 1):
        console.print(f"  {i}. {line}")
    if plan.drain is not None and plan.drain.pods:
        table = Table(title=f"pods on {plan.host}", title_justify="left", show_edge=False)
        for col in ("pod", "controller", "what happens"):
            table.add_column(col)
        for pod, owner, what in describe_pods(plan.drain):
            table.add_row(pod, owner, f"[red]{what}[/red]" if "refused" in what or "waits" in what else what)
        console.print(table)
    if plan.etcd is not None:
        members = ", ".join(f"{m.name or m.id} ({'healthy' if m.healthy else 'unhealthy'})" for m in plan.etcd.members)
        console.print(f"etcd members now: {members}")
    for r in (*plan.blockers, *plan.refusals):
        console.print(f"[red]unsafe: {r}[/red]")
    for w in plan.warnings:
        console.print(f"[yellow]warning: {w}[/yellow]")
    if common.log_format == "json":
        click.echo(
            json.dumps(
                {
                    "remove_node": plan.host,
                    "plan": plan.steps(),
                    "refusals": list(plan.refusals),
                    "blockers": list(plan.blockers),
                    "warnings": list(plan.warnings),
                    "pods": [
                        {"pod": p, "controller": o, "action": a}
                        for p, o, a in (describe_pods(plan.drain) if plan.drain else [])
                    ],
                }
            )
        )


@click.command("remove-node")
@click.option("--host", "name", required=True, help="The node to remove (an inventory host or a Node name).")
@click.option(
    "--force",
    is_flag=True,
    help="Delete pods without a controller, and remove a control plane even when etcd would be left "
    "without a spare or without quorum.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only show what would happen (pods to evict, Node, etcd member, balancer). Changes nothing.",
)
@click.option(
    "--drain-timeout",
    default=300,
    show_default=True,
    type=click.IntRange(10, 86400),
    help="Seconds the drain may take (PodDisruptionBudgets can hold it up).",
)
# the roles run on the whole cluster; no --tags/--skip-tags: `--skip-tags reset` would leave the host uncleaned
@run_options(tasks=("forks", "diff", "roles_dir"))
def remove_node(common: Common, name: str, force: bool, yes: bool, dry_run: bool, drain_timeout: int) -> int:
    """Cordon, drain and delete a node, remove its etcd member (control plane), clean the host.

    Rerun after an interruption: it resumes. An unreachable host is still removed from the cluster; its
    cleanup is skipped with a warning. Remove the host from the inventory afterwards.
    """
    from provisioner.actions import remove_node as rn
    from provisioner.inventory.loader import load_inventory

    inv = load_inventory(common.inventory)
    opts = rn.RemoveNodeOptions(
        name, force=force, drain_timeout_s=drain_timeout, connect=common.run_options().connect, dry_run=dry_run
    )
    console = day_two_console(common)

    def show(plan: RemovalPlan, down: Sequence[str]) -> None:
        _show_plan(console, plan, common)
        for d in down:
            console.print(f"[yellow]warning: control plane {d}[/yellow]")

    def confirm(_plan: RemovalPlan) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(
                f"remove-node {name} changes the cluster: confirm with --yes",
                hint="no terminal to ask on; `--dry-run` shows the plan",
            )
        return click.confirm(f"Remove {name} from cluster {inv.cluster.name}?", default=False)

    outcome = rn.remove(
        inv,
        common,
        opts,
        open_sink=common.sink,
        show_plan=show,
        confirm=confirm,
        progress=lambda m: console.print(f"[dim]remove-node {name}: {m}[/dim]"),
    )
    plan, report = outcome.plan, outcome.report
    if report is None:
        console.print("dry run: nothing was changed" if dry_run else "nothing was changed")
        return int(ExitStatus.SUCCESS)
    if common.log_format == "json":
        click.echo(
            json.dumps(
                {
                    "removed": report.host,
                    "seconds": report.seconds,
                    "warnings": list(report.warnings),
                    "steps": [{"step": s.name, "outcome": s.outcome, "detail": s.detail} for s in report.steps],
                }
            )
        )
    for w in (w for w in report.warnings if w not in plan.warnings):  # the plan's were shown above
        console.print(f"[yellow]warning: {w}[/yellow]")
    console.print(
        f"[green]{name} removed from cluster {inv.cluster.name} ({report.changed} step(s) changed, "
        f"{report.seconds:.0f} s): now remove it from {common.inventory}[/green]"
    )
    return int(ExitStatus.SUCCESS)
