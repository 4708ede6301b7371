"""`kubectl get nodes -o json` and `kubectl get node NAME -o json`, parsed once: typed, validated rows (cluster
data is untrusted). Every command that reads Nodes (status, the templates' node table, upgrade, remove-node,
`up`'s unknown-node warning) goes through parse_nodes / parse_node."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: a Kubernetes node name (DNS-1123 subdomain): anything else is not a name the API server accepts
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ready: bool
    kubelet_version: str
    internal_ip: str
    roles: tuple[str, ...] = ()
    conditions: Mapping[str, str] = field(default_factory=dict)
    pod_cidr: str = ""
    unschedulable: bool = False  # cordoned
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_control_plane(self) -> bool:
        """Labelled node-role.kubernetes.io/control-plane (or /master, Kubernetes < 1.24)."""
        return bool({"control-plane", "master"} & set(self.roles))


def _warn_once(text: str) -> None:
    with _WARNED_LOCK:
        if text in _WARNED:
            return
        _WARNED.add(text)
    log.warning("%s", text)


def _valid_ip(value: str) -> str | None:
    """A plain IPv4/IPv6 address in canonical form, or None (no scope ids, no spaces, nothing else)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return None if "%" in value else str(ip)


def _valid_cidr(value: str) -> str | None:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _node(item: Mapping[str, Any], *, keep_invalid: bool = False) -> NodeInfo | None:
    """One Node; None when a value is invalid, or with keep_invalid that value left empty (the name must be
    valid either way)."""
    meta, status = _mapping(item.get("metadata")), _mapping(item.get("status"))
    name = str(meta.get("name", ""))
    addresses = _list(status.get("addresses"))
    raw_ip = next(
        (str(a.get("address", "")) for a in addresses if isinstance(a, dict) and a.get("type") == "InternalIP"), ""
    )
    raw_cidr = str(_mapping(item.get("spec")).get("podCIDR", "") or "")
    conditions = _list(status.get("conditions"))
    conds = {str(c.get("type", "")): str(c.get("status", "")) for c in conditions if isinstance(c, dict)}
    ip = _valid_ip(raw_ip) if raw_ip else ""
    cidr = _valid_cidr(raw_cidr) if raw_cidr else ""
    problems = []
    if not (len(name) <= 253 and _NODE_NAME.fullmatch(name)):
        problems.append(f"name {name!r}")
    if ip is None:
        problems.append(f"InternalIP {raw_ip!r}")
    if cidr is None:
        problems.append(f"podCIDR {raw_cidr!r}")
    if problems and (not keep_invalid or problems[0].startswith("name ")):
        _warn_once(f"ignoring node {name[:80]!r} from the cluster: invalid {', '.join(problems)}")
        return None
    if problems:
        _warn_once(f"node {name!r}: ignoring its invalid {', '.join(problems)}")
    roles = tuple(
        sorted(k.split("/", 1)[1] for k in _mapping(meta.get("labels")) if k.startswith("node-role.kubernetes.io/"))
    )
    kubelet = str(_mapping(status.get("nodeInfo")).get("kubeletVersion", ""))
    spec = _mapping(item.get("spec"))
    annotations = {str(k): str(v) for k, v in _mapping(meta.get("annotations")).items()}
    return NodeInfo(
        name,
        conds.get("Ready") == "True",
        kubelet,
        ip or "",
        roles,
        conds,
        cidr or "",
        unschedulable=bool(spec.get("unschedulable")),
        annotations=annotations,
    )


def parse_nodes(out: str, rc: int = 0) -> list[NodeInfo]:
    """`kubectl get nodes -o json` -> its valid Nodes ([] when it failed or is not JSON yet).

    Any node can set its own status: a row whose name is not a node name, whose InternalIP is not an IP
    address or whose podCIDR is not a network is dropped with a warning, and every value kept is in
    canonical form (it lands in a script that runs as root on every node)."""
    if rc != 0:
        return []
    try:
        doc = json.loads(str(out))
    except ValueError:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("items", []), list):
        return []
    return [n for n in (_node(i) for i in doc.get("items", []) if isinstance(i, dict)) if n is not None]


def parse_node(out: str) -> NodeInfo | None:
    """`kubectl get node NAME -o json [--ignore-not-found]` -> the Node, None when there is none (empty output)
    or its name is invalid. An invalid InternalIP or podCIDR is left empty (warned): the Node still exists."""
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        return None
    return _node(doc, keep_invalid=True) if isinstance(doc, dict) else None


def nodes_not_in(nodes_json: str, names: Iterable[str]) -> list[str]:
    """Node names in `kubectl get nodes -o json` that are not among `names` (sorted)."""
    known = set(names)
    return sorted(n.name for n in parse_nodes(nodes_json) if n.name not in known)


def nodes_table(text: Any) -> list[dict[str, Any]]:
    """The `nodes_table` template filter: [{name, pod_cidr, ip, ready}] of the valid Nodes."""
    return [
        {"name": n.name, "pod_cidr": n.pod_cidr, "ip": n.internal_ip, "ready": n.ready} for n in parse_nodes(str(text))
    ]
