"""`kprov plan`: check mode over every play of site.yaml; never changes a host."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from provisioner.actions.run import RunOutcome, RunRequest, Warn, execute, quiet
from provisioner.engine.roles import load_plays


def plan(req: RunRequest, open_sink: Callable[[], Any], *, warn: Warn = quiet) -> RunOutcome:
    """What `up` would change on each host (facts + check only)."""
    return execute(req, load_plays(), open_sink, check=True, title="PLAN", warn=warn)
