"""Reaching nodes: the OpenSSH client with the lab key and the lab's own known_hosts."""

from __future__ import annotations

import concurrent.futures
import logging
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.lab.host import which

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SshTarget:
    address: str
    key: Path
    known_hosts: Path
    user: str = "root"

    def argv(self, command: Sequence[str] = (), *, tty: bool = False, connect_timeout: int = 5) -> list[str]:
        """ssh argv; the remote command is quoted here, at the edge, with shlex."""
        opts = [
            "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "LogLevel=ERROR",
            "-o", "ControlMaster=no",
            "-o", "ControlPath=none",
        ]  # fmt: skip
        argv = [which("ssh") or "ssh", *opts, "-t" if tty else "-T", f"{self.user}@{self.address}"]
        if command:
            argv += ["--", shlex.join(command)]
        return argv


def port_open(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_true(target: SshTarget) -> bool:
    try:
        proc = subprocess.run(target.argv(["true"], connect_timeout=5), capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False  # a node still booting on a loaded host: try again
    return proc.returncode == 0


@dataclass(frozen=True)
class ReadyResult:
    name: str
    ready: bool
    seconds: float | None  # since started_at
    reason: str = ""


def wait_ready(
    items: Sequence[tuple[str, SshTarget, float, Callable[[], bool]]],
    timeout: float = 300.0,
    interval: float = 0.3,
) -> list[ReadyResult]:
    """Poll every node in parallel until `ssh true` works.

    items: (name, target, started_at as time.time(), still_alive()). A cheap TCP probe gates the
    ssh attempt, so 30 booting nodes are not hammered with ssh processes on 2 cores.
    """

    def one(name: str, target: SshTarget, started_at: float, still_alive: Callable[[], bool]) -> ReadyResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(target.address) and ssh_true(target):
                return ReadyResult(name, True, round(time.time() - started_at, 2))
            if not still_alive():
                return ReadyResult(name, False, None, "systemd-nspawn exited")
            time.sleep(interval)
        return ReadyResult(name, False, None, f"no ssh after {timeout:.0f}s")

    def guarded(item: tuple[str, SshTarget, float, Callable[[], bool]]) -> ReadyResult:
        try:
            return one(*item)
        except Exception as exc:
            log.debug("waiting for %s failed", item[0], exc_info=True)
            return ReadyResult(item[0], False, None, f"{type(exc).__name__}: {exc}")

    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(items), 64)) as pool:
        return list(pool.map(guarded, items))
