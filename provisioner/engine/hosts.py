"""Which hosts a play runs on, and what the engine keeps per host during a run."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from provisioner.engine.events import Status
from provisioner.engine.facts import FactCache
from provisioner.errors import InputError
from provisioner.inventory.model import Host, Inventory
from provisioner.transport.ssh import CommandResult


class Transport(Protocol):
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def exec(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None, become: bool | None = None
    ) -> CommandResult: ...
    def script(self, script: str, *, timeout: float | None = None, become: bool | None = None) -> CommandResult: ...
    def put_stream(self, remote_path: str, fh: Any, *, offset: int = 0) -> int: ...
    def hold_lock(self, owner: str) -> None: ...


def select_hosts(inventory: Inventory, pattern: str, limit: Sequence[str] | None = None) -> list[Host]:
    """Host pattern: `all`, group names, host names, `group[0]`, `group[1:]`, comma-separated union;
    `limit` (host names) narrows the result."""
    groups = inventory.group_members()
    by_name = {h.name: h for h in inventory.hosts}
    chosen: list[str] = []
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        name, _, sl = part.partition("[")
        if name in groups:
            members = groups[name]
        elif name in by_name:
            members = [name]
        else:
            raise InputError(
                f"host pattern {part!r} matches no group or host", hint=f"groups: {', '.join(sorted(groups))}"
            )
        if sl:
            idx = sl.rstrip("]")
            if ":" in idx:
                a, _, b = idx.partition(":")
                members = members[int(a) if a else None : int(b) if b else None]
            else:
                members = members[int(idx) : int(idx) + 1]
        chosen.extend(m for m in members if m not in chosen)
    if limit is not None:
        chosen = [c for c in chosen if c in limit]
    return [by_name[c] for c in chosen]


class HostState:
    """A host during a run: its connection, registered/set_fact vars, whether it is out, its facts.

    `lock` serialises what touches the connection's state (connect, fact gathering): a host's own worker
    and hosts that delegate to it may ask at the same moment."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.transport: Transport | None = None
        self.vars: dict[str, Any] = {}
        self.dead: Status | None = None
        self.facts = FactCache()
        self.lock = threading.RLock()
