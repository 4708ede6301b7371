"""`kprov ec2 create|destroy|inventory` and `kprov ci-smoke`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from provisioner.actions.ci_smoke import CiSmokeOptions
from provisioner.actions.ci_smoke import ci_smoke as run_pipeline
from provisioner.cli.common import StderrHandler, confirm_removal, yes_option
from provisioner.errors import InventoryError
from provisioner.providers import ci_smoke as pipeline
from provisioner.providers import ec2 as provider
from provisioner.providers._common import load_raw_inventory
from provisioner.providers.ec2_config import SSH_CIDR_ENV, Ec2Config

inventory_option = click.option(
    "--inventory",
    "-i",
    "inventory_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Inventory file with provider: ec2 and an ec2: section.",
)
ssh_cidr_option = click.option(
    "--ssh-cidr",
    "ssh_cidrs",
    multiple=True,
    metavar="CIDR",
    help=f"Who may reach SSH and the API server (overrides ec2.ssh_cidr; also ${SSH_CIDR_ENV}, comma-separated).",
)
timeout_option = click.option(
    "--timeout", default=600.0, show_default=True, type=float, help="Seconds to wait for AWS and SSH."
)
poll_option = click.option(
    "--poll", default=5.0, show_default=True, type=float, hidden=True, help="Seconds between polls."
)


def setup_logging(verbose: bool) -> None:
    """kprov's own progress messages on stderr (botocore's logs stay quiet)."""
    logger = logging.getLogger("provisioner")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname).1s %(message)s"))
        logger.addHandler(handler)


def load_ec2_config(
    inventory_path: str, ssh_cidrs: tuple[str, ...] = (), *, allow_world_ssh: bool = False
) -> tuple[Ec2Config, dict[str, Any]]:
    """Read the inventory's `cluster:` and `ec2:` sections (the one place the EC2 commands do it)."""
    raw = load_raw_inventory(inventory_path)
    provider_name = raw.get("provider", "static")
    if provider_name != "ec2" or not isinstance(raw.get("ec2"), dict):
        raise InventoryError(
            f"{inventory_path}: expected provider: ec2 with an ec2: section (found provider: {provider_name})",
            hint="see inventories/ec2-example.yaml and docs/ec2.md",
        )
    return provider.load_config(raw["ec2"], raw, ssh_cidrs=ssh_cidrs, allow_world_ssh=allow_world_ssh), raw


def console(stderr: bool = False) -> Console:
    """A rich console; when piped (CI logs, tests) it is wide enough that tables never truncate."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


def instance_table(
    instances: tuple[provider.Instance, ...] | list[provider.Instance], title: str, created: tuple[str, ...] = ()
) -> Table:
    table = Table(title=title)
    columns = ["name", "role", "instance", "type", "state", "public ip", "node ip (private)", "zone"]
    for column in columns + ([""] if created else []):
        table.add_column(column)
    for i in instances:
        row = [
            i.name,
            i.role or "?",
            i.instance_id,
            i.instance_type,
            i.state,
            i.public_ip or "-",
            i.private_ip or "-",
            i.zone or "-",
        ]
        table.add_row(*row, *(["new" if i.name in created else ""] if created else []))
    return table


@click.group("ec2")
def ec2() -> None:
    """Create, list and destroy a cluster's EC2 instances (found by tags)."""


@ec2.command("create")
@inventory_option
@ssh_cidr_option
@click.option(
    "--allow-world-ssh",
    is_flag=True,
    help="Allow a /0 ssh_cidr: SSH and the API server open to the whole internet (as ec2.allow_world_ssh).",
)
@click.option(
    "--wait-ssh/--no-wait-ssh", default=True, show_default=True, help="Wait until every instance answers on SSH."
)
@timeout_option
@poll_option
@click.option("-v", "--verbose", is_flag=True)
def create_cmd(
    inventory_path: str,
    ssh_cidrs: tuple[str, ...],
    allow_world_ssh: bool,
    wait_ssh: bool,
    timeout: float,
    poll: float,
    verbose: bool,
) -> None:
    """Create what is missing of the cluster (idempotent) and print its instances."""
    setup_logging(verbose)
    config, _ = load_ec2_config(inventory_path, ssh_cidrs, allow_world_ssh=allow_world_ssh)
    report = provider.create(config, wait_ssh=wait_ssh, timeout=timeout, poll=poll)
    out = console()
    out.print(
        instance_table(report.instances, f"cluster {config.cluster} ({len(report.created)} created)", report.created)
    )
    sg_state = "created" if report.security_group_created else "exists"
    out.print(
        f"security group {report.security_group_id} ({sg_state}; +{report.rules_added}/-{report.rules_revoked} rules), "
        f"key pair {report.key_name} ({'imported' if report.key_imported else 'exists'}), "
        f"AMI {report.image_id}, subnet {report.subnet_id}"
    )
    if report.extra:
        out.print(f"[yellow]left alone (beyond the configured counts): {', '.join(report.extra)}[/yellow]")
    lb = report.load_balancer
    if lb is not None:
        out.print(
            f"API load balancer {lb.name} ({'created' if lb.created else 'exists'}): {lb.endpoint} -> "
            f"{', '.join(f'{ip}:6443' for ip in lb.targets) or 'no control planes'}"
        )


