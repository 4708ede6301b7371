"""A bundle travels with `<bundle>.sha256` (issue 10 item 13): `kprov bundle build` writes it, the inventory
loader refuses a bundle without it (exit 2, before any host) unless `cluster.allow_unverified_bundle: true`,
and a bundle that does not match it is refused even with the flag. Real bundles built from fake binaries."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from provisioner.bundle import BuildSpec, build
from provisioner.errors import InputError
from provisioner.inventory.loader import load_inventory
from provisioner.k8s.context import cluster_vars
from provisioner.secrets import Redactor
from tests.bundle.helpers import VERSION, make_source_dir
from tests.inventory.cli import kprov_forked


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Path, Path]:
    """Two real bundles of the same version that differ (their labels)."""
    root = tmp_path_factory.mktemp("bundles")
    src = make_source_dir(root / "src")
    one = build(BuildSpec(kubernetes_version=VERSION, from_dir=src, label="one"), root / "one.tar") and root / "one.tar"
    two = build(BuildSpec(kubernetes_version=VERSION, from_dir=src, label="two"), root / "two.tar") and root / "two.tar"
    return one, two


def test_build_writes_the_checksum_file(bundles):
    one, _ = bundles
    digest = hashlib.sha256(one.read_bytes()).hexdigest()
    assert (one.parent / "one.tar.sha256").read_text() == f"{digest}  one.tar\n"


def _inventory(tmp_path: Path, bundle: Path, allow: bool | None = None) -> Path:
    flag = "" if allow is None else f"\n  allow_unverified_bundle: {str(allow).lower()}"
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        f'cluster:\n  name: demo\n  kubernetes_version: "{VERSION}"\n  kubernetes_source: bundle\n'
        f"  bundle: {bundle}{flag}\nhosts:\n  - {{name: cp1, address: 127.0.0.11, roles: [control_plane]}}\n"
    )
    return inv


def _copy(tmp_path: Path, bundle: Path, *, sidecar_of: Path | None) -> Path:
    """`bundle` copied as tmp/k.tar, with the .sha256 of `sidecar_of` beside it (or none)."""
    dest = tmp_path / "k.tar"
    shutil.copyfile(bundle, dest)
    if sidecar_of is not None:
        digest = (sidecar_of.parent / f"{sidecar_of.name}.sha256").read_text().split()[0]
        (tmp_path / "k.tar.sha256").write_text(f"{digest}  k.tar\n")
    return dest


@pytest.mark.parametrize(
    ("sidecar", "allow", "outcome"),
    [
        ("same", None, "verified"),
        ("same", True, "verified"),
        ("none", True, "unverified"),
        ("none", None, "no checksum file"),
        ("none", False, "no checksum file"),
        ("other", None, "does not match"),
        ("other", True, "does not match"),
    ],
    ids=["verified", "verified-flag", "missing-flag", "missing", "missing-flag-false", "mismatch", "mismatch-flag"],
)
def test_bundle_checksum_file(tmp_path, monkeypatch, bundles, sidecar, allow, outcome):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the sha256 memo of provisioner.hashing
    one, two = bundles
    bundle = _copy(tmp_path, one, sidecar_of={"same": one, "other": two, "none": None}[sidecar])
    inv = _inventory(tmp_path, bundle, allow)
    if outcome in ("verified", "unverified"):
        values = cluster_vars(load_inventory(inv), Redactor())
        assert values["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
        return
    proc = kprov_forked(
        "plan", "-i", str(inv), env={"KPROV_HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and outcome in lines[0] and lines[1].startswith("hint: "), proc.stderr
    if outcome == "no checksum file":
        assert "allow_unverified_bundle: true" in lines[1]
    if outcome == "does not match":  # refused by the run (the loader only reads the file), before any host
        with pytest.raises(InputError, match="does not match k.tar.sha256"):
            cluster_vars(load_inventory(inv), Redactor())
