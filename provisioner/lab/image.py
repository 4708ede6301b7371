"""The cached base image: debootstrap bookworm once, prepare it for nspawn nodes, reuse it."""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import LabError
from provisioner.lab import fsutil
from provisioner.lab.host import run
from provisioner.lab.mirror import Mirrors

log = logging.getLogger(__name__)

SUITE = "bookworm"
PACKAGES = (
    "openssh-server", "systemd", "systemd-sysv", "dbus", "libpam-systemd", "python3", "sudo",
    "iproute2", "iptables", "kmod", "curl", "gnupg", "ca-certificates", "procps", "conntrack",
    "socat", "ethtool", "iputils-ping",
)  # fmt: skip
# Bump when prepare() changes: an older cached image is re-prepared in place.
PREP_VERSION = 4
MARKER = ".kprov-image.json"

# --- files the base image gets (lab-independent; per-node identity is written at node creation) ---

CGROUP_RW_UNIT = """\
[Unit]
Description=Remount cgroup v1 hierarchies read-write (kprov lab node)
# nspawn's legacy mode mounts them read-only; runc/kubelet need them writable. A plain
# remount,rw fails with EBUSY (the superblock is the host's); remount,rw,bind works.
DefaultDependencies=no
ConditionPathIsDirectory=/sys/fs/cgroup/memory
Before=sysinit.target containerd.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mount -o remount,rw /sys/fs/cgroup; for d in /sys/fs/cgroup/*/; do mount -o remount,rw,bind "$d" || exit 1; done'

[Install]
WantedBy=sysinit.target
"""

FAKE_SYSCTLS_SCRIPT = """\
#!/bin/sh
# kubelet writes these host-global sysctls; /proc/sys is read-only in the node and they must not
# change the host. Each node gets private writable files bind-mounted over them.
mkdir -p /run/kprov-sysctl
for k in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
  f=/run/kprov-sysctl/$(echo "$k" | tr / _)
  mountpoint -q "/proc/sys/$k" && continue
  cat "/proc/sys/$k" > "$f" && mount --bind "$f" "/proc/sys/$k"
done
exit 0
"""

FAKE_SYSCTLS_UNIT = """\
[Unit]
Description=Writable per-node stand-ins for host-global sysctls kubelet sets (kprov lab node)
DefaultDependencies=no
Before=sysinit.target systemd-sysctl.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/kprov-fake-sysctls

[Install]
WantedBy=sysinit.target
"""

# A stop must not hang on root's user manager (pam_systemd for SSH logins) or on containerd.
SYSTEM_CONF = "[Manager]\nDefaultTimeoutStopSec=10s\n"
USER_AT_DROPIN = "[Service]\nTimeoutStopSec=3s\n"
# Bounded journal in /run: /run is tmpfs, i.e. memory, times 30 nodes.
JOURNALD_CONF = "[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n"
# One host key type (ed25519), made per node in-process; RSA generation costs ~0.5 s a node.
# sshd keeps its distribution defaults otherwise (MaxSessions 10, MaxStartups 10:30:100), as users' hosts do
SSHD_CONF = "HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n"


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    built: bool  # True if this call ran debootstrap
    debootstrap_seconds: float | None
    prepare_seconds: float | None
    size_bytes: int | None


def default_image_dir(cache_dir: Path) -> Path:
    return cache_dir / f"base-{SUITE}"


def read_marker(image: Path) -> dict | None:
    try:
        return json.loads((image / MARKER).read_text())
    except (OSError, ValueError):
        return None


def sources_list(mirrors: Mirrors) -> str:
    lines = [f"deb {mirrors.main} {SUITE} main", f"deb {mirrors.main} {SUITE}-updates main"]
    if mirrors.security:
        lines.append(f"deb {mirrors.security} {SUITE}-security main")
    return "\n".join(lines) + "\n"


