"""The operator's machine: prerequisites, running host commands, host-global knobs."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from provisioner.errors import LabError, PrerequisiteMissing

log = logging.getLogger(__name__)

# program -> Debian package that ships it. The lab needs all of them on the host.
REQUIRED_PROGRAMS: Mapping[str, str] = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "ssh": "openssh-client",
    "ip": "iproute2",
    "iptables": "iptables",
    "setpriv": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "chroot": "coreutils",
}
# Debian packages to install on a fresh host (CI): the programs above plus the archive keyring
# debootstrap verifies the mirror with.
HOST_PACKAGES: tuple[str, ...] = (
    "systemd-container",
    "debootstrap",
    "debian-archive-keyring",
    "apt-cacher-ng",
    "openssh-client",
    "iproute2",
    "iptables",
    "util-linux",
    "mount",
)
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(program: str) -> str | None:
    """Find a program on PATH or in the sbin directories (not always on a non-root PATH)."""
    path = os.environ.get("PATH", "")
    return shutil.which(program, path=os.pathsep.join([path, *_SBIN_DIRS]))


def missing_programs(programs: Sequence[str]) -> dict[str, str]:
    """program -> package for every program that is not installed."""
    return {p: REQUIRED_PROGRAMS[p] for p in programs if which(p) is None}


def require(programs: Sequence[str] = tuple(REQUIRED_PROGRAMS), *, root: bool = True) -> None:
    """Raise PrerequisiteMissing naming the exact Debian packages to install."""
    if root and os.geteuid() != 0:
        raise PrerequisiteMissing(
            "kprov lab needs root (it creates bridges, mounts and containers)",
            hint="run it as root, e.g. sudo kprov lab ...",
        )
    missing = missing_programs(programs)
    if missing:
        pkgs = sorted(set(missing.values()))
        raise PrerequisiteMissing(
            f"missing program(s) on this machine: {', '.join(sorted(missing))}",
            hint=f"apt-get install -y {' '.join(pkgs)}",
        )


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a host command with captured output; LabError (with stderr tail) on failure."""
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, env=dict(env) if env else None, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not found", hint="kprov lab checks its prerequisites first; is PATH odd?") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{shlex.join(argv)} timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"{argv[0]} failed with exit code {proc.returncode}: {shlex.join(argv)}",
            detail=(proc.stderr or proc.stdout)[-2000:],
        )
    return proc


# Host-global inotify limits: every node's systemd and journald use inotify instances.
INOTIFY_MINIMUMS = {"fs.inotify.max_user_instances": 8192, "fs.inotify.max_user_watches": 524288}


def raise_inotify_limits() -> None:
    """Raise (never lower) the inotify limits: another lab may rely on the raised values."""
    for key, minimum in INOTIFY_MINIMUMS.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        current = int(path.read_text())
        if current < minimum:
            log.info("raising %s from %d to %d (host-global, left raised)", key, current, minimum)
            path.write_text(str(minimum))


def kernel_release() -> str:
    return os.uname().release
