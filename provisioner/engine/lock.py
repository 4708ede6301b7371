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
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from provisioner.errors import LockHeld


def owner_record(what: str) -> str:
    """Who holds a lock: shown to the run that finds it taken."""
    return json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "since": int(time.time()), "command": what}, sort_keys=True
    )


def describe_owner(raw: str) -> str:
    try:
        info = json.loads(raw)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(info["since"])))
        return f"pid {info['pid']} on {info['host']} since {since} ({info.get('command') or 'kprov'})"
    except (ValueError, KeyError, TypeError):
        return "another kprov run"


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


_HELD_HOSTS: set[str] = set()  # hosts whose lock a maintenance action of this process holds (see hosts_held)


def host_key(address: str, port: int, name: str) -> str:
    return f"{address}:{port}/{name}"


@contextlib.contextmanager
def hosts_held(keys: list[str]) -> Iterator[None]:
    """Mark host locks this process already holds (a day-two action that runs plays inside its own lock):
    SSHHost.hold_lock then re-enters instead of finding the host locked by ourselves."""
    new = [k for k in keys if k not in _HELD_HOSTS]
    _HELD_HOSTS.update(new)
    try:
        yield
    finally:
        _HELD_HOSTS.difference_update(new)


def host_held_here(key: str) -> bool:
    return key in _HELD_HOSTS


#: run over SSH with $1 = the host's inventory name, $2 = the owner record; prints one status line,
#: then holds the lock until its stdin closes (the run ended, or kprov went away)
HOST_LOCK_SCRIPT = r"""set -u
umask 077
# root (the normal case, or become): /run/kprov; a user without become can change only its own files
if [ "$(id -u)" = 0 ]; then d=/run/kprov; else d="$HOME/.kprov-lock"; fi
mkdir -p "$d" && chmod 0700 "$d" || { echo "KPROV-LOCK-ERROR cannot create $d"; exit 3; }
exec 9>>"$d/$1.lock" || { echo "KPROV-LOCK-ERROR cannot open the lock file"; exit 3; }
if ! flock -n 9; then
  printf 'KPROV-LOCK-HELD %s\n' "$(head -c 4096 "$d/$1.owner" 2>/dev/null)"
  exit 4
fi
printf '%s' "$2" > "$d/$1.owner"
echo KPROV-LOCK-OK
cat >/dev/null
: > "$d/$1.owner"
"""
