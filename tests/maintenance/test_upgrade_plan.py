"""`kprov upgrade` planning (pure): the step rules, the order, resumability from facts, the drain preview, and
the `pkgs` steps as golden files (1.29 -> 1.30, 1.30 -> 1.31: they cannot run on the lab, which has no
Kubernetes apt repository). Regenerate after an intended change: KPROV_UPDATE_GOLDEN=1 pytest tests/maintenance
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from provisioner.actions.upgrade_plan import (
    NodeFacts,
    PdbFacts,
    PodFacts,
    build_plan,
    drain_preview,
    node_steps,
    parse_nodes,
    parse_pdbs,
    parse_pods,
)
from provisioner.errors import ExitStatus, InputError

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KPROV_UPDATE_GOLDEN") == "1"
APT_BASE = "https://pkgs.example.invalid/core:/stable:"  # the role default is used for real; any base renders the same


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"no golden file {path.name}; create it with KPROV_UPDATE_GOLDEN=1")
    if path.read_text() != text:
        diff = "".join(difflib.unified_diff(path.read_text().splitlines(True), text.splitlines(True)))
        pytest.fail(f"steps differ from {path.name} (KPROV_UPDATE_GOLDEN=1 to accept):\n{diff}")


@pytest.mark.parametrize("target", ["1.30.2", "1.31.1"])
@pytest.mark.parametrize("kind", ["first-control-plane", "control-plane", "worker"])
def test_pkgs_steps_golden(kind: str, target: str) -> None:
    steps = node_steps(kind, "pkgs", target, APT_BASE)
    golden(f"pkgs-to-{target}-{kind}.sh", "".join(f"{s}\n" for s in steps))


def facts(*, kubelet: str = "1.29.4", ready: bool = True, **kw) -> dict[str, NodeFacts]:
    names = ("cp1", "cp2", "w1", "w2")
    return {
        n: NodeFacts(
            n,
            kw.get(f"{n}_ready", ready),
            kw.get(f"{n}_kubelet", kubelet),
            kw.get(f"{n}_unschedulable", False),
            kw.get(f"{n}_cordoned", False),
        )
        for n in names
    }


def plan(nodes=None, apiservers=None, target="1.30.2", **kw):
    return build_plan(
        control_planes=["cp1", "cp2"],
        workers=["w1", "w2"],
        nodes=nodes or facts(),
        apiservers=apiservers or {"cp1": "1.29.4", "cp2": "1.29.4"},
        target=target,
        source="pkgs",
        apt_base=APT_BASE,
        **kw,
    )


def test_order_first_control_plane_then_control_planes_then_workers() -> None:
    p = plan()
    assert [(n.host, n.kind) for n in p.nodes] == [
        ("cp1", "first-control-plane"),
        ("cp2", "control-plane"),
        ("w1", "worker"),
        ("w2", "worker"),
    ]
    assert "kubeadm upgrade apply v1.30.2 --yes" in p.nodes[0].steps
    assert all("kubeadm upgrade node" in n.steps for n in p.nodes[1:])
    assert all(n.steps[:2] == ("cordon", "drain") and n.steps[-1] == "uncordon" for n in p.nodes)
    assert p.running == "1.29.4" and len(p.pending) == 4


@pytest.mark.parametrize(
    "kw,needle,hint",
    [
        ({"target": "1.31.0"}, "skips a minor version", "1.30.x first"),
        ({"target": "1.28.9"}, "never downgrades", "keep kubernetes_version"),
        ({"nodes": facts(w2_ready=False)}, "node w2 is NotReady", "healthy cluster"),
        ({"nodes": {k: v for k, v in facts().items() if k != "w1"}}, "node w1 is not part of the cluster", "join it"),
        ({"apiservers": {"cp1": "1.29.4", "cp2": ""}}, "cp2: no API server found", "kprov status"),
        ({"nodes": facts(w1_kubelet="1.31.0")}, "newer than the target", "never be newer"),
        ({"serial": 0}, "--serial 0", "one worker at a time"),
    ],
)
def test_refused_before_any_change(kw: dict, needle: str, hint: str) -> None:
    with pytest.raises(InputError) as err:
        plan(**kw)
    assert needle in err.value.message and hint in (err.value.hint or "")
    assert err.value.exit_status == ExitStatus.BAD_INPUT


def test_resumes_from_facts() -> None:
    # interrupted after the control planes and w1: only w2 is left; w1 was left cordoned by kprov
    nodes = facts(
        cp1_kubelet="1.30.2", cp2_kubelet="1.30.2", w1_kubelet="1.30.2", w1_unschedulable=True, w1_cordoned=True
    )
    p = plan(nodes=nodes, apiservers={"cp1": "1.30.2", "cp2": "1.30.2"})
    assert [(n.host, n.done, n.uncordon_only) for n in p.nodes] == [
        ("cp1", True, False),
        ("cp2", True, False),
        ("w1", True, True),
        ("w2", False, False),
    ]
    assert [n.host for n in p.pending] == ["w1", "w2"] and p.nodes[2].steps == ("uncordon",)
    # the running version is the lowest API server: a half-upgraded control plane still counts as 1.29
    half = plan(apiservers={"cp1": "1.30.2", "cp2": "1.29.4"}, nodes=facts(cp1_kubelet="1.30.2"))
    assert half.running == "1.29.4" and [n.host for n in half.pending] == ["cp2", "w1", "w2"]


def test_an_operator_cordon_is_left_alone() -> None:
    nodes = facts(kubelet="1.30.2", w1_unschedulable=True, w1_cordoned=False)
    p = plan(nodes=nodes, apiservers={"cp1": "1.30.2", "cp2": "1.30.2"})
    assert not p.pending


def test_prerelease_target_needs_experimental_upgrades() -> None:
    p = build_plan(
        control_planes=["cp1"],
        workers=["w1"],
        nodes={"cp1": NodeFacts("cp1", True, "1.20.2"), "w1": NodeFacts("w1", True, "1.20.2")},
        apiservers={"cp1": "1.20.2"},
        target="1.20.3-lab.0",
        source="bundle",
    )
    assert "kubeadm upgrade apply v1.20.3-lab.0 --yes --allow-experimental-upgrades" in p.nodes[0].steps
    assert p.notes and "pre-release" in p.notes[0]


PODS = [
    PodFacts("app", "web-1", "w1", {"app": "web"}),
    PodFacts("app", "web-2", "w2", {"app": "web"}),
    PodFacts("app", "db-0", "w1", {"app": "db"}),
    PodFacts("kube-system", "kube-proxy-x", "w1", {"k8s-app": "kube-proxy"}, daemonset=True),
    PodFacts("kube-system", "etcd-cp1", "cp1", {"component": "etcd"}, mirror=True),
]
PDBS = [PdbFacts("app", "web", {"app": "web"}, 1), PdbFacts("app", "db", {"app": "db"}, 0)]


@pytest.mark.parametrize(
    "node,evicted,blocking",
    [
        ("w1", ("app/web-1", "app/db-0"), ("app/db",)),
        ("w2", ("app/web-2",), ()),
        ("cp1", (), ()),
    ],
)
def test_drain_preview(node: str, evicted: tuple, blocking: tuple) -> None:
    assert drain_preview(node, PODS, PDBS) == (evicted, blocking)


def test_parsers_of_kubectl_json() -> None:
    nodes = parse_nodes(
        '{"items": [{"metadata": {"name": "w1", "annotations": {"kprov.io/upgrade-cordoned": "1.30.2"}},'
        ' "spec": {"unschedulable": true}, "status": {"nodeInfo": {"kubeletVersion": "v1.29.4"},'
        ' "conditions": [{"type": "Ready", "status": "True"}]}}]}'
    )
    assert nodes == {"w1": NodeFacts("w1", True, "1.29.4", True, True)}
    pods = parse_pods(
        '{"items": [{"metadata": {"namespace": "a", "name": "p", "labels": {"x": "1"},'
        ' "ownerReferences": [{"kind": "DaemonSet"}]}, "spec": {"nodeName": "w1"}, "status": {"phase": "Running"}},'
        ' {"metadata": {"namespace": "a", "name": "done"}, "spec": {"nodeName": "w1"}, "status": {"phase": "Succeeded"}}]}'
    )
    assert pods == [PodFacts("a", "p", "w1", {"x": "1"}, daemonset=True)]
    pdbs = parse_pdbs(
        '{"items": [{"metadata": {"namespace": "a", "name": "b"}, "spec": {"selector": {"matchLabels":'
        ' {"x": "1"}}}, "status": {"disruptionsAllowed": 0}}]}'
    )
    assert pdbs == [PdbFacts("a", "b", {"x": "1"}, 0)]
