"""A fact query: a shell snippet that asks the host something, and the pure parser that types its answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FactQuery:
    """Ask the host something. `script` prints the answer on stdout; `parse(stdout, rc)` types it.

    `resource` names what a change invalidates it by (`file:/etc/x`, `sysctl`, `host`, ...)."""

    name: str
    resource: str
    script: str
    parse: Callable[[str, int], Any]
