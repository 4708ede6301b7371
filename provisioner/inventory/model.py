"""Typed, frozen inventory model: what the rest of kprov reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

ROLES = ("control_plane", "worker")
CNIS = ("flannel", "calico", "bridge")
PROVIDERS = ("static", "lab", "ec2", "vagrant")
KUBERNETES_SOURCES = ("pkgs", "bundle")
#: how nodes and users reach the API servers (docs/ha.md): the user's balancer, a keepalived VIP + haproxy
#: on the control planes, or a proxy on 127.0.0.1 of every node
API_ENDPOINTS = ("external", "vip", "local")
#: the built-in balancer's port when the inventory gives none (6443 is the API servers' own)
DEFAULT_API_PORTS = {"vip": 8443, "local": 6444}
#: concurrent SSH channels per connection; OpenSSH's sshd allows 10 (MaxSessions) by default
DEFAULT_MAX_SESSIONS = 8


def frozen_map(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class Bastion:
    address: str
    port: int = 22
    user: str = "root"
    ssh_key: str | None = None


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    node_ip: str
    port: int = 22
    user: str = "root"
    ssh_key: str | None = None
    become: bool = False
    roles: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: frozen_map({}))
    vars: Mapping[str, Any] = field(default_factory=lambda: frozen_map({}))
    known_hosts: str | None = None
    bastion: Bastion | None = None
    groups: tuple[str, ...] = ()
    max_sessions: int = DEFAULT_MAX_SESSIONS

    @property
    def is_control_plane(self) -> bool:
        return "control_plane" in self.roles

    def public_view(self) -> dict[str, Any]:
        """The host as templates see it (`host`, `hosts[i]`)."""
        return {
            "name": self.name,
            "address": self.address,
            "node_ip": self.node_ip,
            "port": self.port,
            "roles": list(self.roles),
            "labels": dict(self.labels),
            "groups": list(self.groups),
        }


@dataclass(frozen=True)
class Cluster:
    name: str
    kubernetes_version: str
    pod_cidr: str
    service_cidr: str
    cni: str
    control_plane_endpoint: str | None
    kubernetes_source: str
    bundle: str | None
    container_runtime: Mapping[str, Any]
    vars: Mapping[str, Any]
    api_endpoint: str = "external"
    api_vip: str | None = None
    api_vip_prefix: int | None = None
    api_port: int | None = None
    #: a bundle without its <bundle>.sha256 is used anyway (a mismatching .sha256 is still refused)
    allow_unverified_bundle: bool = False
    #: `up` runs the smoke test afterwards (false: e.g. production clusters, no test pods on reruns)
    smoke: bool = True
    #: extra SANs of the API server certificate (names/addresses), after kprov's own; changed on a running
    #: cluster with `kprov upgrade --reconfigure`
    api_cert_sans: tuple[str, ...] = ()

    def public_view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kubernetes_version": self.kubernetes_version,
            "pod_cidr": self.pod_cidr,
            "service_cidr": self.service_cidr,
            "cni": self.cni,
            "control_plane_endpoint": self.control_plane_endpoint,
            "kubernetes_source": self.kubernetes_source,
            "bundle": self.bundle,
            "container_runtime": {"version": None, "registry_mirrors": {}, **dict(self.container_runtime)},
            "api_endpoint": self.api_endpoint,
            "api_vip": self.api_vip,
            "api_vip_prefix": self.api_vip_prefix,
            "api_port": self.api_port,
            "api_cert_sans": list(self.api_cert_sans),
        }


@dataclass(frozen=True)
class Group:
    name: str
    hosts: tuple[str, ...]
    vars: Mapping[str, Any]


@dataclass(frozen=True)
class Inventory:
    path: Path
    provider: str
    cluster: Cluster
    hosts: tuple[Host, ...]
    groups: Mapping[str, Group]
    provider_section: Mapping[str, Any] = field(default_factory=lambda: frozen_map({}))

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def control_planes(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_control_plane)

    @property
    def workers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if not h.is_control_plane)

    def group_members(self) -> dict[str, list[str]]:
        """Group name -> host names, including the built-in `all`, `control_plane`, `worker`."""
        out = {name: list(g.hosts) for name, g in self.groups.items()}
        out["all"] = [h.name for h in self.hosts]
        out["control_plane"] = [h.name for h in self.control_planes]
        out["worker"] = [h.name for h in self.hosts if "worker" in h.roles]
        return out