@ec2.command("destroy")
@inventory_option
@timeout_option
@poll_option
@click.option("-v", "--verbose", is_flag=True)
@yes_option
def destroy_cmd(inventory_path: str, timeout: float, poll: float, verbose: bool, yes: bool) -> None:
    """Terminate the cluster's instances and delete its security group and imported key pair.

    Asks for confirmation on a terminal (listing the instances); without one it needs --yes."""
    setup_logging(verbose)
    config, _ = load_ec2_config(inventory_path)
    if not yes:
        found = [] if not sys.stdin.isatty() else provider.cluster_instances(config)
        confirm_removal(
            f"ec2 destroy terminates {len(found) if found else 'all'} instance(s) of cluster "
            f"{config.cluster} and deletes its security group, key pair and load balancer",
            [f"{i.name} {i.instance_id} ({i.state})" for i in found],
            yes,
        )
    _print_destroy(provider.destroy(config, timeout=timeout, poll=poll), config)


def _print_destroy(report: provider.DestroyReport, config: Ec2Config) -> None:
    if not (report.terminated or report.security_groups or report.key_pairs or report.load_balancers):
        click.echo(f"cluster {config.cluster}: nothing to destroy")
    for what, items in (
        ("deleted", report.load_balancers),
        ("terminated", report.terminated),
        ("deleted security group", report.security_groups),
        ("deleted key pair", report.key_pairs),
    ):
        for item in items:
            click.echo(f"{what}: {item}")
    for item in report.left_alone:
        click.secho(f"left alone (not tagged for cluster {config.cluster}): {item}", fg="yellow")


@ec2.command("inventory")
@inventory_option
@click.option("--format", "fmt", type=click.Choice(["yaml", "table"]), default="yaml", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write a static inventory to this file.")
def inventory_cmd(inventory_path: str, fmt: str, output: str | None) -> None:
    """Print the hosts `provider: ec2` resolves to (or write them as a static inventory)."""
    config, raw = load_ec2_config(inventory_path)
    instances = provider.cluster_instances(config)
    running = [i for i in instances if i.state == "running"]
    if fmt == "table" and not output:
        console().print(instance_table(instances, f"cluster {config.cluster}"))
        return
    hosts = provider.hosts_from_instances(running, config)
    doc = {"provider": "static", "cluster": raw.get("cluster"), "hosts": hosts}
    text = f"# generated by kprov ec2 inventory from {raw['__file__']}\n" + yaml.safe_dump(doc, sort_keys=False)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(hosts)} host(s) to {output}", err=True)
    else:
        click.echo(text, nl=False)
    if not running:
        click.secho(f"no running instances for cluster {config.cluster}", fg="yellow", err=True)


# --------------------------------------------------------------------------- ci-smoke


@click.command("ci-smoke")
@inventory_option
@ssh_cidr_option
@click.option(
    "--up-cmd",
    envvar="KPROV_CI_UP_CMD",
    metavar="CMD",
    help="Replace the `kprov up` step (shell words; {inventory} and {events} are substituted).",
)
@click.option(
    "--smoke-cmd",
    envvar="KPROV_CI_SMOKE_CMD",
    metavar="CMD",
    help="Replace the `kprov smoke` step (shell words; {inventory} and {events} are substituted).",
)
@click.option(
    "--events",
    "events_path",
    default="kprov-events.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="JSON event log of the run (CI artifact).",
)
@click.option(
    "--summary",
    "summary_path",
    envvar="GITHUB_STEP_SUMMARY",
    type=click.Path(dir_okay=False),
    help="Markdown job summary, appended to [default: $GITHUB_STEP_SUMMARY].",
)
@click.option("--wait-ssh/--no-wait-ssh", default=True, show_default=True)
@timeout_option
@poll_option
@click.option("-v", "--verbose", is_flag=True)
def ci_smoke(
    inventory_path: str,
    ssh_cidrs: tuple[str, ...],
    up_cmd: str | None,
    smoke_cmd: str | None,
    events_path: str,
    summary_path: str | None,
    wait_ssh: bool,
    timeout: float,
    poll: float,
    verbose: bool,
) -> None:
    """ec2 create -> up -> smoke -> ec2 destroy; the destroy always runs (failure, Ctrl-C, SIGTERM)."""
    setup_logging(verbose)
    inventory_abs = str(Path(inventory_path).resolve())
    events_abs = str(Path(events_path).resolve())
    config, _ = load_ec2_config(inventory_path, ssh_cidrs)
    opts = CiSmokeOptions(
        config,
        tuple(pipeline.step_argv(up_cmd, "up", inventory_abs, events_abs)),
        tuple(pipeline.step_argv(smoke_cmd, "smoke", inventory_abs, events_abs)),
        events_abs,
        summary_path,
        wait_ssh=wait_ssh,
        timeout=timeout,
        poll=poll,
    )
    report = run_pipeline(opts, _CiSmokeView())
    _print_steps(list(report.steps))
    report.raise_for_failure()


class _CiSmokeView:
    """The ci-smoke pipeline on the terminal: step headings and the instance table on stderr, the steps'
    own output on stdout."""

    def heading(self, text: str) -> None:
        click.secho(f"==> {text}", bold=True, err=True)

    def created(self, report: provider.CreateReport, cluster: str) -> None:
        console(stderr=True).print(instance_table(report.instances, f"cluster {cluster}", report.created))

    def line(self, text: str) -> None:
        click.echo(text)

    def interrupt_ignored(self) -> None:
        click.secho("teardown in progress: interrupt ignored until it finishes", fg="yellow", err=True)


def _print_steps(steps: list[pipeline.StepResult]) -> None:
    table = Table(title="ci-smoke")
    for column in ("step", "result", "time", "detail"):
        table.add_column(column)
    colour = {"ok": "green", "failed": "red", "interrupted": "yellow"}
    for s in steps:
        table.add_row(s.name, f"[{colour.get(s.status, 'white')}]{s.status}[/]", f"{s.seconds:.1f} s", s.detail)
    console(stderr=True).print(table)
