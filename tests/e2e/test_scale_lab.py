"""Scale on the lab: a 10-node cluster (1 control plane, 9 workers) built, smoke-tested through every
node, and re-run with 0 changes — on nodes whose sshd keeps its distribution defaults (MaxSessions 10),
so every node delegating to the control plane at once must queue, not fail.

The wall time per role is printed (`pytest -s` or the CI log); benchmarks/lab_scale.py measures 3/10/30.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_cluster_e2e import BUNDLE, REPO, _skip_reason, events, kprov

NODES = int(os.environ.get("KPROV_SCALE_NODES", "10"))
LAB = "kps" + os.environ.get("KPROV_TEST_TAG", "")

pytestmark = [pytest.mark.e2e, pytest.mark.lab]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    doc = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())
    doc["lab"] = {"name": LAB, "nodes": NODES, "control_planes": 1}
    doc["cluster"]["name"] = LAB
    doc["cluster"]["bundle"] = str(BUNDLE)
    path = tmp_path_factory.mktemp("scale") / "lab-scale.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    kprov("lab", "down", "--name", LAB, check=False)
    try:
        yield path
    finally:
        kprov("lab", "down", "--name", LAB, check=False)
        (Path.home() / ".kube" / f"kprov-{LAB}.conf").unlink(missing_ok=True)


def test_ten_nodes_up_smoke_and_idempotent(inventory: Path, capsys) -> None:
    up = kprov("up", "-i", str(inventory), timeout=2400)
    assert "smoke test passed" in up.stdout, up.stdout[-3000:]
    answered = {m.group(1) for m in re.finditer(rf"\b({LAB}-\d+)\s+│\s+http://\S+\s+│\s+200\b", up.stdout)}
    assert answered == {f"{LAB}-{i}" for i in range(1, NODES + 1)}, up.stdout[-3000:]
    times = re.search(r"wall time per role: (.*)", up.stdout)
    assert times, up.stdout[-2000:]
    with capsys.disabled():
        print(f"\n[scale] {NODES} nodes, first up — wall time per role: {times.group(1)}")

    again = kprov("up", "-i", str(inventory), "--no-smoke", "--log-format", "json", timeout=1200)
    changed = [e for e in events(again.stdout) if e["changed"]]
    assert not changed, f"second up changed: {[(e['host'], e['task']) for e in changed]}"
    recap = [json.loads(line) for line in again.stdout.splitlines() if line.startswith('{"recap"')]
    assert len(recap) == NODES and all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap), recap