def ensure(image: Path, mirrors: Mirrors) -> ImageInfo:
    """Build the image if it is missing (or re-prepare an older one); serialised by a lock file."""
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image.parent / f".{image.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = read_marker(image)
        if marker and marker.get("prep_version") == PREP_VERSION:
            return ImageInfo(
                image, False, marker.get("debootstrap_seconds"), marker.get("prepare_seconds"), marker.get("size_bytes")
            )
        built_seconds = None
        if marker is None:
            built_seconds = _debootstrap(image, mirrors)
            marker = {"debootstrap_seconds": built_seconds}
        else:
            log.info(
                "re-preparing base image %s (prep version %s -> %s)", image, marker.get("prep_version"), PREP_VERSION
            )
        t0 = time.monotonic()
        prepare(image, mirrors)
        prep_seconds = round(time.monotonic() - t0, 1)
        size = int(run(["du", "-sb", "-x", str(image)]).stdout.split()[0])
        marker.update(
            prep_version=PREP_VERSION, prepare_seconds=prep_seconds, size_bytes=size, suite=SUITE, built_at=time.time()
        )
        fsutil.write_text(image / MARKER, json.dumps(marker, indent=2) + "\n")
        log.info("base image ready: %s (%.0f MB)", image, size / 1e6)
        return ImageInfo(image, built_seconds is not None, marker.get("debootstrap_seconds"), prep_seconds, size)


def _debootstrap(image: Path, mirrors: Mirrors) -> float:
    tmp = image.with_name(image.name + ".partial")
    if tmp.exists():
        fsutil.remove_tree(tmp)  # an interrupted earlier build
    if image.exists():
        # a directory without our marker: an interrupted prepare or a foreign directory
        raise LabError(
            f"{image} exists but is not a kprov lab image (no {MARKER})",
            hint=f"remove it (rm -rf {image}) or pass another --image",
        )
    log.info("debootstrap %s (%s) -> %s; takes a minute or two", SUITE, mirrors.main, image)
    t0 = time.monotonic()
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp), mirrors.main]
    proc = run(argv, check=False, timeout=1800)
    (image.parent / "debootstrap.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise LabError(
            f"debootstrap failed with exit code {proc.returncode}",
            hint=f"see {image.parent / 'debootstrap.log'}; is the Debian mirror {mirrors.main} reachable?",
            detail=(proc.stdout + proc.stderr)[-1500:],
        )
    tmp.rename(image)
    seconds = round(time.monotonic() - t0, 1)
    log.info("debootstrap took %.0fs", seconds)
    return seconds


def prepare(base: Path, mirrors: Mirrors) -> None:
    """Idempotent, lab-independent preparation of a debootstrapped tree."""
    etc = base / "etc"
    fsutil.write_text(etc / "apt/sources.list", sources_list(mirrors))
    # identity is per node: host keys, machine-id, hostname, resolv.conf
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "machine-id").write_text("")  # empty: systemd would otherwise treat it as first boot
    for stale in (base / "var/lib/dbus/machine-id", etc / "hostname"):
        stale.unlink(missing_ok=True)
    if etc.joinpath("resolv.conf").is_symlink() or etc.joinpath("resolv.conf").exists():
        (etc / "resolv.conf").unlink()
    fsutil.write_text(etc / "ssh/sshd_config.d/kprov-lab.conf", SSHD_CONF)
    fsutil.write_text(etc / "systemd/system/kprov-cgroup-rw.service", CGROUP_RW_UNIT)
    fsutil.write_text(base / "usr/local/sbin/kprov-fake-sysctls", FAKE_SYSCTLS_SCRIPT, mode=0o755)
    fsutil.write_text(etc / "systemd/system/kprov-fake-sysctls.service", FAKE_SYSCTLS_UNIT)
    fsutil.write_text(etc / "systemd/system.conf.d/kprov-lab.conf", SYSTEM_CONF)
    fsutil.write_text(etc / "systemd/system/user@.service.d/kprov-lab.conf", USER_AT_DROPIN)
    fsutil.write_text(etc / "systemd/journald.conf.d/kprov-lab.conf", JOURNALD_CONF)
    # `sysctl --system` must exit 0 in a node: these Debian files set non-namespaced keys
    for name in ("50-pid-max.conf", "99-protect-links.conf"):
        link = etc / "sysctl.d" / name
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    chroot = ["chroot", str(base)]
    run([*chroot, "systemctl", "enable", "systemd-networkd.service", "ssh.service",
         "kprov-cgroup-rw.service", "kprov-fake-sysctls.service"])  # fmt: skip
    # wait-online would stall boot for 2 min if anything is off; console-getty costs memory per node
    run([*chroot, "systemctl", "mask", "systemd-networkd-wait-online.service", "console-getty.service"])
    run([*chroot, "apt-get", "clean"])
    lists = base / "var/lib/apt/lists"
    for entry in lists.iterdir() if lists.is_dir() else []:
        if entry.is_file() and entry.name != "lock":
            entry.unlink()
    shutil.rmtree(base / "var/cache/apt/archives/partial", ignore_errors=True)
