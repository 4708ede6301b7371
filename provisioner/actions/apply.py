"""`kprov apply ROLES`: run only the given roles, on the hosts site.yaml assigns them (else on all)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provisioner.actions.run import RunOutcome, RunRequest, Warn, execute, quiet
from provisioner.engine.roles import Play, load_plays


@dataclass(frozen=True)
class ApplyOptions:
    roles: tuple[str, ...]


def apply_plays(roles: tuple[str, ...], *, own_roles_dir: bool = False) -> list[Play]:
    """site.yaml's plays of these roles in the order given; a role site.yaml does not list runs on all
    hosts (always, with --roles-dir: site.yaml describes the shipped roles)."""
    site = list(load_plays()) if not own_roles_dir else []
    return [p for r in roles for p in ([q for q in site if q.role == r] or [Play(role=r, hosts="all")])]


def apply(req: RunRequest, opts: ApplyOptions, open_sink: Callable[[], Any], *, warn: Warn = quiet) -> RunOutcome:
    return execute(req, apply_plays(opts.roles, own_roles_dir=bool(req.roles_dir)), open_sink, warn=warn)
