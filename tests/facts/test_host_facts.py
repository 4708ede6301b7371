"""Host facts: each fact's parser over captured output, the preflight checks as tables over HostFacts,
and one real gathering over SSH on netns sshd hosts (one round trip per host)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from provisioner.engine.facts import FactCache
from provisioner.facts import checks
from provisioner.facts.checks import Node, Requirements
from provisioner.facts.host import (
    Address,
    Addresses,
    CgroupVersion,
    Cpus,
    HostFacts,
    KubeletConfigured,
    ListeningPorts,
    MachineId,
    Macs,
    MemoryMb,
    OsRelease,
    ProductUuid,
    host_fact_queries,
)
from provisioner.inventory.loader import load_inventory
from provisioner.transport.ssh import ConnectOptions, SSHHost

IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host noprefixroute \\       valid_lft forever preferred_lft forever
2: eth0@if7    inet 10.239.0.10/24 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0@if7    inet6 fe80::4c5e:1ff:fe2a:11/64 scope link \\       valid_lft forever preferred_lft forever
"""
SS = """\
LISTEN 0      128          0.0.0.0:22        0.0.0.0:*
LISTEN 0      4096       127.0.0.1:10248     0.0.0.0:*
LISTEN 0      128             [::]:6443         [::]:*
"""


