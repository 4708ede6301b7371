"""remove-node's pure parts, fed with kubectl JSON and etcd answers captured on a lab cluster (1.20.2, etcd 3.4):
the drain plan (what happens to each pod, PodDisruptionBudgets), label selectors, the etcd quorum rules,
the member list, and Nodes the inventory no longer lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.actions.remove_node import (
    BalancerChange,
    EtcdChange,
    RemovalPlan,
    check_allowed,
)
from provisioner.errors import InputError
from provisioner.k8s import etcd_members as em
from provisioner.k8s.drain import (
    PodAction,
    drain_plan,
    nodes_not_in,
    parse_budgets,
    selector_matches,
)

DATA = Path(__file__).parent / "data" / "remove-node"
WORKER_PODS = (DATA / "pods-worker-1.20.json").read_text()
CP_PODS = (DATA / "pods-control-plane-1.20.json").read_text()
PDBS = (DATA / "pdb-1.20.json").read_text()


def _with_allowed(allowed: int) -> str:
    doc = json.loads(PDBS)
    for item in doc["items"]:
        item["status"]["disruptionsAllowed"] = allowed
    return json.dumps(doc)


@pytest.mark.parametrize(
    "force,pdbs,expected",
    [
        # captured: 2 web replicas under a PDB (minAvailable 1 -> 1 disruption allowed), a bare pod, coredns, kube-proxy
        (
            False,
            PDBS,
            {
                "coredns": (PodAction.EVICT, "", False),
                "kube-proxy": (PodAction.DAEMONSET, "", False),
                "lonely": (PodAction.NEEDS_FORCE, "", False),
                "web#1": (PodAction.EVICT, "rtest/web", False),
                "web#2": (PodAction.EVICT, "rtest/web", True),
            },
        ),
        (
            True,
            PDBS,
            {
                "coredns": (PodAction.EVICT, "", False),
                "kube-proxy": (PodAction.DAEMONSET, "", False),
                "lonely": (PodAction.DELETE, "", False),
                "web#1": (PodAction.EVICT, "rtest/web", False),
                "web#2": (PodAction.EVICT, "rtest/web", True),
            },
        ),
        # the budget allows no disruption now: both replicas wait for replacements
        (
            False,
            _with_allowed(0),
            {
                "coredns": (PodAction.EVICT, "", False),
                "kube-proxy": (PodAction.DAEMONSET, "", False),
                "lonely": (PodAction.NEEDS_FORCE, "", False),
                "web#1": (PodAction.EVICT, "rtest/web", True),
                "web#2": (PodAction.EVICT, "rtest/web", True),
            },
        ),
        # no budgets at all
        (
            False,
            json.dumps({"items": []}),
            {
                "coredns": (PodAction.EVICT, "", False),
                "kube-proxy": (PodAction.DAEMONSET, "", False),
                "lonely": (PodAction.NEEDS_FORCE, "", False),
                "web#1": (PodAction.EVICT, "", False),
                "web#2": (PodAction.EVICT, "", False),
            },
        ),
    ],
)
def test_drain_plan_of_a_worker(force: bool, pdbs: str, expected: dict) -> None:
    plan = drain_plan("rdev-3", WORKER_PODS, pdbs, force=force)
    got, webs = {}, 0
    for p in plan.pods:
        key = p.name.split("-")[0] if p.name != "lonely" else "lonely"
        key = {"kube": "kube-proxy"}.get(key, key)
        if key == "web":
            webs += 1
            key = f"web#{webs}"
        got[key] = (p.action, p.pdb, p.pdb_waits)
    assert got == expected
    assert len(plan.moving) == (4 if force else 3)
    assert [p.name for p in plan.needs_force] == ([] if force else ["lonely"])


def test_drain_plan_of_a_control_plane_keeps_static_and_daemonset_pods() -> None:
    plan = drain_plan("rdev-1", CP_PODS, PDBS, force=False)
    actions = {p.name: p.action for p in plan.pods}
    assert actions == {
        "etcd-rdev-1": PodAction.STATIC,
        "kube-apiserver-rdev-1": PodAction.STATIC,
        "kube-controller-manager-rdev-1": PodAction.STATIC,
        "kube-scheduler-rdev-1": PodAction.STATIC,
        "kube-proxy-w6nzg": PodAction.DAEMONSET,
    }
    assert plan.moving == () and plan.needs_force == ()


def test_finished_pods_and_emptydir_are_reported() -> None:
    doc = json.loads(WORKER_PODS)
    web = next(i for i in doc["items"] if i["metadata"]["name"].startswith("web-"))
    web["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    lonely = next(i for i in doc["items"] if i["metadata"]["name"] == "lonely")
    lonely["status"]["phase"] = "Succeeded"
    plan = drain_plan("rdev-3", json.dumps(doc), PDBS, force=False)
    by_name = {p.name: p for p in plan.pods}
    assert by_name["lonely"].action is PodAction.FINISHED
    assert by_name[web["metadata"]["name"]].emptydir
    assert plan.needs_force == ()


def test_budgets_parse_both_field_names() -> None:
    assert [(b.ref, b.disruptions_allowed) for b in parse_budgets(PDBS)] == [("rtest/web", 1)]
    old = {
        "items": [
            {
                "metadata": {"name": "x", "namespace": "n"},
                "spec": {"selector": {}},
                "status": {"podDisruptionsAllowed": 2},
            }
        ]
    }
    assert [(b.ref, b.disruptions_allowed) for b in parse_budgets(json.dumps(old))] == [("n/x", 2)]


@pytest.mark.parametrize(
    "selector,labels,matches",
    [
        (None, {"app": "web"}, False),  # no selector: matches nothing
        ({}, {"app": "web"}, True),  # empty selector: everything
        ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}, {"tier": "b"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, {"tier": "b"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {"tier": "b"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {}, True),
        (
            {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "t", "operator": "Exists"}]},
            {"app": "web"},
            False,
        ),
    ],
)
def test_selector_matches(selector, labels, matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


@pytest.mark.parametrize(
    "members,healthy,removed_healthy,refused",
    [
        (1, 1, True, "last etcd member"),
        (2, 2, True, "2 members"),  # the case: a second control plane of three is refused
        (2, 1, False, "lost quorum"),
        (3, 3, True, None),  # 3 -> 2: quorum kept
        (3, 2, False, None),  # the dead one goes: 2 of 2 healthy
        (3, 2, True, "1 of 2 members would be healthy"),
        (3, 1, False, "lost quorum"),
        (4, 4, True, None),
        (4, 3, True, None),  # 3 left, 2 healthy: quorum kept
        (5, 3, True, "2 of 4 members would be healthy"),
        (5, 4, False, None),
    ],
)
def test_quorum_rules(members: int, healthy: int, removed_healthy: bool, refused: str | None) -> None:
    why = em.removal_refusal(members, healthy, removed_healthy)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


@pytest.mark.parametrize("members,quorum", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum(members: int, quorum: int) -> None:
    assert em.quorum(members) == quorum


def test_member_list_from_the_gateway_with_health() -> None:
    listing = (DATA / "etcd-member-list-3.4.txt").read_text()
    [m] = em.parse_members(listing)
    assert (m.id, m.name, m.peer_urls, m.healthy) == (
        "10851536840857159963",
        "rdev-1",
        ("https://10.231.2.11:2380",),
        False,
    )
    [m] = em.parse_members(listing + '\nhealth 10851536840857159963 {"health":"true"}\n')
    assert m.healthy and m.is_host("rdev-1", "10.0.0.9") and m.is_host("other", "10.231.2.11")
    assert not m.is_host("rdev-2", "10.231.2.12")
    [m] = em.parse_members(listing + "\nhealth 10851536840857159963 \n")
    assert not m.healthy


@pytest.mark.parametrize("bad", ["", "12; rm -rf /", "abc", "-1"])
def test_remove_member_script_takes_only_a_numeric_id(bad: str) -> None:
    with pytest.raises(ValueError):
        em.remove_member_script(bad)


def test_nodes_not_in_the_inventory() -> None:
    nodes = (DATA / "nodes-after-removal-1.20.json").read_text()
    assert nodes_not_in(nodes, ["rdev-1", "rdev-2"]) == []
    assert nodes_not_in(nodes, ["rdev-1"]) == ["rdev-2"]
    assert nodes_not_in("", ["x"]) == []


# --- the plan as the preview shows it, and what is refused -----------------------------------------------


_MEMBERS = tuple(em.EtcdMember(str(i), f"cp-{i}", (f"https://10.0.0.{i}:2380",), (), True) for i in (1, 2, 3))


def _plan(**kw) -> RemovalPlan:
    base = {
        "host": "w-3",
        "in_inventory": True,
        "control_plane": False,
        "reachable": True,
        "unreachable_why": "",
        "api_via": "cp-1",
        "node_exists": True,
        "cordoned": False,
        "drain": drain_plan("rdev-3", WORKER_PODS, PDBS, force=True),
        "etcd": None,
        "balancer": None,
        "refusals": (),
        "blockers": (),
        "warnings": (),
    }
    return RemovalPlan(**{**base, **kw})


@pytest.mark.parametrize(
    "plan,expected",
    [
        (
            _plan(),
            [
                "cordon Node w-3",
                "drain w-3: evict 4 pod(s), 1 held by a PodDisruptionBudget until replacements are Ready",
                "stop kubelet on w-3 (it would register the Node again)",
                "delete Node w-3",
                "clean w-3: the reset role limited to it (kubeadm reset, CNI, iptables, kubelet)",
            ],
        ),
        (
            _plan(reachable=False, unreachable_why="unreachable (no route)", cordoned=True),
            [
                "cordon Node w-3 (already cordoned)",
                "no drain (host unreachable): its 4 pod(s) go with the Node and their controllers recreate them elsewhere",
                "delete Node w-3",
                "skip the host cleanup of w-3: unreachable (no route)",
            ],
        ),
        (
            _plan(node_exists=False, drain=None),
            [
                "Node w-3: not in the cluster (already deleted)",
                "clean w-3: the reset role limited to it (kubeadm reset, CNI, iptables, kubelet)",
            ],
        ),
        (
            _plan(
                host="cp-3",
                control_plane=True,
                drain=None,
                node_exists=False,
                etcd=EtcdChange("cp-1", _MEMBERS, _MEMBERS[2]),
                balancer=BalancerChange("vip", ("cp-1", "cp-2"), "balancer (vip): re-render on cp-1, cp-2"),
            ),
            [
                "Node cp-3: not in the cluster (already deleted)",
                "remove etcd member cp-3 (3) via cp-1: 3 -> 2 members",
                "stop and disable keepalived/haproxy on cp-3",
                "balancer (vip): re-render on cp-1, cp-2",
                "clean cp-3: the reset role limited to it (kubeadm reset, CNI, iptables, kubelet)",
            ],
        ),
        (
            _plan(
                host="cp-3",
                control_plane=True,
                drain=None,
                node_exists=False,
                etcd=EtcdChange("cp-1", _MEMBERS[:2], None),
            ),
            [
                "Node cp-3: not in the cluster (already deleted)",
                "etcd: cp-3 is not a member (already removed)",
                "clean cp-3: the reset role limited to it (kubeadm reset, CNI, iptables, kubelet)",
            ],
        ),
    ],
)
def test_plan_steps(plan: RemovalPlan, expected: list[str]) -> None:
    assert plan.steps() == expected


@pytest.mark.parametrize(
    "refusals,blockers,force,refused",
    [
        ((), (), False, None),
        (("etcd has 2 members",), (), False, "etcd has 2 members"),
        (("etcd has 2 members",), (), True, None),
        ((), ("cp-1 is the last control plane",), True, "last control plane"),
    ],
)
def test_check_allowed(refusals, blockers, force: bool, refused: str | None) -> None:
    plan = _plan(refusals=refusals, blockers=blockers)
    if refused is None:
        check_allowed(plan, force)
    else:
        with pytest.raises(InputError) as exc:
            check_allowed(plan, force)
        assert refused in exc.value.message and exc.value.hint
