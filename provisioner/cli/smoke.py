"""`kprov smoke` and the smoke report's rendering (also shown at the end of `kprov up`)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from provisioner.actions.smoke import SmokeOptions, SmokeReport
from provisioner.actions.smoke import smoke as smoke_action
from provisioner.cli.common import Common, run_options
from provisioner.errors import ExitStatus, SmokeFailed
from provisioner.reporting.console import make_console


def _console(common: Common):
    return make_console(stderr=common.log_format == "json")


def smoke_progress(common: Common):
    console = _console(common)
    return lambda m: console.print(f"[dim]smoke: {m}[/dim]")


def render_smoke(report: SmokeReport, common: Common) -> int:
    """The probes (a table; JSON lines too with --log-format json); a failed smoke test raises SmokeFailed."""
    result = report.result
    console = _console(common)
    if common.log_format == "json":
        for p in result.probes:
            click.echo(
                json.dumps(
                    {
                        "smoke": p.node,
                        "phase": p.phase,
                        "url": p.url,
                        "status": p.status,
                        "latency_ms": p.latency_ms,
                        "ok": p.ok,
                    }
                )
            )
    table = Table(title="SMOKE TEST", title_justify="left", show_edge=False)
    for col in ("phase", "node", "url", "http", "latency"):
        table.add_column(col)
    for p in result.probes:
        table.add_row(
            p.phase,
            p.node,
            p.url,
            f"[green]{p.status}[/green]" if p.ok else f"[red]{p.status or p.detail}[/red]",
            f"{p.latency_ms} ms",
        )
    if result.probes:
        console.print(table)
    if not result.ok:
        raise SmokeFailed(
            f"smoke test failed: {result.error or 'not every node answered'}",
            hint="see the pod status and events above; `kprov status` shows node health",
            detail=result.diagnostics or None,
        )
    console.print(f"[green]smoke test passed: the NodePort answered through all {report.nodes} nodes[/green]")
    return int(ExitStatus.SUCCESS)


@click.command()
@click.option("--keep", is_flag=True, help="Keep the smoke namespace for inspection.")
@click.option("--node-port", type=click.IntRange(30000, 32767), help="NodePort to use (default 30080).")
@run_options(tasks=False, without=("log_file",))  # smoke writes no events
def smoke(common: Common, keep: bool, node_port: int | None) -> int:
    """Deploy a hello app, reach its NodePort through every node, scale, check again, clean up."""
    report = smoke_action(common, SmokeOptions(keep=keep, node_port=node_port), progress=smoke_progress(common))
    return render_smoke(report, common)
