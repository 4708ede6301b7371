"""Where a lab keeps its files, and its persisted state (JSON)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from provisioner.errors import InputError
from provisioner.lab import fsutil
from provisioner.lab.proc import ProcId

DEFAULT_STATE_ROOT = Path("/var/lib/kprov/labs")
DEFAULT_CACHE_DIR = Path("/var/cache/kprov/lab")
STATE_VERSION = 1
# <name>-<i> must keep "vb-<name>-<i>" (nspawn's host veth) within the 15-byte interface name limit
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
MAX_NODES = 200


def state_root() -> Path:
    return Path(os.environ.get("KPROV_STATE_DIR") or DEFAULT_STATE_ROOT)


def cache_dir() -> Path:
    return Path(os.environ.get("KPROV_CACHE_DIR") or DEFAULT_CACHE_DIR)


def validate_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InputError(
            f"bad lab name {name!r}: use 1-8 characters [a-z0-9], starting with a letter",
            hint="node names are <lab>-<i> and must fit Linux's 15-character interface names (vb-<node>)",
        )
    return name


def validate_counts(nodes: int, control_planes: int) -> None:
    if not 1 <= nodes <= MAX_NODES:
        raise InputError(f"bad node count {nodes}: must be 1..{MAX_NODES}", hint="e.g. kprov lab up --nodes 3")
    if not 1 <= control_planes <= nodes:
        raise InputError(
            f"bad control plane count {control_planes}: must be 1..{nodes} (the node count)",
            hint="the first N nodes are control planes, the rest workers",
        )


@dataclass(frozen=True)
class LabPaths:
    root: Path
    lock: Path

    @classmethod
    def for_lab(cls, name: str, root: Path | None = None) -> LabPaths:
        base = root or state_root()
        return cls(base / name, base / f".{name}.lock")

    @property
    def nodes(self) -> Path:
        return self.root / "nodes"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def proxy(self) -> Path:
        return self.root / "proxy"

    def node_dir(self, node: str) -> Path:
        return self.nodes / node


@dataclass(frozen=True)
class LabState:
    name: str
    subnet: str
    bridge: str
    image: str
    nodes: int
    control_planes: int
    proxy: ProcId | None = None
    version: int = STATE_VERSION

    def with_(self, **changes) -> LabState:
        return replace(self, **changes)

    def to_json(self) -> str:
        data = asdict(self)
        data["proxy"] = self.proxy.to_json() if self.proxy else None
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        data["proxy"] = ProcId.from_json(data.get("proxy"))
        return cls(**data)


def load(paths: LabPaths) -> LabState | None:
    try:
        return LabState.from_json(paths.state.read_text())
    except FileNotFoundError:
        return None


def save(paths: LabPaths, st: LabState) -> None:
    fsutil.write_text(paths.state, st.to_json())


@dataclass(frozen=True)
class NodeRuntime:
    """What a started node leaves on disk (nodes/<node>/runtime.json)."""

    nspawn: ProcId
    started_at: float  # time.time() just before nspawn was exec'd
    boot_seconds: float | None = None  # nspawn exec -> first successful `ssh true`
    cgroups: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(
            {"nspawn": self.nspawn.to_json(), "started_at": self.started_at, "boot_seconds": self.boot_seconds,
             "cgroups": list(self.cgroups)}, indent=2) + "\n"  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> NodeRuntime:
        data = json.loads(text)
        return cls(ProcId.from_json(data["nspawn"]), data["started_at"], data.get("boot_seconds"),  # type: ignore[arg-type]
                   tuple(data.get("cgroups", ())))  # fmt: skip
