"""`kprov status`: per node its roles, kubelet version, Ready, and drift from the desired state (a quick plan)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from provisioner.actions.run import RunRequest, run_plays
from provisioner.engine.events import RunReport
from provisioner.engine.roles import load_plays
from provisioner.errors import ExitStatus, KprovError
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.k8s.context import kubeconfig_path
from provisioner.k8s.kubectl import Kubectl
from provisioner.k8s.nodes import parse_nodes


@dataclass(frozen=True)
class NodeStatus:
    host: str
    roles: tuple[str, ...]
    #: the Node's kubelet version ("" when not joined or the API server did not answer)
    kubelet: str
    #: True/False: the Node's Ready condition; None: no such Node (not joined)
    ready: bool | None
    #: "none", "N change(s) pending", "unreachable" or "check failed: ..."
    drift: str


@dataclass(frozen=True)
class CertExpiry:
    name: str
    host: str
    expires: datetime
    days_left: int


@dataclass(frozen=True)
class StatusReport:
    cluster: str
    nodes: tuple[NodeStatus, ...]
    #: why the API server could not be asked ("" when it answered)
    api_error: str = ""
    #: the certificate that expires first (None: none found or not checked)
    nearest_cert: CertExpiry | None = None
    #: why certificates were not checked ("" when they were)
    certs_error: str = ""
    unreachable: bool = False

    @property
    def exit_status(self) -> int:
        return int(ExitStatus.UNREACHABLE) if self.unreachable else int(ExitStatus.SUCCESS)


def _nodes(inv: Inventory, req: RunRequest) -> tuple[dict[str, tuple[bool, str]], str]:
    kubectl = Kubectl(kubeconfig_path(inv), inv.control_planes[0], req.connect())
    try:
        res = kubectl.run(["get", "nodes", "-o", "json"], timeout=30)
        if res.rc != 0:
            return {}, ""
        return {n.name: (n.ready, n.kubelet_version) for n in parse_nodes(res.stdout)}, ""
    except Exception as exc:
        return {}, str(exc)
    finally:
        kubectl.close()


def _drift(report: RunReport, host: str) -> str:
    r = report.hosts.get(host)
    if r and r.failed:
        return f"check failed: {r.first_error[:60]}"
    if r and r.unreachable:
        return "unreachable"
    return f"{r.changed} change(s) pending" if r and r.changed else "none"


def _nearest_cert(inv: Inventory, req: RunRequest) -> tuple[CertExpiry | None, str]:
    from provisioner.actions.certs import check_certs

    try:
        report = check_certs(inv, req.connect())
    except KprovError as exc:
        return None, exc.message
    n = report.nearest
    if n is None:
        return None, ""
    return CertExpiry(n.name, n.host, n.expires, n.days_left(report.now)), ""


def status(req: RunRequest) -> StatusReport:
    """Ask the API server for the Nodes, plan every host (check mode, events discarded), check certificates."""
    from provisioner.reporting.sinks import JsonSink

    inv = load_inventory(req.inventory)
    nodes, api_error = _nodes(inv, req)
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        report = run_plays(req, inv, load_plays(), JsonSink(devnull), check=True)
    rows = tuple(
        NodeStatus(
            h.name,
            tuple(h.roles),
            nodes.get(h.name, (False, ""))[1],
            nodes[h.name][0] if h.name in nodes else None,
            _drift(report, h.name),
        )
        for h in inv.hosts
    )
    nearest, certs_error = _nearest_cert(inv, req)
    return StatusReport(inv.cluster.name, rows, api_error, nearest, certs_error, bool(report.unreachable_hosts))
