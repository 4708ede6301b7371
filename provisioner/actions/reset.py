"""`kprov reset`: tear Kubernetes down on the hosts (kubeadm reset + leftovers); idempotent, `up` rebuilds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.actions import kubeconfig as kc
from provisioner.actions.run import RunOutcome, RunRequest, Warn, execute, quiet
from provisioner.actions.selection import select_hosts
from provisioner.engine.roles import Play
from provisioner.inventory.model import Inventory

PLAYS = (Play(role="reset", hosts="all"),)


@dataclass(frozen=True)
class ResetOptions:
    #: also wipe containerd's images and containers
    containerd_state: bool = False


@dataclass(frozen=True)
class ResetReport:
    run: RunOutcome
    #: the whole cluster was reset and these kubeconfig files still hold its merged context
    stale_kubeconfigs: tuple[Path, ...] = ()

    @property
    def exit_status(self) -> int:
        return self.run.exit_status


def targets(req: RunRequest, inv: Inventory) -> list[str]:
    """The hosts a reset would wipe (what the CLI shows before it asks)."""
    return select_hosts(inv, req.limit) if req.limit else [h.name for h in inv.hosts]


def reset(
    req: RunRequest, opts: ResetOptions, open_sink: Callable[[], Any], *, inventory: Inventory, warn: Warn = quiet
) -> ResetReport:
    req = req.with_vars(reset_containerd_state=opts.containerd_state)
    outcome = execute(req, PLAYS, open_sink, inventory=inventory, title="RESET", warn=warn)
    if outcome.exit_status != 0 or outcome.report is None or req.limit:
        return ResetReport(outcome)
    return ResetReport(outcome, tuple(kc.merged_into(inventory.cluster.name)))
