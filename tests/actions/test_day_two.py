"""The day-two actions' entry functions, called directly: a refusal happens before anything changes (no plan
shown, no confirmation asked, no sink opened, no lock left behind). The hosts are loopback addresses whose SSH
port is closed: a connection is refused at once, nothing leaves the machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.actions.reconfigure import ReconfigureOptions, reconfigure_cluster
from provisioner.actions.remove_node import RemoveNodeOptions, remove
from provisioner.actions.run import RunRequest
from provisioner.actions.upgrade import UpgradeOptions, upgrade
from provisioner.errors import InputError
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
