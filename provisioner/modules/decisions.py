"""Typed decisions: what a module's check() decided about a host, each change knowing how it is applied.

The engine never looks inside a decision: it reports NoChange/Skip, and applies an Effect (a Change:
a script run on the host; an Upload; a LocalWrite) through the host's transport (`HostIO`). Only
effects that say they are `batchable` share a round trip with their neighbours (the executor frames
their scripts into one).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from provisioner.atomic import write_file
from provisioner.transport.ssh import CommandResult


class HostIO(Protocol):
    """What applying a change may do on its host (the engine's transport, possibly shared)."""

    def script(self, script: str, *, timeout: float | None = None) -> CommandResult: ...
    def put_stream(self, remote_path: str, fh: Any, *, offset: int = 0) -> int: ...


class Effect:
    """Something to apply. Subclasses are frozen dataclasses with at least `msg`, `diff`, `reports_changed`."""

    msg: str
    diff: str
    #: False: applying it reports ok, not changed (waiting for a port, serving files, a fallback note)
    reports_changed: bool

    @property
    def batchable(self) -> bool:
        """Can share one round trip with neighbouring changes (a plain script whose success means changed)."""
        return False

    def apply(self, io: HostIO, *, timeout: float | None = None) -> CommandResult:
        raise NotImplementedError


@dataclass(frozen=True)
class Change(Effect):
    """Run a shell script on the host (`set -e`; stdin from /dev/null): the common change."""

    msg: str
    script: str
    diff: str = ""
    reports_changed: bool = True

    @property
    def batchable(self) -> bool:
        return self.reports_changed

    def apply(self, io: HostIO, *, timeout: float | None = None) -> CommandResult:
        # one compound command, parsed whole before it runs, with stdin from /dev/null: nothing in the
        # change (ctr, kubeadm, ...) can swallow the rest of the script we send on stdin
        return io.script("{\nset -e\n" + self.script + "\n} </dev/null\n", timeout=timeout)


@dataclass(frozen=True)
class Upload(Effect):
    """Copy a local file to the host: resumed from `offset` in `dest.part`, checksum-verified, renamed."""

    msg: str
    src: str
    dest: str
    sha256: str
    mode: str
    offset: int = 0
    diff: str = ""
    reports_changed: bool = True

    def apply(self, io: HostIO, *, timeout: float | None = None) -> CommandResult:
        dest, part = self.dest, self.dest + ".part"
        prep = io.script(
            f'set -e\nmkdir -p -- "$(dirname -- {_q(dest)})"\n' + ("" if self.offset else f"rm -f -- {_q(part)}\n")
        )
        if prep.rc != 0:
            return prep
        t0 = time.monotonic()
        with open(self.src, "rb") as fh:
            io.put_stream(part, fh, offset=self.offset)
        verify = io.script(
            f"set -e\nsum=$(sha256sum < {_q(part)} | cut -c1-64)\n"
            f'if [ "$sum" != {_q(self.sha256)} ]; then rm -f -- {_q(part)}; '
            f'echo "checksum mismatch after upload: $sum" >&2; exit 1; fi\n'
            f"chmod {_q(self.mode)} {_q(part)}\nmv -f -- {_q(part)} {_q(dest)}\n"
            f'echo "$sum" > {_q(dest + ".sha256")}\n'
        )
        return CommandResult(verify.rc, verify.stdout, verify.stderr, int((time.monotonic() - t0) * 1000))


@dataclass(frozen=True)
class LocalWrite(Effect):
    """Write a file on the operator's machine (content gathered with the facts, e.g. fetch)."""

    msg: str
    path: str
    content: bytes = field(repr=False)
    mode: str = "0600"
    diff: str = ""
    reports_changed: bool = True

    def apply(self, io: HostIO, *, timeout: float | None = None) -> CommandResult:
        write_local_file(self.path, self.content, self.mode)
        return CommandResult(0, "", "", 0)


@dataclass(frozen=True)
class NoChange:
    """The host already matches; `msg` says why (e.g. "already present: containerd 1.6.20")."""

    msg: str

    def register_data(self) -> dict[str, Any]:
        """Extra keys of the task's registered result."""
        return {}


@dataclass(frozen=True)
class SetVars(NoChange):
    """Nothing to change on the host; set these host variables for later tasks and roles."""

    vars: Mapping[str, Any] = field(default_factory=dict)

    def register_data(self) -> dict[str, Any]:
        return {"set_fact": dict(self.vars)}


@dataclass(frozen=True)
class Skip:
    """The module decided not to act (e.g. `creates` exists)."""

    msg: str


Decision = Effect | NoChange | Skip


def write_local_file(path: str, content: bytes, mode: str) -> None:
    """Atomic local write with mode (used by fetch)."""
    write_file(path, content, int(mode, 8))


def _q(value: str) -> str:
    return shlex.quote(str(value))
