"""Run commands: up, apply, plan."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import click

from provisioner.cli.common import Common, complete_roles, finish, prepare, run_options
from provisioner.engine.events import RunReport
from provisioner.engine.lock import cluster_lock
from provisioner.engine.roles import Play, load_plays
from provisioner.engine.runner import Runner
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.k8s.context import cluster_vars
from provisioner.secrets import Redactor


def execute(common: Common, plays: list[Play] | tuple[Play, ...], *, check: bool = False, title: str = "RECAP",
            inventory: Inventory | None = None) -> int:
    inv = inventory or load_inventory(common.inventory)
    common = prepare(common, inv, plays)   # --limit patterns, --list-*, tag warnings
    if any(p.role == "kubernetes" for p in plays):
        # a Kubernetes version change goes through `kprov upgrade`, never through up/apply/plan
        from provisioner.actions.versions import guard_version_unchanged

        guard_version_unchanged(inv, [h for h in inv.hosts if not common.limit or h.name in common.limit],
                                common.run_options().connect)
    sink = common.sink()
    return finish(run_plays(common, inv, plays, sink, check=check), sink, title)


def run_plays(common: Common, inv: Inventory, plays: Sequence[Play], sink: Any, *, check: bool = False) -> RunReport:
    """One Runner for these plays: the run options, --roles-dir and the cluster-wide computed vars."""
    redactor = Redactor()
    dirs = {}
    if common.roles_dir:
        roles_dir = Path(common.roles_dir).resolve()
        dirs["roles_dir"] = roles_dir
        if (roles_dir.parent / "templates").is_dir():
            dirs["templates_dir"] = roles_dir.parent / "templates"
    with contextlib.ExitStack() as stack:
        if not check:   # a plan never changes a host: it may run beside a run that does
            stack.enter_context(cluster_lock(inv.cluster.name))
        runner = Runner(inv, common.run_options(check=check), sink, redactor=redactor,
                        base_vars=cluster_vars(inv, redactor), **dirs)
        try:
            return runner.run(plays)
        finally:
            runner.close()


@click.command()
@run_options
def apply(common: Common, roles: tuple[str, ...]) -> int:
    """Run only the given ROLES (on the hosts site.yaml assigns them, or all)."""
    site = list(load_plays()) if not common.roles_dir else []
    plays = [p for r in roles for p in ([q for q in site if q.role == r] or [Play(role=r, hosts="all")])]
    return execute(common, plays)


apply = click.argument("roles", nargs=-1, required=True, shell_complete=complete_roles)(apply)


@click.command()
@run_options
def plan(common: Common) -> int:
    """Check mode: show what `up` would change on each host. Never changes a host."""
    return execute(common, load_plays(), check=True, title="PLAN")


@click.command()
@click.option("--no-smoke", is_flag=True, help="Do not run the smoke test after provisioning.")
@run_options
def up(common: Common, no_smoke: bool) -> int:
    """Provision the whole cluster (all roles in roles/site.yaml), then run the smoke test."""
    inv = load_inventory(common.inventory)
    rc = execute(common, load_plays(), inventory=inv)
    if rc == 0:
        warn_unknown_nodes(common, inv)
    if rc == 0 and not no_smoke and not inv.cluster.smoke:
        click.echo("smoke test skipped (cluster.smoke: false)", err=True)
    elif rc == 0 and not no_smoke:
        from provisioner.cli.cluster import run_smoke

        rc = run_smoke(common)
    return rc


def warn_unknown_nodes(common: Common, inv: Inventory) -> None:
    """`up` works only on the inventory's hosts: say which Nodes of the cluster it does not list."""
    from provisioner.actions.remove_node import unknown_nodes

    extra = unknown_nodes(inv, common.run_options().connect)
    if extra:
        click.secho(f"warning: Node(s) in cluster {inv.cluster.name} but not in {common.inventory}: {', '.join(extra)} "
                    f"(up never re-adds them; `kprov remove-node -i {common.inventory} --host NAME` removes one "
                    "from the cluster)", fg="yellow", err=True)
