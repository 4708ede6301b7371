"""apt-cacher-ng on the lab bridge: the nodes' only way to the Debian mirror.

One proxy per lab, bound to that lab's bridge address (so labs never share a listener), run as a
plain daemon (no systemd on the host) under its own user, in the foreground so that the PID we
spawn is the daemon. Its cache lives under the cache dir (one per lab name: apt-cacher-ng does not
support two instances on one cache) and survives `down`.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import LabError, PrerequisiteMissing
from provisioner.lab import fsutil, proc
from provisioner.lab.host import which

log = logging.getLogger(__name__)

PORT = 3142
USER = "apt-cacher-ng"


@dataclass(frozen=True)
class ProxyPaths:
    runtime: Path  # conf/, log/, run/ (removed by down)
    cache: Path  # the package cache (kept)

    @property
    def conf_dir(self) -> Path:
        return self.runtime / "conf"


def config_text(paths: ProxyPaths, bind: str, port: int) -> str:
    return "\n".join(
        [
            f"CacheDir: {paths.cache}",
            f"LogDir: {paths.runtime / 'log'}",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"BindAddress: {bind}",
            f"Port: {port}",
            "ConnectProto: v4",
            f"PidFile: {paths.runtime / 'run/pid'}",
            f"SocketPath: {paths.runtime / 'run/socket'}",
            "ExThreshold: 4",
            "",
        ]
    )


def _is_ours(argv: list[str], paths: ProxyPaths) -> bool:
    return any(a.endswith("apt-cacher-ng") for a in argv[:1]) and str(paths.conf_dir) in argv


def find(paths: ProxyPaths) -> list[int]:
    """apt-cacher-ng processes serving this lab (found by their config dir)."""
    return proc.find(lambda argv: _is_ours(argv, paths))


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure(paths: ProxyPaths, bind: str, port: int = PORT, current: proc.ProcId | None = None) -> proc.ProcId:
    """Start the proxy unless `current` is alive and listening; returns its process id."""
    if proc.alive(current) and port_open(bind, port):
        return current  # type: ignore[return-value]
    stop(paths, current)
    if port_open(bind, port):
        # typically the distribution's own apt-cacher-ng service, listening on all addresses
        raise LabError(
            f"port {port} on {bind} is already taken by another program",
            hint="stop the system apt-cacher-ng service (service apt-cacher-ng stop) or whatever listens on that port",
        )
    binary = which("apt-cacher-ng")
    try:
        user = pwd.getpwnam(USER)
    except KeyError as exc:
        raise PrerequisiteMissing(f"user {USER} does not exist", hint="apt-get install -y apt-cacher-ng") from exc
    for sub in ("conf", "log", "run"):
        (paths.runtime / sub).mkdir(parents=True, exist_ok=True)
    paths.cache.mkdir(parents=True, exist_ok=True)
    for d in (paths.cache, paths.runtime / "log", paths.runtime / "run"):
        os.chown(d, user.pw_uid, user.pw_gid)
    fsutil.write_text(paths.conf_dir / "acng.conf", config_text(paths, bind, port))
    argv = [
        which("setpriv") or "setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups",
        str(binary), "-c", str(paths.conf_dir), "ForeGround=1",
    ]  # fmt: skip
    with open(paths.runtime / "log/stdout", "ab") as out:
        # own session: a Ctrl-C in the terminal that ran `kprov lab up` must not stop the proxy
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    proc.remember(popen)
    ident = proc.ident(popen.pid)
    deadline = time.monotonic() + 10
    while not port_open(bind, port):
        if popen.poll() is not None or time.monotonic() > deadline:
            tail = (paths.runtime / "log/stdout").read_text(errors="replace")[-1500:]
            raise LabError(f"apt-cacher-ng did not start on {bind}:{port}", detail=tail,
                           hint=f"see {paths.runtime / 'log'}")  # fmt: skip
        time.sleep(0.05)
    log.info("apt-cacher-ng pid %d on %s:%d", popen.pid, bind, port)
    assert ident is not None
    return ident


def stop(paths: ProxyPaths, current: proc.ProcId | None) -> None:
    """Stop the recorded proxy and any stray instance using this lab's config."""
    pids = set(find(paths))
    if proc.alive(current):
        pids.add(current.pid)  # type: ignore[union-attr]
    idents = [i for i in (proc.ident(p) for p in pids) if i]
    for i in idents:
        proc.kill(i.pid, signal.SIGTERM)
    for i in proc.wait_gone(idents, timeout=5):
        proc.kill(i.pid, signal.SIGKILL)
    proc.wait_gone(idents, timeout=2)
