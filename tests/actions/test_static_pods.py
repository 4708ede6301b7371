"""The static-pod restart: the manifest stamp (a new pod UID, nothing else changed) and the script's shape."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from provisioner.actions.static_pods import ANNOTATION, ORDER, restart_script, stamp_manifest
from provisioner.errors import KprovError

SCHEDULER = """apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: null
  labels:
    component: kube-scheduler
    tier: control-plane
  name: kube-scheduler
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-scheduler
    - --port=0
    image: k8s.gcr.io/kube-scheduler:v1.20.2
    name: kube-scheduler
"""
APISERVER = """apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 10.0.0.11:6443
    kprov.io/restarted: 20250101T000000Z-aaaaaa
  name: kube-apiserver
spec:
  containers:
  - command: [kube-apiserver, "--secure-port=6443"]
"""


@pytest.mark.parametrize(
    ("manifest", "kept_annotations"),
    [
        (SCHEDULER, {}),
        (APISERVER, {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": "10.0.0.11:6443"}),
    ],
    ids=["no annotations", "kubeadm's annotation and an older stamp"],
)
def test_the_stamp_is_the_only_change(manifest: str, kept_annotations: dict) -> None:
    before = yaml.safe_load(manifest)
    after = yaml.safe_load(stamp_manifest(manifest, "20261201T000000Z-abcdef"))
    assert after["metadata"].pop("annotations") == {**kept_annotations, ANNOTATION: "20261201T000000Z-abcdef"}
    before["metadata"].pop("annotations", None)
    assert after == before
    # two stamps, two different manifests (two pod UIDs)
    assert stamp_manifest(manifest, "a") != stamp_manifest(manifest, "b")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("kind: Pod\nmetadata: [\n", "not valid YAML"),
        ("kind: Deployment\nmetadata: {}\n", "not a Pod"),
        ("", "not a Pod"),
    ],
)
def test_a_manifest_that_is_not_a_pod_is_refused(text: str, why: str) -> None:
    with pytest.raises(KprovError, match=why):
        stamp_manifest(text, "s", source="cp1:/etc/kubernetes/manifests/x.yaml")


@pytest.mark.parametrize("pod", ORDER)
def test_the_script_is_valid_sh_with_no_fixed_tmp_path(pod: str) -> None:
    script = restart_script(pod, stamp_manifest(SCHEDULER, "s"), "https://10.0.0.11:6443", 300)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "/tmp/" not in script
    assert f"mv -f /etc/kubernetes/kprov/staged/{pod}.yaml /etc/kubernetes/manifests/{pod}.yaml" in script
