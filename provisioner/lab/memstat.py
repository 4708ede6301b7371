"""Memory per node: RSS and PSS summed over systemd-nspawn and every process below it.

PSS is the honest per-node figure: the nodes share their libraries through the common lower layer,
so RSS counts the same pages once per node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from provisioner.lab import proc


@dataclass(frozen=True)
class NodeMemory:
    name: str
    processes: int
    rss_kib: int
    pss_kib: int


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = proc.ppid(int(entry))
            if parent is not None:
                kids.setdefault(parent, []).append(int(entry))
    return kids


def _tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _field_kib(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(nodes: list[tuple[str, int]]) -> list[NodeMemory]:
    """nodes: (name, nspawn pid) pairs."""
    kids = _children_map()
    out = []
    for name, pid in nodes:
        pids = _tree(pid, kids)
        rss = sum(_field_kib(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids)
        pss = sum(_field_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids)
        out.append(NodeMemory(name, len(pids), rss, pss))
    return out


def mem_available_kib() -> int:
    return _field_kib(Path("/proc/meminfo"), "MemAvailable:")
