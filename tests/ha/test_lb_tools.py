"""The balancer's rendered configs (the golden files of tests/golden/expected/lb-*) are accepted by the real tools:
`haproxy -c -f` and `keepalived -t -f` (Debian packages haproxy and keepalived; scripts/setup installs them).
keepalived checks that the VRRP interface exists: it runs in a new network namespace holding that interface."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.golden.cases import CASES, Case, ids, render

HAPROXY = [c for c in CASES if c.template == "loadbalancer/haproxy.cfg.j2"]
KEEPALIVED = [c for c in CASES if c.template == "loadbalancer/keepalived.conf.j2"]


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        pytest.skip(f"{name} is not installed here: apt-get install -y {name}")
    return path


@pytest.mark.parametrize("case", HAPROXY, ids=ids(HAPROXY))
def test_haproxy_accepts_config(case: Case, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render(case))
    proc = subprocess.run([_tool("haproxy"), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Configuration file is valid" in proc.stdout + proc.stderr


@pytest.mark.parametrize("case", KEEPALIVED, ids=ids(KEEPALIVED))
def test_keepalived_accepts_config(case: Case, tmp_path: Path) -> None:
    keepalived = _tool("keepalived")
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("keepalived -t needs the VRRP interface: a network namespace (root, unshare)")
    cfg = tmp_path / "keepalived.conf"
    cfg.write_text(render(case))
    iface = case.vars["keepalived_interface"]
    script = (
        f"ip link add {iface} type dummy 2>/dev/null || ip link add {iface} type veth peer name kprovpeer0; "
        f"exec {keepalived} -t -f {cfg}"
    )
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_keepalived_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check is real: keepalived -t fails on a config it cannot use."""
    keepalived = _tool("keepalived")
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("keepalived -t needs a network namespace (root, unshare)")
    cfg = tmp_path / "keepalived.conf"
    cfg.write_text(render(KEEPALIVED[0]).replace("virtual_router_id 250", "virtual_router_id 999"))
    proc = subprocess.run(
        [
            "unshare",
            "--net",
            "sh",
            "-c",
            f"ip link add host0 type dummy 2>/dev/null || "
            f"ip link add host0 type veth peer name kprovpeer0; exec {keepalived} -t -f {cfg}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
