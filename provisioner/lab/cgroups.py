"""Per-node cgroups in every v1 hierarchy and in the v2 (unified) one.

Without --keep-unit + machined, systemd-nspawn leaves a node in its caller's cgroups, so every node
would share one cgroup namespace root and each node's systemd/kubelet would see (and delete) the
others' slices. Each node therefore gets `<caller's cgroup>/kprov-<lab>/<node>` in every hierarchy,
joined before nspawn is exec'd (see _cgexec.py).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.lab import proc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    controllers: frozenset[str]  # empty for cgroup2
    path: str  # this process's cgroup path inside it


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root, mountpoint, fstype, superopts) of every cgroup mount."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if rfields and rfields[0] in ("cgroup", "cgroup2"):
            out.append((fields[3], fields[4].replace("\\040", " "), rfields[0], rfields[2] if len(rfields) > 2 else ""))
    return out


def hierarchies() -> list[Hierarchy]:
    """This process's cgroup in each mounted hierarchy; /proc/self/cgroup is read once (it changes as we move)."""
    mounts = _mounts()
    out = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, ctrl, path = line.split(":", 2)
        want = frozenset(c for c in ctrl.split(",") if c)
        for root, mnt, fstype, superopts in mounts:
            if want:
                opts = frozenset(superopts.split(","))
                if fstype != "cgroup" or not want <= opts:
                    continue
            elif fstype != "cgroup2":
                continue
            rel = path[len(root) :] if root != "/" and path.startswith(root) else path
            out.append(Hierarchy(Path(mnt), want, rel))
            break
    return out


def lab_dir_name(lab: str) -> str:
    return f"kprov-{lab}"


def node_dirs(lab: str, node: str) -> list[Path]:
    """Where create_node_cgroups() puts the node when called from this process's cgroups."""
    return [h.mountpoint / h.path.lstrip("/") / lab_dir_name(lab) / node for h in hierarchies()]


def create_node_cgroups(lab: str, node: str) -> list[Path]:
    """Create the node's cgroup in every hierarchy; returns the directories."""
    dirs = []
    for h in hierarchies():
        base = h.mountpoint / h.path.lstrip("/")
        parent = base / lab_dir_name(lab)
        leaf = parent / node
        leaf.mkdir(parents=True, exist_ok=True)
        if (base / "cpuset.cpus").exists():
            # a v1 cpuset child starts empty and refuses tasks until cpus/mems are set
            for d in (parent, leaf):
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (d / knob).write_text((base / knob).read_text())
        dirs.append(leaf)
    return dirs


def procs_in(directory: Path) -> list[int]:
    """PIDs in a cgroup directory and all its descendants."""
    pids: list[int] = []
    for dirpath, _dirs, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                pids += [int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()]
            except OSError:
                continue
    return pids


def kill_all(dirs: list[Path], timeout: float = 10.0) -> None:
    """SIGKILL everything left in the node's cgroups (the last resort after a stop)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = sorted({p for d in dirs if d.is_dir() for p in procs_in(d)})
        if not pids:
            return
        if time.monotonic() >= deadline:
            log.warning("processes survive SIGKILL in %s: %s", dirs[0], pids)
            return
        for pid in pids:
            proc.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_tree(d: Path) -> None:
    """rmdir a cgroup directory and its descendants, deepest first."""
    if d.is_dir():
        for dirpath, _dirs, _files in os.walk(d, topdown=False):
            _rmdir(Path(dirpath))


def remove(dirs: list[Path]) -> None:
    """rmdir the node cgroups and their `kprov-<lab>` parent when it is empty (never anything above)."""
    for d in dirs:
        remove_tree(d)
        if d.parent.name.startswith("kprov-"):
            _rmdir(d.parent)


def _rmdir(d: Path) -> None:
    try:
        d.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
            raise
        if exc.errno != errno.ENOENT:
            log.debug("cgroup %s not removed: %s", d, exc.strerror)


def find_lab_dirs(lab: str, max_depth: int = 5) -> list[Path]:
    """Every `kprov-<lab>` directory in any hierarchy, wherever the caller's cgroup was.

    Used by down/up to recover cgroups whose recorded paths were lost.
    """
    name = lab_dir_name(lab)
    found = []
    for _root, mnt, _fstype, _opts in _mounts():
        base_depth = mnt.rstrip("/").count("/")
        for dirpath, dirnames, _files in os.walk(mnt):
            if name in dirnames:
                found.append(Path(dirpath) / name)
            if dirpath.count("/") - base_depth >= max_depth:
                dirnames[:] = []
            else:
                # never descend into lab cgroups or into containers' own trees
                dirnames[:] = [d for d in dirnames if not d.startswith("kprov-")]
    return found
