"""Kubernetes version arithmetic: parse, compare, and the upgrade step rules (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from provisioner.errors import InputError

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True, order=True)
class KubeVersion:
    """A Kubernetes release: major.minor.patch with an optional pre-release label (`1.20.3-lab.0`)."""

    major: int
    minor: int
    patch: int
    pre: str = ""

    @classmethod
    def parse(cls, text: str) -> KubeVersion:
        m = _VERSION.match(text.strip())
        if not m:
            raise ValueError(f"not a Kubernetes version: {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4) or "")

    def sort_key(self) -> tuple[int, int, int, int, str]:
        # a pre-release sorts before its release (1.20.3-lab.0 < 1.20.3), as in semver
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, self.pre)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")


def parse_version(text: str, what: str = "version") -> KubeVersion:
    """Parse a version given by the user: a bad one is an InputError."""
    try:
        return KubeVersion.parse(text)
    except ValueError:
        raise InputError(
            f"{what} {text!r} is not a Kubernetes version", hint='give MAJOR.MINOR.PATCH, e.g. "1.30.4"'
        ) from None


def same_version(a: str, b: str) -> bool:
    """Equal releases, whatever the `v` prefix or build metadata."""
    try:
        return KubeVersion.parse(a) == KubeVersion.parse(b)
    except ValueError:
        return a.strip().lstrip("v") == b.strip().lstrip("v")


def check_upgrade_step(running: str, target: str) -> None:
    """Refuse a downgrade or a skipped minor (kubeadm upgrades one minor at a time)."""
    cur, new = KubeVersion.parse(running), parse_version(target, "target version")
    if new.sort_key() < cur.sort_key():
        raise InputError(
            f"{target} is older than the running {cur}: kprov never downgrades",
            hint=f"keep kubernetes_version at {cur} (restore an etcd snapshot to go back)",
        )
    if new.major != cur.major or new.minor > cur.minor + 1:
        nxt = f"{cur.major}.{cur.minor + 1}"
        raise InputError(
            f"{cur} -> {target} skips a minor version: upgrade one minor at a time",
            hint=f"upgrade to the latest {nxt}.x first (kprov upgrade --to {nxt}.N), then to {target}",
        )
