"""upgrade --reconfigure and remove-node read kube-system/kubeadm-config through k8s/kubeadm.parse_kubeadm_config
(one reader): the ClusterConfiguration text as stored, and below 1.22 the ClusterStatus's control planes."""

from __future__ import annotations

import json

import pytest

from provisioner.k8s.kubeadm import KubeadmConfig, parse_kubeadm_config

CLUSTER_CONFIGURATION = "apiServer:\n  certSANs:\n  - 10.231.0.10\nkind: ClusterConfiguration\n"
CLUSTER_STATUS_120 = (
    "apiEndpoints:\n"
    "  kdev-1:\n    advertiseAddress: 10.231.0.11\n    bindPort: 6443\n"
    "  kdev-2:\n    advertiseAddress: 10.231.0.12\n    bindPort: 6443\n"
    "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterStatus\n"
)


def _configmap(data: dict[str, str] | None) -> str:
    cm: dict[str, object] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeadm-config"}}
    if data is not None:
        cm["data"] = data
    return json.dumps(cm)


@pytest.mark.parametrize(
    "data, configuration, endpoints",
    [
        # 1.20 (v1beta2): both keys, two control planes known to kubeadm
        (
            {"ClusterConfiguration": CLUSTER_CONFIGURATION, "ClusterStatus": CLUSTER_STATUS_120},
            CLUSTER_CONFIGURATION,
            ["kdev-1", "kdev-2"],
        ),
        # 1.22 on: no ClusterStatus
        ({"ClusterConfiguration": CLUSTER_CONFIGURATION}, CLUSTER_CONFIGURATION, []),
        # a ConfigMap without data (or an unexpected ClusterStatus shape) reads as empty, not as an error
        (None, "", []),
        ({"ClusterStatus": "- not a mapping"}, "", []),
        ({"ClusterStatus": "apiEndpoints: [kdev-1]"}, "", []),
    ],
)
def test_parse_kubeadm_config(data: dict[str, str] | None, configuration: str, endpoints: list[str]) -> None:
    stored = parse_kubeadm_config(_configmap(data))
    assert isinstance(stored, KubeadmConfig)
    assert stored.cluster_configuration == configuration
    assert sorted(stored.api_endpoints) == endpoints
