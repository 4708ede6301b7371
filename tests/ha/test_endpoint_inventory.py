"""`cluster.api_endpoint` in the inventory: good values resolve to the endpoint every node uses, bad values are
bad input (one line naming file, line and key, a hint, exit 2) before any host is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import InventoryError
from provisioner.inventory.loader import load_inventory
from tests.inventory.cli import kprov_forked

# the hosts are unreachable on purpose (TEST-NET-3): a run that got past validation would fail with exit 3
HOSTS = (
    "hosts:\n"
    "  - {name: cp1, address: 203.0.113.11, node_ip: 10.1.0.11, roles: [control_plane]}\n"
    "  - {name: cp2, address: 203.0.113.12, node_ip: 10.1.0.12, roles: [control_plane]}\n"
    "  - {name: w1, address: 203.0.113.21, node_ip: 10.1.0.21}\n"
)

GOOD = [
    # cluster keys -> (api_endpoint, api_vip, api_vip_prefix, api_port, control_plane_endpoint)
    (
        "external",
        "control_plane_endpoint: 'lb.example.com:6443'",
        ("external", None, None, None, "lb.example.com:6443"),
    ),
    (
        "vip default port and /24",
        "api_endpoint: vip, api_vip: 10.1.0.250",
        ("vip", "10.1.0.250", 24, 8443, "10.1.0.250:8443"),
    ),
    (
        "vip with prefix and port",
        "api_endpoint: vip, api_vip: 10.1.200.9/16, api_port: 9443",
        ("vip", "10.1.200.9", 16, 9443, "10.1.200.9:9443"),
    ),
    ("local default port", "api_endpoint: local", ("local", None, None, 6444, "127.0.0.1:6444")),
    ("local own port", "api_endpoint: local, api_port: 7443", ("local", None, None, 7443, "127.0.0.1:7443")),
]

BAD = [
    (
        "unknown mode",
        "api_endpoint: keepalived",
        "cluster.api_endpoint: unknown api_endpoint 'keepalived'",
        "use one of: external, vip, local",
    ),
    (
        "vip without address",
        "api_endpoint: vip",
        "cluster.api_vip: api_endpoint: vip needs cluster.api_vip",
        "set api_vip to a free address",
    ),
    (
        "vip outside the subnet",
        "api_endpoint: vip, api_vip: 10.2.0.250",
        "cluster.api_vip: api_vip 10.2.0.250 is outside 10.1.0.0/24, the subnet of control plane 'cp1' (10.1.0.11)",
        "pick a free address in the control planes' subnet",
    ),
    (
        "vip taken by a node",
        "api_endpoint: vip, api_vip: 10.1.0.21",
        "cluster.api_vip: api_vip 10.1.0.21 is already the address of host 'w1'",
        "pick an unused address",
    ),
    (
        "vip is the broadcast address",
        "api_endpoint: vip, api_vip: 10.1.0.255",
        "cluster.api_vip: api_vip 10.1.0.255 is the network or broadcast address of 10.1.0.0/24",
        "pick a free host",
    ),
    (
        "vip not an address",
        "api_endpoint: vip, api_vip: api.example.com",
        "cluster.api_vip: invalid api_vip 'api.example.com'",
        "give an IPv4 address",
    ),
    (
        "vip IPv6",
        "api_endpoint: vip, api_vip: 'fd00::250'",
        "cluster.api_vip: invalid api_vip 'fd00::250'",
        "give an IPv4 address",
    ),
    (
        "local port in use by the API server",
        "api_endpoint: local, api_port: 6443",
        "cluster.api_port: port 6443 is in use on the nodes by kube-apiserver",
        "pick a free port for the balancer, e.g. 6444",
    ),
    (
        "vip port in use by the kubelet",
        "api_endpoint: vip, api_vip: 10.1.0.250, api_port: 10250",
        "cluster.api_port: port 10250 is in use on the nodes by kubelet",
        "e.g. 8443",
    ),
    (
        "local port in the NodePort range",
        "api_endpoint: local, api_port: 30080",
        "cluster.api_port: port 30080 is in use on the nodes by Kubernetes NodePorts (30000-32767)",
        "pick a free port",
    ),
    (
        "port out of range",
        "api_endpoint: local, api_port: 70000",
        "cluster.api_port: port 70000 out of range",
        "between 1 and 65535",
    ),
    (
        "vip with a user endpoint",
        "api_endpoint: vip, api_vip: 10.1.0.250, control_plane_endpoint: 'x:6443'",
        "cluster.control_plane_endpoint: control_plane_endpoint is set by kprov with api_endpoint: vip",
        "use api_endpoint: external for your own balancer",
    ),
    (
        "vip address with local",
        "api_endpoint: local, api_vip: 10.1.0.250",
        "cluster.api_vip: api_vip is only used with api_endpoint: vip",
        "remove api_vip",
    ),
    (
        "vip address without a mode",
        "api_vip: 10.1.0.250, control_plane_endpoint: 'x:6443'",
        "cluster.api_vip: api_vip is only used with api_endpoint: vip",
        "set api_endpoint: vip",
    ),
]


def _write(tmp_path: Path, cluster: str) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(f"cluster: {{name: ha, {cluster}}}\n" + HOSTS)
    return path


@pytest.mark.parametrize("cluster, expected", [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_endpoint_resolves(tmp_path: Path, cluster: str, expected: tuple) -> None:
    c = load_inventory(_write(tmp_path, cluster)).cluster
    assert (c.api_endpoint, c.api_vip, c.api_vip_prefix, c.api_port, c.control_plane_endpoint) == expected
    view = load_inventory(_write(tmp_path, cluster)).cluster.public_view()
    assert (view["api_endpoint"], view["api_vip"], view["api_port"]) == (expected[0], expected[1], expected[3])


@pytest.mark.parametrize("cluster, message, hint", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_value_is_refused_by_the_loader(tmp_path: Path, cluster: str, message: str, hint: str) -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(_write(tmp_path, cluster))
    assert err.value.message == f"{tmp_path / 'inv.yaml'}:1: {message}"
    assert hint in err.value.hint


@pytest.mark.parametrize("command", [("plan",), ("up", "--no-smoke")])
@pytest.mark.parametrize(
    "cluster, message, hint", [c[1:] for c in BAD[:3] + BAD[7:8]], ids=[c[0] for c in BAD[:3] + BAD[7:8]]
)
def test_bad_value_exits_2_before_any_host(
    tmp_path: Path, command: tuple, cluster: str, message: str, hint: str
) -> None:
    path = _write(tmp_path, cluster)
    res = kprov_forked(*command, "-i", path.name, cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert res.returncode == 2, res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [f"error: inv.yaml:1: {message}", res.stderr.splitlines()[1]]
    assert res.stderr.splitlines()[1].startswith("hint: ") and hint in res.stderr
    assert not (tmp_path / ".kube").exists()
