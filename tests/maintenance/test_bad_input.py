"""Bad input to the maintenance commands: refused before any host is touched, one line + hint, exit 2.

The inventory's hosts are TEST-NET addresses that are never contacted: every refusal here happens before
kprov opens a connection (a connection attempt would fail differently, with exit 3).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.inventory.cli import kprov_forked

INVENTORY = """
cluster: {name: demo, kubernetes_version: "1.30.4"}
defaults: {user: root}
hosts:
  - {name: cp1, address: 192.0.2.10, roles: [control_plane]}
  - {name: w1, address: 192.0.2.11, roles: [worker]}
"""


@pytest.fixture()
def inv(tmp_path: Path) -> Path:
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY)
    return p


def _snapshot(
    tmp_path: Path,
    *,
    data: bytes = b"etcd-snapshot-bytes",
    sha: str | None = None,
    cluster: str | None = "demo",
    write_sum: bool = True,
) -> Path:
    snap = tmp_path / "demo-20261201T070000Z.db"
    snap.write_bytes(data)
    if write_sum:
        (tmp_path / (snap.name + ".sha256")).write_text(f"{sha or hashlib.sha256(data).hexdigest()}  {snap.name}\n")
    if cluster:
        (tmp_path / "demo-20261201T070000Z.json").write_text(json.dumps({"cluster": cluster}))
    return snap


CASES = [
    # (id, argv builder, message needle, hint needle)
    (
        "restore-missing-file",
        lambda t: ["etcd", "restore", "--from", str(t / "nope.db"), "--yes"],
        "snapshot file not found",
        "kprov etcd snapshot",
    ),
    (
        "restore-no-checksum",
        lambda t: ["etcd", "restore", "--from", str(_snapshot(t, write_sum=False)), "--yes"],
        "no checksum file",
        "kprov etcd snapshot",
    ),
    (
        "restore-checksum-mismatch",
        lambda t: ["etcd", "restore", "--from", str(_snapshot(t, sha="0" * 64)), "--yes"],
        "checksum mismatch",
        "corrupt",
    ),
    (
        "restore-other-cluster",
        lambda t: ["etcd", "restore", "--from", str(_snapshot(t, cluster="prod")), "--yes"],
        "a snapshot of cluster prod, not demo",
        "this inventory's cluster",
    ),
    ("snapshot-keep-zero", lambda t: ["etcd", "snapshot", "--keep", "0", "--output", str(t)], "--keep 0", "newest"),
    ("snapshot-output-is-a-file", lambda t: ["etcd", "snapshot", "--output", str(_snapshot(t))], "is a file", "--help"),
    ("certs-negative-warn-days", lambda t: ["certs", "check", "--warn-days", "-1"], "--warn-days -1", "30"),
    ("certs-limit-unknown-host", lambda t: ["certs", "renew", "--limit", "nohost"], "'nohost' is not a host", "cp1"),
    ("certs-limit-no-control-plane", lambda t: ["certs", "renew", "--limit", "w1"], "names no control plane", "cp1"),
]


@pytest.mark.parametrize("argv,needle,hint", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_before_any_change(inv: Path, tmp_path: Path, argv, needle: str, hint: str) -> None:
    res = kprov_forked(*argv(tmp_path), "-i", str(inv))
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), res.stderr
    assert needle in lines[0] and hint in lines[1], res.stderr
    assert "Traceback" not in res.stderr
