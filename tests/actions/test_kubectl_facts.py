"""The day-two actions read Nodes, pods and PodDisruptionBudgets through k8s/'s one parser of each kubectl JSON
shape (captured from a 1.20.2 lab cluster); what upgrade and remove-node see of them, and what they drop."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from provisioner.actions.upgrade_plan import NodeFacts, PdbFacts, PodFacts, parse_nodes, parse_pdbs, parse_pods
from provisioner.k8s.drain import PodAction, drain_plan
from provisioner.k8s.drain import parse_pods as k8s_pods
from provisioner.k8s.nodes import nodes_not_in, parse_node

DATA = Path(__file__).resolve().parents[1] / "k8s" / "data"
NODES = json.loads((DATA / "nodes-1.20-3ready.json").read_text())
PODS = (DATA / "remove-node" / "pods-worker-1.20.json").read_text()
PDBS = (DATA / "remove-node" / "pdb-1.20.json").read_text()


def _node(name: str, **edit: object) -> dict:
    item = copy.deepcopy(next(i for i in NODES["items"] if i["metadata"]["name"] == name))
    for path, value in edit.items():
        *parents, last = path.split("__")
        where = item
        for p in parents:
            where = where.setdefault(p, {})
        where[last] = value
    return item


@pytest.mark.parametrize(
    "item, expect",
    [
        # (name, control plane, cordoned, InternalIP) as remove-node's plan reads `kubectl get node NAME -o json`
        (_node("kdev-1"), ("kdev-1", True, False, "10.231.0.11")),
        (_node("kdev-2", spec__unschedulable=True), ("kdev-2", False, True, "10.231.0.12")),
        # a Node that sets a bogus address still exists: its address is left out, the Node is not
        (
            _node("kdev-3", status__addresses=[{"type": "InternalIP", "address": "10.0.0.3; reboot"}]),
            ("kdev-3", False, False, ""),
        ),
        (_node("kdev-3", metadata__name="Bad_Name"), None),
        (None, None),  # --ignore-not-found prints nothing
    ],
    ids=["control-plane", "cordoned-worker", "bogus-ip", "bad-name", "not-found"],
)
def test_one_node(item, expect) -> None:
    n = parse_node(json.dumps(item) if item else "")
    got = None if n is None else (n.name, n.is_control_plane, n.unschedulable, n.internal_ip)
    assert got == expect


def test_upgrade_node_facts_come_from_the_one_node_parser() -> None:
    doc = copy.deepcopy(NODES)
    doc["items"][1] = _node(
        "kdev-2", spec__unschedulable=True, metadata__annotations={"kprov.io/upgrade-cordoned": "1.20.3"}
    )
    doc["items"].append(_node("kdev-3", metadata__name="-bad-"))  # an invalid row is dropped, as everywhere
    facts = parse_nodes(json.dumps(doc))
    assert sorted(facts) == ["kdev-1", "kdev-2", "kdev-3"]
    assert facts["kdev-2"] == NodeFacts("kdev-2", True, "1.20.2", True, True)
    assert nodes_not_in(json.dumps(doc), ["kdev-1"]) == ["kdev-2", "kdev-3"]


def test_upgrade_pod_and_budget_facts_match_the_drain_plan() -> None:
    pods, pdbs = parse_pods(PODS), parse_pdbs(PDBS)
    node = k8s_pods(PODS)[0].node
    plan = drain_plan(node, PODS, PDBS, force=False)
    running = {p.ref for p in plan.pods if p.action is not PodAction.FINISHED}
    assert {f"{p.namespace}/{p.name}" for p in pods if p.node == node} == running
    assert {f"{p.namespace}/{p.name}" for p in pods if p.daemonset} == {
        p.ref for p in plan.pods if p.action is PodAction.DAEMONSET
    }
    assert all(isinstance(p, PodFacts) for p in pods) and all(isinstance(b, PdbFacts) for b in pdbs)
    assert [(f"{b.namespace}/{b.name}", b.disruptions_allowed) for b in pdbs] == [("rtest/web", 1)]
