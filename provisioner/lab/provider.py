"""`provider: lab` for inventories: the hosts of a local lab, brought up on demand.

provider: lab
lab: {name: lab, nodes: 3, control_planes: 1, subnet: 10.231.5.0/24}   # subnet optional
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.errors import InventoryError, KprovError
from provisioner.lab import inventory as inv
from provisioner.lab.lab import DEFAULT_NAME, DEFAULT_NODES, Lab
from provisioner.lab.state import validate_counts, validate_name

SECTION_KEYS = {"name", "nodes", "control_planes", "subnet"}


def validate_section(section: Mapping[str, Any], provider: str = "lab") -> None:
    """Check the `lab:` mapping without touching the machine."""
    unknown = sorted(set(section) - SECTION_KEYS)
    if unknown:
        raise InventoryError(
            f"{provider}.{unknown[0]}: unknown key", hint=f"allowed keys: {', '.join(sorted(SECTION_KEYS))}"
        )
    for key in ("nodes", "control_planes"):
        value = section.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InventoryError(f"{provider}.{key}: expected an integer, got {value!r}", hint="e.g. nodes: 3")
    for key in ("name", "subnet"):
        if section.get(key) is not None and not isinstance(section[key], str):
            raise InventoryError(f"{provider}.{key}: expected a string, got {section[key]!r}")
    try:
        validate_name(section.get("name", DEFAULT_NAME))
        validate_counts(section.get("nodes", DEFAULT_NODES), section.get("control_planes", 1))
    except KprovError as exc:
        raise InventoryError(f"{provider}: {exc.message}", hint=exc.hint) from exc


def _lab(section: Mapping[str, Any]) -> Lab:
    return Lab(section.get("name", DEFAULT_NAME), subnet=section.get("subnet"))


def resolve_hosts(section: Mapping[str, Any], inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Bring the lab up with section's node count; return `hosts:` entries (docs/inventory.md)."""
    validate_section(section)
    lab = _lab(section)
    nodes = lab.up(section.get("nodes", DEFAULT_NODES), section.get("control_planes", 1))
    return [
        {**inv.host_entry(n.name, n.address, list(n.roles)), "user": "root", "ssh_key": str(lab.key_path)}
        for n in nodes
    ]


def connection_defaults(section: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults:` for the lab's hosts: {user, ssh_key, known_hosts} (no machine access)."""
    lab = _lab(section)
    return inv.connection_defaults(lab.key_path, lab.known_hosts_path)
