"""`kprov up`: every play of site.yaml, a warning about Nodes the inventory does not list, then the smoke test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provisioner.actions.run import RunOutcome, RunRequest, Warn, execute, quiet
from provisioner.actions.smoke import SmokeOptions, SmokeReport, smoke
from provisioner.engine.roles import load_plays
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory


@dataclass(frozen=True)
class UpOptions:
    smoke: bool = True


@dataclass(frozen=True)
class UpReport:
    run: RunOutcome
    #: the smoke test's report (None: not run)
    smoke: SmokeReport | None = None
    #: why the smoke test did not run although asked for ("" when it ran or was not asked for)
    smoke_skipped: str = ""

    @property
    def exit_status(self) -> int:
        return self.run.exit_status


def unknown_nodes_warning(req: RunRequest, inv: Inventory) -> str:
    """`up` works only on the inventory's hosts: say which Nodes of the cluster it does not list."""
    from provisioner.actions.remove_node import unknown_nodes

    extra = unknown_nodes(inv, req.connect())
    if not extra:
        return ""
    return (
        f"Node(s) in cluster {inv.cluster.name} but not in {req.inventory}: {', '.join(extra)} "
        f"(up never re-adds them; `kprov remove-node -i {req.inventory} --host NAME` removes one "
        "from the cluster)"
    )


def up(
    req: RunRequest, opts: UpOptions, open_sink: Callable[[], Any], *, warn: Warn = quiet, progress: Warn = quiet
) -> UpReport:
    """Provision the cluster; when that succeeded, warn about unlisted Nodes and run the smoke test."""
    inv = load_inventory(req.inventory)
    outcome = execute(req, load_plays(), open_sink, inventory=inv, warn=warn)
    if outcome.exit_status != 0 or outcome.report is None:
        return UpReport(outcome)
    note = unknown_nodes_warning(req, inv)
    if note:
        warn(note)
    if not opts.smoke:
        return UpReport(outcome)
    if not inv.cluster.smoke:
        return UpReport(outcome, smoke_skipped="cluster.smoke: false")
    return UpReport(outcome, smoke=smoke(req, SmokeOptions(), progress=progress))
