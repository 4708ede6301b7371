"""kubeadm knowledge by Kubernetes version: its config API and the pause image tag. One source: the
templates use these through the `kubeadm_api_version` / `pause_version` filters."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

PAUSE_VERSIONS = {
    (1, 20): "3.2",
    (1, 21): "3.4.1",
    (1, 22): "3.5",
    (1, 23): "3.6",
    (1, 24): "3.7",
    (1, 25): "3.8",
    (1, 26): "3.9",
    (1, 27): "3.9",
    (1, 28): "3.9",
    (1, 29): "3.9",
    (1, 30): "3.9",
    (1, 31): "3.10",
    (1, 32): "3.10",
    (1, 33): "3.10",
    (1, 34): "3.10.1",
    (1, 35): "3.10.1",
}

#: (first minor that uses it, kubeadm config API), newest first
KUBEADM_APIS = (
    ((1, 31), "kubeadm.k8s.io/v1beta4"),
    ((1, 22), "kubeadm.k8s.io/v1beta3"),
    ((0, 0), "kubeadm.k8s.io/v1beta2"),
)


def version_tuple(v: Any) -> tuple[int, ...]:
    """'v1.31.2-lab.0' -> (1, 31, 2): the numeric components (pre-release and build dropped)."""
    parts = re.findall(r"\d+", str(v).lstrip("v").split("-")[0].split("+")[0].split("~")[0])
    return tuple(int(p) for p in parts[:3]) or (0,)


def pause_version(k8s_version: Any) -> str:
    """The pause (sandbox) image tag kubeadm uses for a Kubernetes version."""
    major_minor = version_tuple(k8s_version)[:2]
    if major_minor in PAUSE_VERSIONS:
        return PAUSE_VERSIONS[major_minor]
    known = sorted(PAUSE_VERSIONS)
    return PAUSE_VERSIONS[known[-1]] if major_minor > known[-1] else PAUSE_VERSIONS[known[0]]


def kubeadm_api_version(k8s_version: Any) -> str:
    """kubeadm config API: v1beta2 below 1.22, v1beta3 up to 1.30, v1beta4 from 1.31."""
    mm = version_tuple(k8s_version)[:2]
    return next(api for since, api in KUBEADM_APIS if mm >= since)


#: kubectl arguments that read kubeadm's own record of the cluster (kube-system/kubeadm-config)
KUBEADM_CONFIG_GET = ("-n", "kube-system", "get", "configmap", "kubeadm-config", "-o", "json")


@dataclass(frozen=True)
class KubeadmConfig:
    """kube-system/kubeadm-config as kubeadm stored it: its ClusterConfiguration (YAML text, compared and
    rewritten by upgrade --reconfigure) and, below 1.22, its ClusterStatus (the control planes it knows)."""

    cluster_configuration: str = ""
    cluster_status: dict[str, Any] = field(default_factory=dict)

    @property
    def api_endpoints(self) -> dict[str, Any]:
        """ClusterStatus.apiEndpoints: control-plane name -> its advertised address (empty from 1.22 on)."""
        endpoints = self.cluster_status.get("apiEndpoints")
        return endpoints if isinstance(endpoints, dict) else {}


def parse_kubeadm_config(text: str) -> KubeadmConfig:
    """The one reader of `kubectl get configmap kubeadm-config -o json` (KUBEADM_CONFIG_GET)."""
    data = json.loads(text).get("data") or {}
    status = yaml.safe_load(data.get("ClusterStatus") or "") or {}
    return KubeadmConfig(
        cluster_configuration=str(data.get("ClusterConfiguration") or ""),
        cluster_status=status if isinstance(status, dict) else {},
    )
