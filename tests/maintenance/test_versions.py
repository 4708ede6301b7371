"""Version rules and the version-guard facts: pure functions, table-driven."""

from __future__ import annotations

import pytest

from provisioner.actions.versions import NodeVersions, image_tag, parse_node_versions, version_mismatches
from provisioner.errors import ExitStatus, InputError
from provisioner.k8s.versions import KubeVersion, check_upgrade_step, same_version


@pytest.mark.parametrize(
    "running,target",
    [
        ("1.20.2", "1.20.3-lab.0"),
        ("1.20.2", "1.20.2"),
        ("1.29.4", "1.30.0"),
        ("1.30.9", "1.31.2"),
        ("1.20.3-lab.0", "1.20.3"),
        ("v1.29.4", "v1.29.10"),
    ],
)
def test_allowed_steps(running: str, target: str) -> None:
    check_upgrade_step(running, target)


@pytest.mark.parametrize(
    "running,target,needle,hint",
    [
        ("1.29.4", "1.31.0", "skips a minor version", "upgrade to the latest 1.30.x first"),
        ("1.30.2", "1.29.9", "never downgrades", "keep kubernetes_version at 1.30.2"),
        ("1.20.3", "1.20.3-lab.0", "never downgrades", "etcd snapshot"),
        ("1.20.2", "2.0.0", "skips a minor version", "1.21"),
        ("1.20.2", "1.21", "is not a Kubernetes version", "MAJOR.MINOR.PATCH"),
        ("1.20.2", "latest", "is not a Kubernetes version", "MAJOR.MINOR.PATCH"),
    ],
)
def test_refused_steps(running: str, target: str, needle: str, hint: str) -> None:
    with pytest.raises(InputError) as err:
        check_upgrade_step(running, target)
    assert needle in err.value.message and hint in (err.value.hint or "")
    assert err.value.exit_status == ExitStatus.BAD_INPUT and "\n" not in err.value.message


@pytest.mark.parametrize(
    "a,b,same",
    [
        ("1.20.2", "v1.20.2", True),
        ("1.20.2", "1.20.2+really1.20.2", True),
        ("1.20.2", "1.20.3-lab.0", False),
        ("1.20.3-lab.0", "v1.20.3-lab.0", True),
    ],
)
def test_same_version(a: str, b: str, same: bool) -> None:
    assert same_version(a, b) is same


def test_prerelease_sorts_before_release() -> None:
    assert KubeVersion.parse("1.20.3-lab.0").sort_key() < KubeVersion.parse("1.20.3").sort_key()
    assert KubeVersion.parse("1.20.2").sort_key() < KubeVersion.parse("1.20.3-lab.0").sort_key()


@pytest.mark.parametrize(
    "out,expected",
    [
        # a control plane of the lab (captured)
        (
            "joined yes\nkubelet v1.20.2\nkubeadm v1.20.2\napiserver k8s.gcr.io/kube-apiserver:v1.20.2\n",
            NodeVersions(True, "1.20.2", "1.20.2", "1.20.2"),
        ),
        # a worker half way through an upgrade: binaries new, kubelet still reports the old one until restarted
        (
            "joined yes\nkubelet v1.20.3-lab.0\nkubeadm v1.20.3-lab.0\n",
            NodeVersions(True, "1.20.3-lab.0", "1.20.3-lab.0", ""),
        ),
        # a fresh host with the binaries installed but no cluster
        ("joined no\nkubelet v1.20.2\nkubeadm v1.20.2\n", NodeVersions(False, "1.20.2", "1.20.2", "")),
        ("joined no\n", NodeVersions()),
        ("joined yes\napiserver registry.local:5000/kube-apiserver:v1.30.1\n", NodeVersions(True, "", "", "1.30.1")),
    ],
)
def test_parse_node_versions(out: str, expected: NodeVersions) -> None:
    assert parse_node_versions(out) == expected


@pytest.mark.parametrize(
    "image,tag",
    [
        ("k8s.gcr.io/kube-apiserver:v1.20.2", "v1.20.2"),
        ("registry.local:5000/kube-apiserver", ""),
        ("registry.local:5000/kube-apiserver:v1.30.1@sha256:abc", "v1.30.1"),
    ],
)
def test_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


@pytest.mark.parametrize(
    "wanted,facts,off",
    [
        ("1.20.2", {"cp": NodeVersions(True, "1.20.2", "1.20.2", "1.20.2"), "w": NodeVersions(True, "1.20.2")}, {}),
        (
            "1.20.3-lab.0",
            {"cp": NodeVersions(True, "1.20.2", "1.20.2", "1.20.2"), "w": NodeVersions(True, "1.20.2")},
            {"cp": "1.20.2", "w": "1.20.2"},
        ),
        # fresh hosts (not joined) never block: up installs the wanted version there
        ("1.31.2", {"new": NodeVersions(False, "1.20.2", "1.20.2")}, {}),
        # the API server's version counts on a control plane, whatever the kubelet binary says
        ("1.20.3-lab.0", {"cp": NodeVersions(True, "1.20.3-lab.0", "1.20.3-lab.0", "1.20.2")}, {"cp": "1.20.2"}),
    ],
)
def test_version_mismatches(wanted: str, facts: dict, off: dict) -> None:
    assert version_mismatches(wanted, facts) == off
