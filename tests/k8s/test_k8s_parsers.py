"""Parsers and filters fed with `kubectl get nodes -o json` captured from a real lab cluster (1.20.2, 3 nodes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.engine.templating import make_env, version_cmp
from provisioner.k8s.kubeadm import kubeadm_api_version, pause_version
from provisioner.k8s.nodes import nodes_table as _nodes_table
from provisioner.k8s.nodes import parse_nodes as parse_kubectl_nodes

DATA = Path(__file__).parent / "data"


def test_parse_kubectl_nodes_real_capture() -> None:
    nodes = parse_kubectl_nodes((DATA / "nodes-1.20-3ready.json").read_text())
    assert [n.name for n in nodes] == ["kdev-1", "kdev-2", "kdev-3"]
    assert all(n.ready and n.kubelet_version == "v1.20.2" for n in nodes)
    assert [n.internal_ip for n in nodes] == ["10.231.0.11", "10.231.0.12", "10.231.0.13"]
    assert "master" in nodes[0].roles or "control-plane" in nodes[0].roles


def test_nodes_table_gives_pod_subnets_from_the_cluster() -> None:
    rows = _nodes_table((DATA / "nodes-1.20-3ready.json").read_text())
    assert [r["name"] for r in rows] == ["kdev-1", "kdev-2", "kdev-3"]
    subnets = [r["pod_cidr"] for r in rows]
    assert len(set(subnets)) == 3 and all(s.startswith("10.244.") and s.endswith("/24") for s in subnets)
    assert all(r["ready"] for r in rows)


@pytest.mark.parametrize("text", ["", "not json", "error: the server doesn't have a resource type"])
def test_nodes_table_tolerates_non_json(text: str) -> None:
    assert _nodes_table(text) == []


@pytest.mark.parametrize(
    "rc,text,expected",
    [
        (1, "", []),
        (0, json.dumps({"items": []}), []),
        (
            0,
            json.dumps(
                {
                    "items": [
                        {"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
                    ]
                }
            ),
            [("n1", False)],
        ),
    ],
)
def test_parse_kubectl_nodes_edge_cases(rc: int, text: str, expected: list) -> None:
    assert [(n.name, n.ready) for n in parse_kubectl_nodes(text, rc)] == expected


@pytest.mark.parametrize(
    "version,api",
    [
        ("1.20.2", "kubeadm.k8s.io/v1beta2"),
        ("1.21.14", "kubeadm.k8s.io/v1beta2"),
        ("1.22.0", "kubeadm.k8s.io/v1beta3"),
        ("1.29.6", "kubeadm.k8s.io/v1beta3"),
        ("1.30.9", "kubeadm.k8s.io/v1beta3"),
        ("1.31.0", "kubeadm.k8s.io/v1beta4"),
        ("1.34.1", "kubeadm.k8s.io/v1beta4"),
    ],
)
def test_kubeadm_api_version(version: str, api: str) -> None:
    assert kubeadm_api_version(version) == api


@pytest.mark.parametrize(
    "version,tag",
    [
        ("1.20.2", "3.2"),
        ("1.29.0", "3.9"),
        ("1.31.2", "3.10"),
        ("1.34.0", "3.10.1"),
        ("1.99.0", "3.10.1"),
        ("1.10.0", "3.2"),
    ],
)
def test_pause_version(version: str, tag: str) -> None:
    assert pause_version(version) == tag


@pytest.mark.parametrize(
    "a,op,b,expected",
    [
        ("1.31.2", ">=", "1.31", True),
        ("1.30.9", ">=", "1.31", False),
        ("v1.24.0", ">=", "1.24", True),
        ("1.6.20~ds1-1+deb12u3", "<", "2.0", True),
        ("2.1.4", ">=", "2", True),
        ("1.20.2", "==", "1.20.2", True),
    ],
)
def test_version_compare(a: str, op: str, b: str, expected: bool) -> None:
    assert version_cmp(a, op, b) is expected
    assert make_env().from_string("{{ a is version(b, op) }}").render(a=a, b=b, op=op) == str(expected)
