"""`kprov lab`: the local lab of systemd-nspawn machines (see docs/lab.md)."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from provisioner.errors import InputError
from provisioner.lab import DEFAULT_NAME, Lab, Node, network

_name_option = click.option(
    "--name", "name", default=DEFAULT_NAME, show_default=True, help="Lab name (1-8 chars a-z0-9)."
)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose or sys.stderr.isatty() else logging.WARNING
    root = logging.getLogger("provisioner")
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=Console(stderr=True), show_path=False, show_time=True))
    root.setLevel(level)


def _nodes_table(nodes: list[Node], title: str) -> Table:
    table = Table(title=title)
    for col in ("node", "IP", "roles", "state", "boot s"):
        table.add_column(col)
    for n in nodes:
        boot = f"{n.boot_seconds:.1f}" if n.boot_seconds is not None else "-"
        table.add_row(n.name, n.address, ",".join(n.roles), n.state, boot)
    return table


@click.group()
@click.option("-v", "--verbose", count=True, help="Log progress (-vv: every host command).")
def lab(verbose: int) -> None:
    """Local lab of real machines (systemd-nspawn, Debian bookworm) for trying and testing kprov."""
    _setup_logging(verbose)


@lab.command()
@_name_option
@click.option(
    "--nodes", "nodes", type=int, default=None, help="Number of nodes (default 3, or the lab's current count)."
)
@click.option(
    "--control-planes", type=int, default=None, help="How many of the first nodes are control planes (default 1)."
)
@click.option("--image", default=None, help="Base image directory (built there if missing; default: the cache).")
@click.option(
    "--subnet", default=None, help="Lab IPv4 network, e.g. 10.231.7.0/24 (default: a free /24 of 10.231.0.0/16)."
)
def up(name: str, nodes: int | None, control_planes: int | None, image: str | None, subnet: str | None) -> None:
    """Create the lab or bring it to NODES running nodes (idempotent)."""
    if nodes is not None and nodes < 1:
        raise InputError(f"bad --nodes {nodes}: a lab needs at least one node", hint="e.g. kprov lab up --nodes 3")
    the_lab = Lab(name, image=image, subnet=subnet)
    result = the_lab.up(nodes, control_planes)
    Console().print(_nodes_table(result, f"lab {name} ({the_lab.state().subnet})"))  # type: ignore[union-attr]
    click.echo(f"inventory: {the_lab.inventory_path}")


@lab.command()
@_name_option
def status(name: str) -> None:
    """One line per node: name, IP, state, nspawn PID, last boot seconds."""
    the_lab = Lab(name)
    nodes = the_lab.status()
    if not the_lab.exists():
        raise InputError(f"lab {name!r} does not exist", hint=f"create it: kprov lab up --name {name}")
    click.echo(f"{'NODE':<14} {'IP':<15} {'ROLES':<14} {'STATE':<8} {'PID':<8} BOOT_S")
    for n in nodes:
        boot = f"{n.boot_seconds:.1f}" if n.boot_seconds is not None else "-"
        click.echo(f"{n.name:<14} {n.address:<15} {','.join(n.roles):<14} {n.state:<8} {n.pid or '-'!s:<8} {boot}")


@lab.command()
@_name_option
def inventory(name: str) -> None:
    """Print the path of the lab's inventory (last line of output)."""
    the_lab = Lab(name)
    if not the_lab.exists():
        raise InputError(f"lab {name!r} does not exist", hint=f"create it: kprov lab up --name {name}")
    # always rewritten from the state: an inventory written by an older kprov gets the current lab settings
    click.echo(str(the_lab.write_inventory()))


@lab.command(context_settings={"ignore_unknown_options": True})
@_name_option
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh(ctx: click.Context, name: str, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on NODE (kprov lab ssh NODE -- CMD...); a shell without COMMAND. Exits with its code."""
    the_lab = Lab(name)
    rc = the_lab.run(node, list(command), tty=not command and sys.stdin.isatty())
    ctx.exit(rc)


@lab.command()
@_name_option
@click.argument("nodes", nargs=-1)
def stop(name: str, nodes: tuple[str, ...]) -> None:
    """Stop the whole lab (nodes + proxy) or the named nodes; their disks are kept."""
    result = Lab(name).stop(nodes)
    Console().print(_nodes_table(result, f"lab {name}"))


@lab.command()
@_name_option
@click.argument("nodes", nargs=-1)
def start(name: str, nodes: tuple[str, ...]) -> None:
    """Start the whole lab or the named nodes."""
    result = Lab(name).start(nodes)
    Console().print(_nodes_table(result, f"lab {name}"))


@lab.command()
@_name_option
def down(name: str) -> None:
    """Remove the lab: nodes, overlays, bridge, proxy, cgroups, mounts, state (keeps the base image)."""
    the_lab = Lab(name)
    present = the_lab.exists() or the_lab.paths.root.exists() or bool(network.lab_links(name))
    the_lab.down()  # also when absent: idempotent, and it clears leftovers of a lab killed mid-way
    if present:
        click.echo(f"lab {name} removed")
    else:
        click.echo(f"lab {name} does not exist: nothing to remove")
