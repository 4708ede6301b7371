"""Where the smoke test reaches each node's NodePort from the control machine: the node's SSH address, unless that
is a loopback tunnel endpoint (Vagrant NAT's 127.0.0.1:2222, an SSH relay) that forwards SSH only."""

from __future__ import annotations

import pytest

from provisioner.inventory.model import Host
from provisioner.k8s.smoke import probe_address


@pytest.mark.parametrize(
    "address,node_ip,want",
    [
        ("10.0.0.11", "10.0.0.11", "10.0.0.11"),  # one address for both
        ("203.0.113.7", "172.31.5.9", "203.0.113.7"),  # EC2: the public address; the private one is not reachable
        ("node1.example", "10.0.0.11", "node1.example"),  # a name: as SSH reaches it
        ("127.0.0.1", "192.168.56.11", "192.168.56.11"),  # Vagrant NAT port forward: the host-only address
        ("127.0.0.2", "10.9.0.3", "10.9.0.3"),  # all of 127/8 is loopback
        ("::1", "fd00::11", "fd00::11"),  # IPv6 loopback
        ("localhost", "10.0.0.11", "10.0.0.11"),
        ("LocalHost", "10.0.0.11", "10.0.0.11"),
        ("127.0.0.1", "", "127.0.0.1"),  # no cluster address known: nothing better to try
        ("2001:db8::5", "10.0.0.5", "2001:db8::5"),
    ],
)
def test_probe_address(address: str, node_ip: str, want: str) -> None:
    assert probe_address(Host(name="n", address=address, node_ip=node_ip)) == want
