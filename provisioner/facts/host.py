"""Typed host facts: one class per fact keeps its probe (a shell snippet) and its pure parser together,
as pyinfra's facts/ do; `HostFacts` is all of them for one host, gathered in one round trip.

    queries = host_fact_queries()            # one FactQuery per fact; the engine batches them
    facts = HostFacts.from_answers({q.name: parsed for ...})

The parsers are pure functions of the probe's output (tests/facts feed them captured output).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioner.facts.parsers import parse_os_release
from provisioner.facts.query import FactQuery

#: the fact cache resource of host facts: nothing kprov changes touches them but a command (`*`)
RESOURCE = "host"


class Fact:
    """One fact: `probe` prints it on the host, `parse(stdout)` types it (pure)."""

    name: ClassVar[str]
    probe: ClassVar[str]

    @staticmethod
    def parse(out: str) -> Any:
        raise NotImplementedError

    @classmethod
    def query(cls) -> FactQuery:
        return FactQuery(f"host:{cls.name}", RESOURCE, cls.probe, lambda out, rc: cls.parse(out))


class OsRelease(Fact):
    name = "os"
    probe = "cat /etc/os-release 2>/dev/null"

    @staticmethod
    def parse(out: str) -> tuple[str, str]:
        info = parse_os_release(out)
        return info.get("ID", ""), info.get("VERSION_ID", "")


class Hostname(Fact):
    name = "hostname"
    probe = "hostname"

    @staticmethod
    def parse(out: str) -> str:
        return out.strip()


class MachineId(Fact):
    name = "machine_id"
    probe = "cat /etc/machine-id 2>/dev/null"

    @staticmethod
    def parse(out: str) -> str:
        return out.strip()


class ProductUuid(Fact):
    """The DMI product_uuid (root only; "unknown" when the machine has none, e.g. some containers)."""

    name = "product_uuid"
    probe = "cat /sys/class/dmi/id/product_uuid 2>/dev/null || echo unknown"

    @staticmethod
    def parse(out: str) -> str:
        return out.strip().lower() or "unknown"


class Cpus(Fact):
    name = "cpus"
    probe = "nproc"

    @staticmethod
    def parse(out: str) -> int:
        text = out.strip()
        return int(text) if text.isdigit() else 0


class MemoryMb(Fact):
    name = "memory_mb"
    probe = "awk '/^MemTotal:/{print $2}' /proc/meminfo"

    @staticmethod
    def parse(out: str) -> int:
        text = out.strip()
        return int(text) // 1024 if text.isdigit() else 0


class CgroupVersion(Fact):
    name = "cgroup_version"
    probe = "stat -fc %T /sys/fs/cgroup 2>/dev/null"

    @staticmethod
    def parse(out: str) -> int:
        return 2 if out.strip() == "cgroup2fs" else 1


@dataclass(frozen=True)
class Address:
    interface: str
    address: str
    prefix: int


class Addresses(Fact):
    name = "addresses"
    probe = "ip -o addr show 2>/dev/null"

    @staticmethod
    def parse(out: str) -> tuple[Address, ...]:
        found = []
        for line in out.splitlines():
            f = line.split()
            if len(f) < 4 or f[2] not in ("inet", "inet6"):
                continue
            addr, _, prefix = f[3].partition("/")
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                continue
            found.append(Address(f[1].split("@", 1)[0], addr, int(prefix) if prefix.isdigit() else 0))
        return tuple(found)


class Macs(Fact):
    name = "macs"
    probe = 'for f in /sys/class/net/*/address; do d=${f%/address}; echo "${d##*/} $(cat "$f")"; done 2>/dev/null'

    @staticmethod
    def parse(out: str) -> tuple[tuple[str, str], ...]:
        pairs = (line.split() for line in out.splitlines())
        return tuple((p[0], p[1].lower()) for p in pairs if len(p) == 2)


class ListeningPorts(Fact):
    name = "listening"
    probe = "ss -Htln 2>/dev/null || true"

    @staticmethod
    def parse(out: str) -> frozenset[int]:
        ports = set()
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 4:
                port = f[3].rsplit(":", 1)[-1]
                if port.isdigit():
                    ports.add(int(port))
        return frozenset(ports)


class KubeletConfigured(Fact):
    name = "kubelet_configured"
    probe = "test -f /etc/kubernetes/kubelet.conf && echo yes || echo no"

    @staticmethod
    def parse(out: str) -> bool:
        return out.strip() == "yes"


FACTS: tuple[type[Fact], ...] = (
    OsRelease,
    Hostname,
    MachineId,
    ProductUuid,
    Cpus,
    MemoryMb,
    CgroupVersion,
    Addresses,
    Macs,
    ListeningPorts,
    KubeletConfigured,
)


def host_fact_queries() -> list[FactQuery]:
    """Every host fact's query (the engine sends them in one framed round trip)."""
    return [f.query() for f in FACTS]


@dataclass(frozen=True)
class HostFacts:
    """What kprov needs to know about a host before it is set up."""

    os_id: str
    os_version: str
    hostname: str
    machine_id: str
    product_uuid: str
    cpus: int
    memory_mb: int
    cgroup_version: int
    addresses: tuple[Address, ...]
    #: (interface, MAC) pairs
    macs: tuple[tuple[str, str], ...]
    listening: frozenset[int]
    kubelet_configured: bool

    @classmethod
    def from_answers(cls, answers: Mapping[str, Any]) -> HostFacts:
        """From the parsed answers of `host_fact_queries()`, keyed by query name."""
        a = {name.removeprefix("host:"): value for name, value in answers.items()}
        os_id, os_version = a["os"]
        return cls(
            os_id,
            os_version,
            a["hostname"],
            a["machine_id"],
            a["product_uuid"],
            a["cpus"],
            a["memory_mb"],
            a["cgroup_version"],
            a["addresses"],
            a["macs"],
            a["listening"],
            a["kubelet_configured"],
        )

    def interface_of(self, ip: str) -> str:
        """The interface that has this address ("" when none does)."""
        return next((a.interface for a in self.addresses if a.address == ip), "")

    def mac_of(self, ip: str) -> str:
        """The MAC of the interface that has this address ("" when none does)."""
        iface = self.interface_of(ip)
        return next((mac for name, mac in self.macs if name == iface), "") if iface else ""
