"""`provider: lab` for inventories: the hosts of a local lab, brought up on demand.

provider: lab
lab: {name: lab, nodes: 3, control_planes: 1, subnet: 10.231.5.0/24}   # subnet optional
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.errors import KprovError
from provisioner.inventory.check import Check
from provisioner.lab import inventory as inv
from provisioner.lab.lab import DEFAULT_NAME, DEFAULT_NODES, Lab
from provisioner.lab.state import validate_counts, validate_name
from provisioner.providers._common import SectionChecker

SECTION_KEYS = {"name", "nodes", "control_planes", "subnet"}
HINT = "see docs/lab.md: lab: {name, nodes, control_planes, subnet}"


def validate_section(section: Mapping[str, Any], provider: str = "lab", located: Check | None = None) -> None:
    """Check the `lab:` mapping without touching the machine."""
    check = SectionChecker(section, provider, SECTION_KEYS, HINT, located)
    for key in ("nodes", "control_planes"):
        value = section.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            check.fail(key, f"expected an integer, got {value!r}", "e.g. nodes: 3")
    check.string("name")
    check.string("subnet")
    checks = (
        ("name", lambda: validate_name(section.get("name", DEFAULT_NAME))),
        ("nodes", lambda: validate_counts(section.get("nodes", DEFAULT_NODES), section.get("control_planes", 1))),
    )
    for key, test in checks:
        try:
            test()
        except KprovError as exc:
            check.fail(key, exc.message, exc.hint)


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


class LabProvider:
    """`provider: lab` (providers/base.py): the nodes of a local lab, brought up on demand."""

    name = "lab"

    def validate_section(self, section: Mapping[str, Any], where: str, check: Check) -> None:
        validate_section(section, where, check)

    def resolve_hosts(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
        return resolve_hosts(section, inventory)

    def connection_defaults(self, section: Mapping[str, Any]) -> dict[str, Any]:
        return connection_defaults(section)

    def resolve_endpoint(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> str | None:
        return None


PROVIDER = LabProvider()
