"""`kprov smoke`: deploy a hello app, reach its NodePort through every node, scale, check again, clean up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.actions.run import RunRequest, Warn, quiet
from provisioner.engine.roles import ROLES_DIR, TEMPLATES_DIR
from provisioner.engine.templating import Renderer, make_env, resolve_vars
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.inventory.yamlsource import load_yaml_file
from provisioner.k8s.context import cluster_vars, kubeconfig_path
from provisioner.k8s.kubectl import Kubectl
from provisioner.k8s.smoke import SmokeResult, run_smoke
from provisioner.secrets import Redactor


def smoke_vars(inv: Inventory, base_vars: Mapping[str, Any], extra_vars: Mapping[str, Any]) -> dict[str, Any]:
    """The smoke role's defaults < computed cluster vars < cluster.vars < -e, rendered."""
    defaults = load_yaml_file(ROLES_DIR / "smoke" / "defaults.yaml").data or {}
    merged = {
        **defaults,
        **base_vars,
        **inv.cluster.vars,
        **extra_vars,
        "cluster": inv.cluster.public_view(),
        "hosts": [h.public_view() for h in inv.hosts],
    }
    return resolve_vars(make_env(TEMPLATES_DIR), merged)


def render_manifest(variables: Mapping[str, Any]) -> str:
    return Renderer(make_env(TEMPLATES_DIR), dict(variables), "smoke").render_file("smoke/hello.yaml.j2")


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


def smoke(
    req: RunRequest, opts: SmokeOptions = SmokeOptions(), *, inventory: Inventory | None = None, progress: Warn = quiet
) -> SmokeReport:
    """Run the smoke test through the first control plane's kubectl; the report says whether it passed."""
    inv = inventory or load_inventory(req.inventory)
    variables = smoke_vars(inv, cluster_vars(inv, Redactor()), req.extra_vars)
    if opts.node_port is not None:
        variables["smoke_node_port"] = opts.node_port
    kubectl = Kubectl(kubeconfig_path(inv), inv.control_planes[0], req.connect())
    try:
        result = run_smoke(
            inv, kubectl, variables, manifest=render_manifest(variables), keep=opts.keep, progress=progress
        )
    finally:
        kubectl.close()
    return SmokeReport(result, len(inv.hosts))
