"""Locks against concurrent runs: one per cluster on the control machine, one per host on the host.

Two `kprov up` on one cluster would both run `kubeadm init`, and the second's "reset a half-done
init" could wipe the first's. The local lock (flock on ~/.kprov/locks/<cluster>.lock) stops a second
run from the same machine before it connects; the host lock (flock on /run/kprov/<host>.lock, held
by one SSH session for the whole run; ~/.kprov-lock for a user without become) stops one from
another machine. Both are released by the
kernel when their holder dies: a killed run never leaves a stale lock. Lock files are never
unlinked (unlinking a held lock lets the next run lock a new file while the old one is held).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from provisioner.errors import LockHeld
from provisioner.transport.host_lock import (
    HOST_LOCK_SCRIPT,
    describe_owner,
    host_held_here,
    host_key,
    hosts_held,
    owner_record,
)

__all__ = [
    "HOST_LOCK_SCRIPT",
    "cluster_lock",
    "describe_owner",
    "host_held_here",
    "host_key",
    "hosts_held",
    "owner_record",
]


def _lock_dir() -> Path:
    return Path(os.environ.get("KPROV_HOME", Path.home() / ".kprov")) / "locks"


_HELD: set[str] = set()  # clusters this process holds: an action that runs plays twice re-enters


@contextlib.contextmanager
def cluster_lock(cluster: str, what: str | None = None) -> Iterator[None]:
    """Hold the control machine's lock of `cluster` for the duration; LockHeld (exit 2) when taken."""
    if cluster in _HELD:
        yield
        return
    what = what or " ".join(["kprov", *sys.argv[1:2]])
    directory = _lock_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{cluster}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_owner(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise LockHeld(
                f"cluster {cluster!r} is locked by {holder}",
                hint="wait for that run to finish (a lock of a dead run is released by itself)",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner_record(what).encode(), 0)
        _HELD.add(cluster)
        try:
            yield
        finally:
            _HELD.discard(cluster)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
