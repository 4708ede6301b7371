"""Good inventories load into the model with the documented defaults and resolutions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from provisioner.inventory.loader import host_vars_layers, load_inventory

CP = "  - {name: cp1, address: 10.1.0.11, roles: [control_plane]}\n"

CASES = [
    (
        "defaults",
        "cluster: {name: demo}\nhosts:\n" + CP,
        {
            "cluster.kubernetes_version": "1.31.2",
            "cluster.cni": "flannel",
            "cluster.pod_cidr": "10.244.0.0/16",
            "cluster.service_cidr": "10.96.0.0/12",
            "cluster.kubernetes_source": "pkgs",
            "provider": "static",
            "cp1.node_ip": "10.1.0.11",
            "cp1.port": 22,
            "cp1.user": "root",
            "cp1.become": False,
            "cp1.groups": ("all", "control_plane"),
            "cp1.ssh_key": None,
            "cp1.bastion": None,
        },
    ),
    (
        "v-prefixed version",
        'cluster: {name: demo, kubernetes_version: "v1.30.4"}\nhosts:\n' + CP,
        {"cluster.kubernetes_version": "1.30.4"},
    ),
    (
        "non-root user becomes by default",
        "cluster: {name: demo}\nhosts:\n  - {name: cp1, address: 10.1.0.11, roles: [control_plane], user: debian}\n",
        {"cp1.user": "debian", "cp1.become": True},
    ),
    (
        "explicit become false wins",
        "cluster: {name: demo}\nhosts:\n"
        "  - {name: cp1, address: 10.1.0.11, roles: [control_plane], user: debian, become: false}\n",
        {"cp1.become": False},
    ),
    (
        "defaults apply, host keys override",
        "cluster: {name: demo}\n"
        "defaults: {user: admin, port: 2222, become: true}\nhosts:\n"
        + CP
        + "  - {name: w1, address: 10.1.0.12, port: 22, user: root}\n",
        {
            "cp1.user": "admin",
            "cp1.port": 2222,
            "cp1.become": True,
            "w1.port": 22,
            "w1.user": "root",
            "w1.become": True,
            "w1.roles": ("worker",),
        },
    ),
    (
        "dns address with node_ip",
        "cluster: {name: demo}\nhosts:\n"
        "  - {name: cp1, address: cp1.example.com, node_ip: 10.1.0.11, roles: [control_plane]}\n",
        {"cp1.address": "cp1.example.com", "cp1.node_ip": "10.1.0.11"},
    ),
    (
        "ipv6 address, IPv4 node_ip",
        "cluster: {name: demo}\nhosts:\n"
        "  - {name: cp1, address: 'fd00::11', node_ip: 10.0.0.11, roles: [control_plane]}\n",
        {"cp1.address": "fd00::11", "cp1.node_ip": "10.0.0.11"},
    ),
    (
        "relative paths resolve against the file",
        "cluster: {name: demo, kubernetes_source: bundle, bundle: b/k.tar}\n"
        "defaults: {ssh_key: keys/id, known_hosts: kh}\nhosts:\n" + CP,
        {"cluster.bundle": "{dir}/b/k.tar", "cp1.ssh_key": "{dir}/keys/id", "cp1.known_hosts": "{dir}/kh"},
    ),
    (
        "duplicate roles collapse, several control planes with endpoint",
        "cluster: {name: demo, control_plane_endpoint: 'api.example.com:6443'}\nhosts:\n"
        "  - {name: cp1, address: 10.1.0.11, roles: [control_plane, control_plane, worker]}\n"
        "  - {name: cp2, address: 10.1.0.12, roles: [control_plane]}\n",
        {
            "cp1.roles": ("control_plane", "worker"),
            "cp1.groups": ("all", "control_plane", "worker"),
            "cluster.control_plane_endpoint": "api.example.com:6443",
        },
    ),
    (
        "same address, other port",
        "cluster: {name: demo}\nhosts:\n" + CP + "  - {name: w1, address: 10.1.0.11, port: 2222, node_ip: 10.1.0.12}\n",
        {"w1.port": 2222},
    ),
    (
        "custom groups and labels",
        "cluster: {name: demo}\nhosts:\n" + CP + "  - {name: w1, address: 10.1.0.12, labels: {disk: ssd, zone: 1}}\n"
        "groups:\n  gpu: {hosts: [w1], vars: {gpu: true}}\n  worker: {vars: {w: 1}}\n  empty:\n",
        {"w1.groups": ("all", "worker", "gpu"), "w1.labels": {"disk": "ssd", "zone": "1"}},
    ),
    (
        "merge key: explicit keys win, earlier sources win, anchors under x- keys",
        "x-conn: &conn {user: admin, port: 2222, become: true}\nx-lab: &lab {port: 2200, labels: {zone: a}}\n"
        "cluster: {name: demo}\nhosts:\n"
        "  - {<<: *conn, name: cp1, address: 10.1.0.11, roles: [control_plane], user: root}\n"
        "  - {<<: [*conn, *lab], name: w1, address: 10.1.0.12}\n",
        {
            "cp1.user": "root",
            "cp1.port": 2222,
            "cp1.become": True,
            "w1.user": "admin",
            "w1.port": 2222,
            "w1.labels": {"zone": "a"},
        },
    ),
    (
        "labels: Kubernetes syntax, prefixed keys, booleans as true/false, empty values",
        "cluster: {name: demo}\nhosts:\n"
        "  - {name: cp1, address: 10.1.0.11, roles: [control_plane], labels: {example.com/tier: web, "
        "node.example.io/gpu: true, spot: false, empty: , v: 1.5, A_b.c-D: x_Y.z-1}}\n",
        {
            "cp1.labels": {
                "example.com/tier": "web",
                "node.example.io/gpu": "true",
                "spot": "false",
                "empty": "",
                "v": "1.5",
                "A_b.c-D": "x_Y.z-1",
            }
        },
    ),
    (
        "bastion from defaults",
        "cluster: {name: demo}\ndefaults: {bastion: {address: jump.example.com, user: jump}}\nhosts:\n" + CP,
        {"cp1.bastion.address": "jump.example.com", "cp1.bastion.user": "jump", "cp1.bastion.port": 22},
    ),
]


def _get(inv, dotted: str):
    head, *rest = dotted.split(".")
    obj = inv.cluster if head == "cluster" else inv if head == "provider" else inv.host(head)
    if head == "provider":
        return inv.provider
    for part in rest:
        obj = getattr(obj, part)
    return dict(obj) if hasattr(obj, "keys") else obj


XFAIL: dict[str, str] = {}


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param(t, e, id=i, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[i])] if i in XFAIL else [])
        for i, t, e in CASES
    ],
)
def test_good_inventory_loads(tmp_path: Path, text: str, expected: dict):
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    inv = load_inventory(path)
    for key, want in expected.items():
        if isinstance(want, str):
            want = want.replace("{dir}", str(tmp_path.resolve()))
        assert _get(inv, key) == want, key


def test_variable_layers_in_precedence_order(tmp_path: Path):
    path = tmp_path / "inv.yaml"
    path.write_text(
        textwrap.dedent("""\
        cluster: {name: demo, vars: {v: cluster}}
        hosts:
          - {name: cp1, address: 10.1.0.11, roles: [control_plane], vars: {v: host}}
        groups:
          all: {vars: {v: all}}
          control_plane: {vars: {v: role-group}}
          mine: {hosts: [cp1], vars: {v: custom}}
        """)
    )
    inv = load_inventory(path)
    layers = [layer.get("v") for layer in host_vars_layers(inv, inv.host("cp1"))]
    assert layers == ["cluster", "all", "role-group", "custom", "host"]
