"""Helpers for lab tests: the CLI as a subprocess, and 'what is left of a lab on this machine'."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from provisioner.lab import cgroups, fsutil, network, proc
from provisioner.lab.host import run
from provisioner.lab.state import LabPaths


def kprov(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (its one error boundary included) as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", *args], capture_output=True, text=True, timeout=timeout
    )


def leftovers(name: str) -> dict[str, list[str]]:
    """Everything of lab `name` still on the machine; all lists empty once it is gone."""
    paths = LabPaths.for_lab(name)
    root = str(paths.root)
    return {
        "links": network.lab_links(name),
        "mounts": [str(m) for m in fsutil.mounts_under(paths.root)],
        # zombies are not processes of the lab: this host's PID 1 does not always reap orphans
        "processes": [f"{p} {' '.join(proc.cmdline(p))}" for p in proc.find(lambda argv: any(root in a for a in argv))],
        "cgroups": [str(d) for d in cgroups.find_lab_dirs(name)],
        # the empty lock file stays on purpose: unlinking a lock others may wait on breaks mutual exclusion
        "state": [str(p) for p in (paths.root,) if p.exists()],
        "iptables": [line for line in run(["iptables", "-w", "-S"]).stdout.splitlines() if f"kprov-lab:{name}" in line],
    }


def nothing_left(name: str) -> bool:
    return not any(leftovers(name).values())


def base_image_present(image: Path) -> bool:
    return (image / ".kprov-image.json").is_file() and (image / "usr/bin/systemd").exists()
