"""`kprov smoke`: deploy a hello app, reach its NodePort through every node, scale, check again, clean up."""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.actions.run import RunRequest, Warn, quiet
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.k8s.context import cluster_vars, kubeconfig_path
from provisioner.k8s.kubectl import Kubectl
from provisioner.k8s.smoke import SmokeResult, run_smoke, smoke_vars
from provisioner.secrets import Redactor


@dataclass(frozen=True)
class SmokeOptions:
    keep: bool = False
    node_port: int | None = None


@dataclass(frozen=True)
class SmokeReport:
    result: SmokeResult
    nodes: int

    @property
    def ok(self) -> bool:
        return self.result.ok


def smoke(req: RunRequest, opts: SmokeOptions = SmokeOptions(), *, inventory: Inventory | None = None,
          progress: Warn = quiet) -> SmokeReport:
    """Run the smoke test through the first control plane's kubectl; the report says whether it passed."""
    inv = inventory or load_inventory(req.inventory)
    variables = smoke_vars(inv, cluster_vars(inv, Redactor()), req.extra_vars)
    if opts.node_port is not None:
        variables["smoke_node_port"] = opts.node_port
    kubectl = Kubectl(kubeconfig_path(inv), inv.control_planes[0], req.connect())
    try:
        result = run_smoke(inv, kubectl, variables, keep=opts.keep, progress=progress)
    finally:
        kubectl.close()
    return SmokeReport(result, len(inv.hosts))
