"""The host side of kprov's locks, needed by the transport (SSHHost.hold_lock) and by engine/lock.py.

A leaf module: it imports nothing from provisioner/, so the transport can take a host's lock without
importing the engine (see engine/lock.py for why the locks exist and how they are released).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator


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
