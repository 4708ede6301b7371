"""Run commands: up, apply, plan. Each parses its options, calls its action and renders the report."""

from __future__ import annotations

import click

from provisioner.actions.apply import ApplyOptions
from provisioner.actions.apply import apply as apply_action
from provisioner.actions.plan import plan as plan_action
from provisioner.actions.up import UpOptions
from provisioner.actions.up import up as up_action
from provisioner.cli.common import Common, complete_roles, render_run, run_options, warn
from provisioner.cli.smoke import render_smoke, smoke_progress


@click.command()
@run_options
def apply(common: Common, roles: tuple[str, ...]) -> int:
    """Run only the given ROLES (on the hosts site.yaml assigns them, or all)."""
    return render_run(apply_action(common, ApplyOptions(roles), common.sink, warn=warn), common)


apply = click.argument("roles", nargs=-1, required=True, shell_complete=complete_roles)(apply)


@click.command()
@run_options
def plan(common: Common) -> int:
    """Check mode: show what `up` would change on each host. Never changes a host."""
    return render_run(plan_action(common, common.sink, warn=warn), common)


@click.command()
@click.option("--no-smoke", is_flag=True, help="Do not run the smoke test after provisioning.")
@run_options
def up(common: Common, no_smoke: bool) -> int:
    """Provision the whole cluster (all roles in roles/site.yaml), then run the smoke test."""
    report = up_action(common, UpOptions(smoke=not no_smoke), common.sink, warn=warn, progress=smoke_progress(common))
    rc = render_run(report.run, common)
    if report.smoke_skipped:
        click.echo(f"smoke test skipped ({report.smoke_skipped})", err=True)
    if report.smoke is not None:
        rc = render_smoke(report.smoke, common)
    return rc
