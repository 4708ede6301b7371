"""`kprov smoke` deletes only a namespace it labelled itself (issue 10 item 13), against a real
kube-apiserver on loopback (the golden suite's etcd + the lab bundle's kube-apiserver 1.20.2)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import yaml

from provisioner.k8s.kubectl import Kubectl
from provisioner.k8s.smoke import SMOKE_LABEL, _ours, run_smoke
from tests.golden.test_tools import apiserver  # noqa: F401 - the loopback API server fixture

SMOKE_VARS = {"smoke_node_port": 30080, "smoke_timeout": 5, "smoke_replicas": 1}


def kubeconfig(tmp_path: Path, kubectl_argv: list[str]) -> Path:
    server = kubectl_argv[kubectl_argv.index("--server") + 1]
    token = kubectl_argv[kubectl_argv.index("--token") + 1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "t", "user": {"token": token}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            }
        )
    )
    path.chmod(0o600)
    return path


def namespace(kubectl_argv: list[str], name: str) -> dict | None:
    out = subprocess.run(
        [*kubectl_argv, "get", "namespace", name, "--ignore-not-found", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else None


def create(kubectl_argv: list[str], name: str, labels: dict[str, str]) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    out = subprocess.run(
        [*kubectl_argv, "create", "-f", "-"], input=json.dumps(doc), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    cm = subprocess.run(
        [*kubectl_argv, "create", "configmap", "keep", "-n", name, "--from-literal=a=b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cm.returncode == 0, cm.stderr


def test_smoke_refuses_a_namespace_it_did_not_make_and_leaves_it_alone(apiserver, tmp_path):  # noqa: F811
    create(apiserver, "team-prod", {"team": "prod"})
    kubectl = Kubectl(kubeconfig(tmp_path, apiserver), control_plane=None)  # type: ignore[arg-type]
    result = run_smoke(SimpleNamespace(hosts=[]), kubectl, {**SMOKE_VARS, "smoke_namespace": "team-prod"}, manifest="")
    assert not result.ok
    assert "team-prod exists and was not made by kprov's smoke test" in result.error
    ns = namespace(apiserver, "team-prod")
    assert ns is not None and ns["status"]["phase"] == "Active" and "deletionTimestamp" not in ns["metadata"]
    assert ns["metadata"]["labels"] == {"team": "prod"}, "the smoke test wrote to a namespace not its own"


def test_the_delete_selector_matches_only_the_labelled_namespace(apiserver, tmp_path):  # noqa: F811
    create(apiserver, "kprov-smoke-old", {SMOKE_LABEL: "true"})
    create(apiserver, "look-alike", {SMOKE_LABEL: "false"})
    kubectl = Kubectl(kubeconfig(tmp_path, apiserver), control_plane=None)  # type: ignore[arg-type]
    for name in ("look-alike", "kprov-smoke-old"):
        res = kubectl.run(["delete", "namespace", *_ours(name), "--ignore-not-found", "--wait=false"], timeout=60)
        assert res.rc == 0, res.stderr
    # no namespace controller here: a deleted namespace stays, marked for deletion
    assert "deletionTimestamp" not in namespace(apiserver, "look-alike")["metadata"]
    assert "deletionTimestamp" in namespace(apiserver, "kprov-smoke-old")["metadata"]
