"""The inventory a node's binaries are installed through during `kprov upgrade`: the target version, that host and
the first control plane (the bundle's seed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.actions.upgrade import target_inventory
from provisioner.inventory.loader import load_inventory

INVENTORY = """
cluster: {name: demo, kubernetes_version: "1.29.4"}
defaults: {user: root}
groups:
  edge: {hosts: [w1, w2]}
hosts:
  - {name: cp1, address: 192.0.2.10, roles: [control_plane]}
  - {name: w1, address: 192.0.2.11, roles: [worker]}
  - {name: w2, address: 192.0.2.12, roles: [worker]}
"""


@pytest.mark.parametrize(
    "only,members",
    [
        (None, {"all": ["cp1", "w1", "w2"], "control_plane": ["cp1"], "worker": ["w1", "w2"], "edge": ["w1", "w2"]}),
        # a worker, and the first control plane that serves it the bundle
        ("w1", {"all": ["cp1", "w1"], "control_plane": ["cp1"], "worker": ["w1"], "edge": ["w1"]}),
        ("cp1", {"all": ["cp1"], "control_plane": ["cp1"], "worker": [], "edge": []}),
    ],
)
def test_target_inventory(tmp_path: Path, only: str | None, members: dict) -> None:
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY)
    inv = load_inventory(str(p), resolve=False)
    t = target_inventory(inv, "1.30.2", only=only)
    assert t.cluster.kubernetes_version == "1.30.2" and inv.cluster.kubernetes_version == "1.29.4"
    assert t.group_members() == members
