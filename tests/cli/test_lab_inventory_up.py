"""The inventory `kprov lab inventory` prints builds a cluster on the lab it describes (issue 15).

As the issue says: `kprov lab up --name x --nodes 2`, then `kprov plan -i "$(kprov lab inventory --name x |
tail -1)"` exits 0, and `kprov up` with the same inventory builds a cluster that passes the smoke test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioner.lab import inventory as lab_inventory
from tests.cli.helpers import kprov
from tests.fixtures.lab import require_lab

LAB = f"kpi{os.environ.get('KPROV_TEST_TAG', '')}"[:8]

pytestmark = [pytest.mark.lab, pytest.mark.e2e]


def test_plan_and_up_with_the_generated_lab_inventory() -> None:
    require_lab()
    if not Path(lab_inventory.bundle_path()).is_file():
        pytest.skip(f"needs the lab bundle {lab_inventory.bundle_path()} (scripts/setup builds it)")
    try:
        created = kprov("lab", "up", "--name", LAB, "--nodes", "2", timeout=900)
        assert created.returncode == 0, created.stderr[-3000:]
        printed = kprov("lab", "inventory", "--name", LAB)
        assert printed.returncode == 0, printed.stderr
        inventory = printed.stdout.splitlines()[-1]

        plan = kprov("plan", "-i", inventory)
        assert plan.returncode == 0, f"{plan.stdout[-3000:]}\n{plan.stderr[-3000:]}"

        up = kprov("up", "-i", inventory, timeout=1800)
        assert up.returncode == 0, f"{up.stdout[-4000:]}\n{up.stderr[-3000:]}"
        assert "smoke test passed: the NodePort answered through all 2 nodes" in up.stdout + up.stderr
    finally:
        kprov("lab", "down", "--name", LAB, timeout=600)
        (Path.home() / ".kube" / f"kprov-{LAB}.conf").unlink(missing_ok=True)
