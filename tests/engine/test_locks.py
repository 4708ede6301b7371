"""Concurrent runs on one cluster: the second one stops before it changes anything, and says who holds it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.engine.lock import cluster_lock
from provisioner.errors import LockHeld

pytestmark = pytest.mark.netns

ROLES = Path(__file__).parent / "roles"
H1 = "kpe-1"


def _kprov(inv: Path, home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KPROV_HOME": str(home), "COLUMNS": "200"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioner.cli.main",
            "apply",
            "-i",
            str(inv),
            "--roles-dir",
            str(ROLES),
            "--limit",
            H1,
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lock(path: Path, within: float = 30) -> None:
    end = time.monotonic() + within
    while not (path.is_file() and path.stat().st_size > 0):
        assert time.monotonic() < end, f"the first run never took {path}"
        time.sleep(0.1)


@pytest.mark.parametrize("same_machine", [True, False], ids=["same-control-machine", "other-control-machine"])
def test_a_second_run_is_refused_while_the_first_holds_the_cluster(fleet, tmp_path, same_machine):
    inv = fleet.inventory_path()
    home1 = tmp_path / "home1"
    # another control machine: its own ~/.kprov, so only the lock on the host can stop it
    home2 = home1 if same_machine else tmp_path / "home2"
    first = _kprov(inv, home1, "hold", "-e", "hold_s=25")  # long enough for a slow second start
    try:
        _wait_for_lock(home1 / "locks" / "nstest.lock")
        time.sleep(1.5)  # the host lock is taken right after the local one
        second = _kprov(inv, home2, "hold", "-e", "hold_s=0")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, out + err
        where = "cluster 'nstest' is locked by pid" if same_machine else f"{H1} is locked by pid"
        assert where in err and str(first.pid) in err, err
        assert "Traceback" not in out + err
    finally:
        out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, out1 + err1
    # released: the next run goes through
    third = _kprov(inv, home2, "hold", "-e", "hold_s=0")
    out3, err3 = third.communicate(timeout=120)
    assert third.returncode == 0, out3 + err3


def test_plan_does_not_wait_for_the_lock(fleet, tmp_path):
    inv = fleet.inventory_path()
    with cluster_lock("nstest"):
        env = {**os.environ, "KPROV_HOME": str(Path.home() / ".kprov"), "COLUMNS": "200"}
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "provisioner.cli.main",
                "plan",
                "-i",
                str(inv),
                "--roles-dir",
                str(ROLES),
                "--limit",
                H1,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "locked" not in res.stdout + res.stderr


def test_the_local_lock_is_reentrant_and_exclusive_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("KPROV_HOME", str(tmp_path))
    with cluster_lock("c1"):
        with cluster_lock("c1"):  # the same run locking again (an action running plays twice)
            pass
        code = "from provisioner.engine.lock import cluster_lock\nwith cluster_lock('c1'):\n    pass\n"
        res = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "KPROV_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode != 0 and "LockHeld" in res.stderr and f"pid {os.getpid()}" in res.stderr
    with cluster_lock("c1"):  # released, and the file was never unlinked
        assert (tmp_path / "locks" / "c1.lock").is_file()
    assert issubclass(LockHeld, Exception)
