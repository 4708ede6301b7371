"""Preflight checks: small pure functions over the HostFacts of one host or of all hosts.

Each returns the problem as a one-line message naming the host, or None when the host passes; the
`preflight_check` module (roles/preflight, roles/prerequisites) turns a problem into a failed task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from provisioner.facts.host import HostFacts


@dataclass(frozen=True)
class Node:
    """A host as the checks see it: its inventory name, roles and node_ip, and its gathered facts."""

    name: str
    roles: tuple[str, ...]
    node_ip: str
    facts: HostFacts

    @property
    def is_control_plane(self) -> bool:
        return "control_plane" in self.roles


@dataclass(frozen=True)
class Requirements:
    """The preflight role's settings (roles/preflight/defaults.yaml, overridable like any variable)."""

    supported_os: tuple[str, ...] = ("debian", "ubuntu")
    min_cpus_control_plane: int = 2
    min_memory_mb_control_plane: int = 1700
    min_memory_mb_worker: int = 900
    ports_control_plane: tuple[int, ...] = (6443, 10250, 10257, 10259, 2379, 2380)
    ports_worker: tuple[int, ...] = (10250,)
    #: nspawn lab nodes share the machine's DMI product_uuid: the lab inventory turns this off
    check_unique_product_uuid: bool = True


def supported_os(node: Node, req: Requirements) -> str | None:
    f = node.facts
    if f.os_id in req.supported_os:
        return None
    return f"{node.name}: unsupported OS {f.os_id} {f.os_version} (kprov supports {', '.join(req.supported_os)})"


def node_ip_present(node: Node, req: Requirements) -> str | None:
    if node.facts.interface_of(node.node_ip):
        return None
    return f"{node.name}: node_ip {node.node_ip} is not an address of any interface on the host"


def enough_cpus(node: Node, req: Requirements) -> str | None:
    if not node.is_control_plane or node.facts.cpus >= req.min_cpus_control_plane:
        return None
    return f"{node.name}: control planes need {req.min_cpus_control_plane} CPUs, found {node.facts.cpus}"


def enough_memory(node: Node, req: Requirements) -> str | None:
    need = req.min_memory_mb_control_plane if node.is_control_plane else req.min_memory_mb_worker
    if node.facts.memory_mb >= need:
        return None
    return f"{node.name}: only {node.facts.memory_mb} MiB of memory (needs {need} MiB)"


def ports_free(node: Node, req: Requirements) -> str | None:
    """Before the node is set up (no kubelet.conf yet), Kubernetes' ports must be free."""
    if node.facts.kubelet_configured:
        return None
    wanted = req.ports_control_plane if node.is_control_plane else req.ports_worker
    busy = [str(p) for p in wanted if p in node.facts.listening]
    return f"{node.name}: ports already in use: {', '.join(busy)}" if busy else None


HOST_CHECKS: dict[str, Callable[[Node, Requirements], str | None]] = {
    "supported_os": supported_os,
    "node_ip": node_ip_present,
    "cpus": enough_cpus,
    "memory": enough_memory,
    "ports_free": ports_free,
}


def _identities(node: Node, req: Requirements) -> list[tuple[str, str]]:
    ids = [("machine-id", node.facts.machine_id), ("MAC", node.facts.mac_of(node.node_ip))]
    if req.check_unique_product_uuid:
        ids.append(("product_uuid", node.facts.product_uuid))
    return [(what, value) for what, value in ids if value]


def unique_identity(node: Node, others: Sequence[Node], req: Requirements) -> str | None:
    """kubeadm needs machine-id, the node_ip interface's MAC and product_uuid unique across the cluster
    (a cloned VM shares them). Hostnames are not compared: prerequisites sets each to its inventory name."""
    for what, value in _identities(node, req):
        clash = sorted(o.name for o in others if o.name != node.name and dict(_identities(o, req)).get(what) == value)
        if clash:
            return (
                f"{node.name}: {what} {value} is shared with {', '.join(clash)} (cloned VM?); kubeadm needs "
                "machine-id, MAC and product_uuid unique"
            )
    return None


def problems(nodes: Mapping[str, Node], req: Requirements) -> dict[str, list[str]]:
    """Every check over every host: host name -> its problems (empty when it passes)."""
    everyone = list(nodes.values())
    out: dict[str, list[str]] = {}
    for name, node in nodes.items():
        found = [check(node, req) for check in HOST_CHECKS.values()] + [unique_identity(node, everyone, req)]
        out[name] = [p for p in found if p]
    return out
