"""Process helpers: liveness that survives PID reuse and zombies, children, signals, waits."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Popen handles of daemons this process started (nspawn, apt-cacher-ng). A long-lived caller
# (pytest) must reap them, or a stopped node stays a zombie and still looks alive to kill(0).
_SPAWNED: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ProcId:
    """A process identified by PID plus kernel start time, so a recycled PID is not mistaken for it."""

    pid: int
    starttime: int

    def to_json(self) -> dict:
        return {"pid": self.pid, "starttime": self.starttime}

    @classmethod
    def from_json(cls, data: dict | None) -> ProcId | None:
        if not data:
            return None
        return cls(int(data["pid"]), int(data["starttime"]))


def remember(popen: subprocess.Popen) -> None:
    """Keep a daemon's Popen so that it can be reaped once it exits."""
    _SPAWNED[popen.pid] = popen


def reap() -> None:
    """Collect the exit status of any daemon we started that has exited."""
    for pid, popen in list(_SPAWNED.items()):
        if popen.poll() is not None:
            del _SPAWNED[pid]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw.rsplit(")", 1)[1].split()


def starttime(pid: int) -> int | None:
    """Kernel start time of pid (clock ticks since boot), None if it does not exist."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def ident(pid: int) -> ProcId | None:
    st = starttime(pid)
    return ProcId(pid, st) if st is not None else None


def alive(proc: ProcId | None) -> bool:
    """True if the very process (same start time) exists and is not a zombie."""
    if proc is None:
        return False
    reap()
    fields = _stat_fields(proc.pid)
    if not fields:
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == proc.starttime


def ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def children(pid: int) -> list[int]:
    """Direct children of pid (all threads' children)."""
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def find(match: Callable[[list[str]], bool]) -> list[int]:
    """PIDs whose argv satisfies match (used to find our daemons after their PID files are lost)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            argv = cmdline(int(entry))
            if argv and match(argv):
                found.append(int(entry))
    return found


def kill(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Send a signal; False if the process is already gone."""
    try:
        os.kill(pid, sig)
        return True
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise


def wait_gone(procs: Iterable[ProcId], timeout: float, interval: float = 0.1) -> list[ProcId]:
    """Wait until all procs are gone; returns the ones still alive at the timeout."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [p for p in pending if alive(p)]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return pending
