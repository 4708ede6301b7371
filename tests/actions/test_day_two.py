"""The day-two actions' entry functions, called directly: a refusal happens before anything changes (no plan
shown, no confirmation asked, no sink opened, no lock left behind). The hosts are loopback addresses whose SSH
port is closed: a connection is refused at once, nothing leaves the machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.actions.reconfigure import ReconfigureOptions, reconfigure_cluster
from provisioner.actions.remove_node import RemoveNodeOptions, remove
from provisioner.actions.run import RunRequest
from provisioner.actions.upgrade import UpgradeOptions, upgrade
from provisioner.errors import InputError, KprovError
from provisioner.inventory.loader import load_inventory


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _inventory(tmp_path: Path, control_planes: int) -> Path:
    tag = os.environ.get("KPROV_TEST_TAG", "t")
    endpoint = ", api_endpoint: local" if control_planes > 1 else ""
    hosts = [f"  - {{name: cp{i}, address: 127.0.0.{i}, roles: [control_plane]}}" for i in range(1, control_planes + 1)]
    hosts.append("  - {name: w1, address: 127.0.0.9, roles: [worker]}")
    path = tmp_path / "inv.yaml"
    path.write_text(
        f'cluster: {{name: {tag}-daytwo, kubernetes_version: "1.20.2"{endpoint}}}\n'
        f"defaults: {{user: root, port: {_closed_port()}}}\n"
        "hosts:\n" + "\n".join(hosts) + "\n"
    )
    return path


def _never(*_a: object) -> bool:
    raise AssertionError("called although the action refused first")


def _cluster_lock_free(cluster: str) -> bool:
    """Another kprov process can take the control machine's lock of the cluster (the refusal released it)."""
    code = f"from provisioner.engine.lock import cluster_lock\nwith cluster_lock({cluster!r}, 'test'):\n    pass\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


@pytest.mark.parametrize("apply", [False, True], ids=["plan-only", "yes"])
def test_upgrade_refuses_an_unreachable_node_before_any_plan(tmp_path: Path, apply: bool) -> None:
    path = _inventory(tmp_path, 1)
    inv = load_inventory(str(path))
    with pytest.raises(InputError) as err:
        upgrade(inv, RunRequest(str(path)), UpgradeOptions(apply=apply), open_sink=_never, show_plan=_never)
    assert err.value.message.endswith("no node upgraded")
    assert "reachable" in (err.value.hint or "")
    assert _cluster_lock_free(inv.cluster.name)


def test_reconfigure_refuses_an_unreachable_control_plane_and_releases_the_lock(tmp_path: Path) -> None:
    path = _inventory(tmp_path, 1)
    inv = load_inventory(str(path))
    connect = RunRequest(str(path)).connect()
    with pytest.raises(InputError) as err:
        reconfigure_cluster(inv, connect, ReconfigureOptions(apply=True), progress=_never)
    assert err.value.message.startswith("cp1: ") and err.value.message.endswith("nothing reconfigured")
    assert _cluster_lock_free(inv.cluster.name)


@pytest.mark.parametrize(
    "control_planes, host, message",
    [
        # refused from the inventory alone: no connection is tried
        (1, "cp1", "refusing to remove cp1: it is the last control plane"),
        # a worker is removed through a surviving control plane: none answers
        (1, "w1", "no reachable control plane other than w1"),
        (2, "cp2", "no reachable control plane other than cp2"),
    ],
)
def test_remove_node_refuses_before_any_plan(tmp_path: Path, control_planes: int, host: str, message: str) -> None:
    path = _inventory(tmp_path, control_planes)
    inv = load_inventory(str(path))
    opts = RemoveNodeOptions(host)
    with pytest.raises(InputError) as err:
        remove(inv, RunRequest(str(path)), opts, open_sink=_never, show_plan=_never, confirm=_never)
    assert err.value.message.startswith(message)


def _snapshot_file(tmp_path: Path, good_checksum: bool) -> Path:
    import hashlib

    db = tmp_path / "snap.db"
    db.write_bytes(b"not really etcd, but the checksum is what the action verifies first")
    digest = hashlib.sha256(db.read_bytes()).hexdigest() if good_checksum else "0" * 64
    db.with_name("snap.db.sha256").write_text(f"{digest}  snap.db\n")
    return db


@pytest.fixture
def lock_held_elsewhere(tmp_path: Path) -> Iterator[None]:
    """Another kprov process holds the control machine's lock of the test cluster until the test ends."""
    cluster = load_inventory(str(_inventory(tmp_path, 1))).cluster.name
    code = (
        "import sys\nfrom provisioner.engine.lock import cluster_lock\n"
        f"with cluster_lock({cluster!r}, 'kprov up'):\n    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def _run(action: str, tmp_path: Path) -> KprovError:
    """The KprovError the action raises on the test inventory ('certs renew', 'etcd restore [--yes] [bad file]')."""
    from provisioner.actions.certs import renew_certs
    from provisioner.actions.etcd import restore

    path = _inventory(tmp_path, 1)
    inv = load_inventory(str(path))
    connect = RunRequest(str(path)).connect()
    with pytest.raises(KprovError) as err:
        if action == "certs renew":
            renew_certs(inv, connect, kubeconfig_dest=str(tmp_path / "kc"))
        else:
            snap = _snapshot_file(tmp_path, "bad" not in action)
            restore(inv, connect, source=snap, yes="--yes" in action)
    return err.value


@pytest.mark.parametrize(
    "action, error, message",
    [
        # the actions take the cluster lock themselves (not their click command): a concurrent run is refused
        ("certs renew", "LockHeld", "is locked by"),
        ("etcd restore --yes", "LockHeld", "is locked by"),
        ("etcd restore", "LockHeld", "is locked by"),
        # a bad snapshot file is refused before the lock is even tried
        ("etcd restore bad file", "InputError", "checksum mismatch"),
    ],
)
def test_certs_renew_and_etcd_restore_take_the_cluster_lock(
    tmp_path: Path, lock_held_elsewhere: None, action: str, error: str, message: str
) -> None:
    refused = _run(action, tmp_path)
    assert type(refused).__name__ == error
    assert message in refused.message
    if error == "LockHeld":
        assert "pid " in refused.message and "(kprov up)" in refused.message


@pytest.mark.parametrize(
    "action, message",
    [
        ("certs renew", "certificates not renewed anywhere"),
        # without --yes: refused after the control planes were probed (here: none answers), nothing restored
        ("etcd restore", "cp1: "),
    ],
)
def test_certs_renew_and_etcd_restore_release_the_lock_after_a_refusal(
    tmp_path: Path, action: str, message: str
) -> None:
    assert message in _run(action, tmp_path).message
    assert _cluster_lock_free(load_inventory(str(tmp_path / "inv.yaml")).cluster.name)
