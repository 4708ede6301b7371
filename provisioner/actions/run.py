"""Running plays: what every role-running action shares (up, plan, apply, reset, add-node).

`RunRequest` is the typed form of the run options the CLI parses (inventory, --limit, tags, -e, ...);
`execute` resolves the selection, runs the plays under the cluster lock and hands the recap to the sink.
Nothing here prints: warnings go to a `warn` callback, events and the recap to the sink.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from provisioner.actions.selection import PlayListing, known_tags, listing, select_hosts
from provisioner.engine.events import RunReport
from provisioner.engine.lock import cluster_lock
from provisioner.engine.roles import ROLES_DIR, Play, load_role
from provisioner.engine.runner import Runner, RunOptions
from provisioner.errors import InputError
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.k8s.context import cluster_vars
from provisioner.reporting.ssh_targets import ssh_config_notes
from provisioner.secrets import Redactor
from provisioner.transport.ssh import ConnectOptions

DEFAULT_FORKS = 128

Warn = Callable[[str], None]


def quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class RunRequest:
    """The options of a run, as `kprov up/plan/apply/...` take them."""

    inventory: str
    limit: tuple[str, ...] | None = None
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    forks: int = DEFAULT_FORKS
    log_format: str = "text"
    verbose: int = 0
    diff: bool = False
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0
    log_file: str | None = None
    roles_dir: str | None = None
    list_hosts: bool = False
    list_tasks: bool = False
    list_tags: bool = False

    @property
    def listing_only(self) -> bool:
        return self.list_hosts or self.list_tasks or self.list_tags

    def connect(self) -> ConnectOptions:
        return ConnectOptions(connect_timeout=self.connect_timeout, accept_new_host_keys=self.accept_new_host_keys)

    def run_options(self, check: bool = False) -> RunOptions:
        return RunOptions(
            check=check,
            forks=self.forks,
            tags=self.tags,
            skip_tags=self.skip_tags,
            limit=self.limit,
            extra_vars=self.extra_vars,
            connect=self.connect(),
        )

    def with_vars(self, **extra: object) -> RunRequest:
        return replace(self, extra_vars={**self.extra_vars, **extra})


@dataclass(frozen=True)
class Selection:
    """--limit resolved to host names, what each play would run, and warnings about the tag selection."""

    limit: tuple[str, ...] | None
    listed: tuple[PlayListing, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class RunOutcome:
    """A run's report; `report` is None when only --list-* was asked (then `listed` says what would run)."""

    report: RunReport | None
    listed: tuple[PlayListing, ...] = ()

    @property
    def exit_status(self) -> int:
        return 0 if self.report is None else int(self.report.exit_status())


def select(req: RunRequest, inv: Inventory, plays: Sequence[Play]) -> Selection:
    """--limit patterns resolved (no match: bad input), the plays' listing, and tag warnings."""
    limit = req.limit
    if limit:
        chosen = tuple(select_hosts(inv, limit))
        if not chosen:
            raise InputError(
                f"--limit {','.join(limit)} selects no host", hint=f"hosts: {', '.join(h.name for h in inv.hosts)}"
            )
        limit = chosen
    roles_dir = Path(req.roles_dir).resolve() if req.roles_dir else ROLES_DIR
    roles = {p.role: load_role(p.role, roles_dir) for p in plays}
    listed = tuple(listing(inv, plays, roles, limit, req.tags, req.skip_tags))
    known = known_tags(roles.values())
    warnings = []
    for flag, chosen_tags in (("--tags", req.tags), ("--skip-tags", req.skip_tags)):
        unknown = sorted(chosen_tags - known)
        if unknown:
            warnings.append(
                f"{flag} {', '.join(unknown)}: no task has this tag; known tags: {', '.join(sorted(known))}"
            )
    if (req.tags or req.skip_tags) and not any(pl.tasks and pl.hosts for pl in listed):
        warnings.append(f"the tag selection selects no task; known tags: {', '.join(sorted(known))}")
    return Selection(limit, listed, tuple(warnings))


def run_plays(req: RunRequest, inv: Inventory, plays: Sequence[Play], sink: Any, *, check: bool = False) -> RunReport:
    """One Runner for these plays: the run options, --roles-dir and the cluster-wide computed vars."""
    redactor = Redactor()
    dirs: dict[str, Any] = {}
    if req.roles_dir:
        roles_dir = Path(req.roles_dir).resolve()
        dirs["roles_dir"] = roles_dir
        if (roles_dir.parent / "templates").is_dir():
            dirs["templates_dir"] = roles_dir.parent / "templates"
    with contextlib.ExitStack() as stack:
        if not check:  # a plan never changes a host: it may run beside a run that does
            stack.enter_context(cluster_lock(inv.cluster.name))
        runner = Runner(
            inv, req.run_options(check=check), sink, redactor=redactor, base_vars=cluster_vars(inv, redactor), **dirs
        )
        try:
            return runner.run(plays)
        finally:
            runner.close()


def execute(
    req: RunRequest,
    plays: Sequence[Play],
    open_sink: Callable[[], Any],
    *,
    check: bool = False,
    title: str = "RECAP",
    inventory: Inventory | None = None,
    warn: Warn = quiet,
) -> RunOutcome:
    """Select, run the plays and recap. `open_sink` is called only when something runs (--list-* opens
    no log file)."""
    inv = inventory or load_inventory(req.inventory)
    selection = select(req, inv, plays)
    for w in selection.warnings:
        warn(w)
    if req.listing_only:
        return RunOutcome(None, selection.listed)
    req = replace(req, limit=selection.limit)
    # kprov never connects the way ~/.ssh/config says: a note when that file would send `ssh` elsewhere
    for note in ssh_config_notes(h for h in inv.hosts if not req.limit or h.name in req.limit):
        warn(note)
    if any(p.role == "kubernetes" for p in plays):
        # a Kubernetes version change goes through `kprov upgrade`, never through up/apply/plan
        from provisioner.actions.versions import guard_version_unchanged

        guard_version_unchanged(inv, [h for h in inv.hosts if not req.limit or h.name in req.limit], req.connect())
    if any(p.role == "control_plane" for p in plays) and inv.control_planes:
        # kubeadm owns the running cluster's configuration: a change is shown here and applied, whole and one
        # control plane at a time, only by `kprov upgrade --reconfigure` (actions/reconfigure.py)
        from provisioner.actions.reconfigure import drift_warnings

        for w in drift_warnings(inv, req.connect(), req.extra_vars):
            warn(w)
    sink = open_sink()
    report = run_plays(req, inv, plays, sink, check=check)
    sink.recap(report, title)
    return RunOutcome(report)
