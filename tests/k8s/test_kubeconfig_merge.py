"""`kprov kubeconfig --merge`: entries under unique names, other entries kept, new files 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from provisioner.cli.cluster import merge_kubeconfig
from provisioner.errors import InputError


def _kubeconfig(server: str, user_token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {"server": server, "certificate-authority-data": "Q0E="}}],
        "users": [{"name": "kubernetes-admin", "user": {"token": user_token}}],
        "contexts": [
            {"name": "kubernetes-admin@kubernetes", "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}}
        ],
        "current-context": "kubernetes-admin@kubernetes",
    }


@pytest.mark.parametrize(
    "existing,use,expected_current",
    [
        (None, False, "kprov-demo"),  # new file: the only context becomes current
        ({"current-context": "other"}, False, "other"),  # never steals the current context unasked
        ({"current-context": "other"}, True, "kprov-demo"),  # --use switches
    ],
)
def test_merge(tmp_path: Path, existing: dict | None, use: bool, expected_current: str) -> None:
    src = tmp_path / "kprov-demo.conf"
    src.write_text(yaml.safe_dump(_kubeconfig("https://10.0.0.1:6443", "t1")))
    target = tmp_path / "config"
    if existing is not None:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "other", "cluster": {"server": "https://x"}}],
            "users": [{"name": "other", "user": {}}],
            "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
            **existing,
        }
        target.write_text(yaml.safe_dump(doc))
        target.chmod(0o640)
    merge_kubeconfig(src, target, "demo", use)
    merge_kubeconfig(src, target, "demo", use)  # idempotent: no duplicates
    doc = yaml.safe_load(target.read_text())
    assert [c["name"] for c in doc["clusters"]].count("kprov-demo") == 1
    assert {"name": "kprov-demo", "context": {"cluster": "kprov-demo", "user": "kprov-demo-admin"}} in doc["contexts"]
    assert doc["current-context"] == expected_current
    if existing is not None:
        assert "other" in [c["name"] for c in doc["clusters"]]
    # a new file is private; an existing one keeps its mode, as with kubectl (tests/cli/test_kubeconfig.py)
    assert stat.S_IMODE(target.stat().st_mode) == (0o600 if existing is None else 0o640)


def test_merge_rejects_non_kubeconfig(tmp_path: Path) -> None:
    src = tmp_path / "bad.conf"
    src.write_text("just: text\n")
    with pytest.raises(InputError):
        merge_kubeconfig(src, tmp_path / "config", "demo")