@pytest.mark.parametrize(
    "fact, out, expect",
    [
        (OsRelease, 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', ("debian", "12")),
        (OsRelease, 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\n', ("ubuntu", "24.04")),
        (OsRelease, "", ("", "")),
        (MachineId, "4c8e1c0b2f1e4d7a9a3f0e6b5d2c1a09\n", "4c8e1c0b2f1e4d7a9a3f0e6b5d2c1a09"),
        (ProductUuid, "EC2A1B2C-0000-1111-2222-333344445555\n", "ec2a1b2c-0000-1111-2222-333344445555"),
        (ProductUuid, "unknown\n", "unknown"),
        (Cpus, "4\n", 4),
        (Cpus, "", 0),
        (MemoryMb, "4014088\n", 3920),
        (CgroupVersion, "cgroup2fs\n", 2),
        (CgroupVersion, "tmpfs\n", 1),
        (
            Addresses,
            IP_ADDR,
            (
                Address("lo", "127.0.0.1", 8),
                Address("lo", "::1", 128),
                Address("eth0", "10.239.0.10", 24),
                Address("eth0", "fe80::4c5e:1ff:fe2a:11", 64),
            ),
        ),
        (
            Macs,
            "eth0 4E:5E:01:2A:00:11\nlo 00:00:00:00:00:00\n",
            (("eth0", "4e:5e:01:2a:00:11"), ("lo", "00:00:00:00:00:00")),
        ),
        (ListeningPorts, SS, frozenset({22, 10248, 6443})),
        (ListeningPorts, "", frozenset()),
        (KubeletConfigured, "yes\n", True),
        (KubeletConfigured, "no\n", False),
    ],
)
def test_fact_parsers(fact, out, expect):
    assert fact.parse(out) == expect


def test_one_query_per_fact_under_one_resource():
    queries = host_fact_queries()
    assert len({q.name for q in queries}) == len(queries) == 11
    assert {q.resource for q in queries} == {"host"}


def facts(**kw) -> HostFacts:
    base = dict(
        os_id="debian",
        os_version="12",
        hostname="n",
        machine_id="m-1",
        product_uuid="p-1",
        cpus=2,
        memory_mb=2000,
        cgroup_version=2,
        addresses=(Address("eth0", "10.0.0.1", 24),),
        macs=(("eth0", "aa:00:00:00:00:01"),),
        listening=frozenset({22}),
        kubelet_configured=False,
    )
    return HostFacts(**{**base, **kw})


def node(name="n1", roles=("control_plane",), node_ip="10.0.0.1", **kw) -> Node:
    return Node(name, roles, node_ip, facts(**kw))


REQ = Requirements()


@pytest.mark.parametrize(
    "check, n, req, problem",
    [
        ("supported_os", node(), REQ, None),
        (
            "supported_os",
            node(os_id="centos", os_version="9"),
            REQ,
            "n1: unsupported OS centos 9 (kprov supports debian, ubuntu)",
        ),
        ("supported_os", node(os_id="centos"), dataclasses.replace(REQ, supported_os=("centos",)), None),
        ("node_ip", node(), REQ, None),
        (
            "node_ip",
            node(node_ip="10.0.0.9"),
            REQ,
            "n1: node_ip 10.0.0.9 is not an address of any interface on the host",
        ),
        ("cpus", node(cpus=1), REQ, "n1: control planes need 2 CPUs, found 1"),
        ("cpus", node(roles=("worker",), cpus=1), REQ, None),
        ("memory", node(memory_mb=1699), REQ, "n1: only 1699 MiB of memory (needs 1700 MiB)"),
        ("memory", node(roles=("worker",), memory_mb=900), REQ, None),
        ("memory", node(roles=("worker",), memory_mb=899), REQ, "n1: only 899 MiB of memory (needs 900 MiB)"),
        ("ports_free", node(listening=frozenset({22, 6443, 2379})), REQ, "n1: ports already in use: 6443, 2379"),
        ("ports_free", node(roles=("worker",), listening=frozenset({6443})), REQ, None),
        # a node already set up (rerun of up) has its own kubelet and API server listening
        ("ports_free", node(listening=frozenset({6443, 10250}), kubelet_configured=True), REQ, None),
    ],
)
def test_host_checks(check, n, req, problem):
    assert checks.HOST_CHECKS[check](n, req) == problem


LAB = dataclasses.replace(REQ, check_unique_product_uuid=False)


@pytest.mark.parametrize(
    "others, req, problem",
    [
        ([node("n2", machine_id="m-2", product_uuid="p-2", macs=(("eth0", "aa:00:00:00:00:02"),))], REQ, None),
        (
            [node("n2", product_uuid="p-2", macs=(("eth0", "aa:00:00:00:00:02"),))],
            REQ,
            "n1: machine-id m-1 is shared with n2 (cloned VM?); kubeadm needs machine-id, MAC and product_uuid unique",
        ),
        (
            [node("n2", machine_id="m-2", product_uuid="p-2"), node("n3", machine_id="m-3", product_uuid="p-3")],
            REQ,
            "n1: MAC aa:00:00:00:00:01 is shared with n2, n3 (cloned VM?); kubeadm needs machine-id, MAC and product_uuid unique",
        ),
        (
            [node("n2", machine_id="m-2", macs=(("eth0", "aa:00:00:00:00:02"),))],
            REQ,
            "n1: product_uuid p-1 is shared with n2 (cloned VM?); kubeadm needs machine-id, MAC and product_uuid unique",
        ),
        # the lab inventory's documented workaround: nspawn nodes share the machine's product_uuid
        ([node("n2", machine_id="m-2", macs=(("eth0", "aa:00:00:00:00:02"),))], LAB, None),
        # a MAC on another interface than the node_ip's does not count
        (
            [
                node(
                    "n2",
                    machine_id="m-2",
                    product_uuid="p-2",
                    node_ip="10.0.0.2",
                    addresses=(Address("eth1", "10.0.0.2", 24),),
                    macs=(("eth0", "aa:00:00:00:00:01"), ("eth1", "aa:00:00:00:00:02")),
                )
            ],
            REQ,
            None,
        ),
        ([], REQ, None),
    ],
)
def test_unique_identity(others, req, problem):
    me = node()
    assert checks.unique_identity(me, [me, *others], req) == problem


def test_problems_over_all_hosts():
    nodes = {
        "cp": node("cp", memory_mb=100),
        "w": node("w", roles=("worker",), machine_id="m-2", product_uuid="p-2", macs=(("eth0", "aa:00:00:00:00:02"),)),
    }
    assert checks.problems(nodes, REQ) == {"cp": ["cp: only 100 MiB of memory (needs 1700 MiB)"], "w": []}


class CountingSSH(SSHHost):
    scripts = 0

    def script(self, script, **kw):
        CountingSSH.scripts += 1
        return super().script(script, **kw)


@pytest.mark.netns
def test_gathering_on_real_hosts(netns_fleet, tmp_path: Path):
    """All host facts of a host in one round trip, as the host answers them (netns sshd hosts share this
    machine's machine-id and product_uuid but each has its own hostname and eth0)."""
    inv = load_inventory(netns_fleet.inventory(tmp_path / "inv.yaml"))
    gathered = {}
    for host in inv.hosts[:2]:
        ssh = CountingSSH(host, ConnectOptions(connect_timeout=10))
        before = CountingSSH.scripts
        try:
            ssh.connect()
            gathered[host.name] = HostFacts.from_answers(FactCache().gather(ssh, host_fact_queries()))
        finally:
            ssh.close()
        assert CountingSSH.scripts - before == 1
    local_mid = Path("/etc/machine-id").read_text().strip()
    for h in inv.hosts[:2]:
        f = gathered[h.name]
        assert f.hostname == h.name
        assert f.machine_id == local_mid
        assert f.cpus == len(os.sched_getaffinity(0)) and f.memory_mb > 0
        assert f.interface_of(h.address) == "eth0"
        ns_mac = subprocess.run(
            ["ip", "netns", "exec", h.name, "cat", "/sys/class/net/eth0/address"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert f.mac_of(h.address) == ns_mac
        assert 22 in f.listening and f.os_id and f.cgroup_version in (1, 2)
    a, b = (Node(h.name, tuple(h.roles), h.address, gathered[h.name]) for h in inv.hosts[:2])
    # the shared machine-id is what the uniqueness check reports on these hosts
    assert checks.unique_identity(a, [a, b], LAB) == (
        f"{a.name}: machine-id {local_mid} is shared with {b.name} (cloned VM?); kubeadm needs machine-id, MAC and "
        "product_uuid unique"
    )
