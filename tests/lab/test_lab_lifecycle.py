"""A lab's whole life on the real machine: up, idempotent up, add nodes, stop/start, killed from
outside, down (nothing left), and the CLI's bad-input errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.lab import Lab, proc
from provisioner.lab.host import run
from tests.fixtures.lab import lab_skip_reason, require_lab
from tests.lab.helpers import base_image_present, kprov, leftovers, nothing_left

pytestmark = pytest.mark.lab

LIFE = "kpa"


def _kill_from_outside(lab: Lab) -> None:
    """What a session ending does: SIGKILL to nspawn, the node's init and the proxy, no cleanup."""
    for node in lab.status():
        if node.pid:
            for child in proc.children(node.pid):
                os.kill(child, signal.SIGKILL)
            os.kill(node.pid, signal.SIGKILL)
    st = lab.state()
    if st.proxy:
        proc.kill(st.proxy.pid, signal.SIGKILL)
    time.sleep(0.3)


def test_lifecycle(lab_nodes):
    """lab_nodes runs beside it on purpose: two labs at once must not disturb each other."""
    lab = Lab(LIFE)
    if lab.exists():
        lab.down()
    try:
        first = lab.up(1)
        assert [(n.name, n.state) for n in first] == [(f"{LIFE}-1", "running")]
        assert lab.state().subnet != lab_nodes.lab.state().subnet and lab.bridge != lab_nodes.lab.bridge

        # idempotent: same processes, nothing restarted
        assert [(n.name, n.pid) for n in lab.up()] == [(n.name, n.pid) for n in first]

        # add a node: the old one keeps running, /etc/hosts of all nodes lists the new one
        grown = lab.up(2)
        assert [n.state for n in grown] == ["running", "running"] and grown[0].pid == first[0].pid
        hosts = lab.capture(grown[0], ["cat", "/etc/hosts"]).stdout
        assert f"{grown[1].address} {grown[1].name}" in hosts
        assert lab.capture(grown[1], ["ping", "-c1", "-W2", grown[0].name]).returncode == 0

        # a file written on a node survives stop/start (overlay upper layer persists)
        assert lab.capture(grown[1], ["sh", "-c", "echo kept > /root/mark"]).returncode == 0
        assert [n.state for n in lab.stop([grown[1].name])] == ["running", "stopped"]
        assert not os.path.exists(f"/sys/class/net/vb-{grown[1].name}")
        assert [n.state for n in lab.start([grown[1].name])] == ["running", "running"]
        assert lab.capture(grown[1], ["cat", "/root/mark"]).stdout == "kept\n"

        # killed from outside: up recovers (stale veths, cgroups, mounts, dead proxy)
        _kill_from_outside(lab)
        assert [n.state for n in lab.status()] == ["stopped", "stopped"]
        recovered = lab.up()
        assert [n.state for n in recovered] == ["running", "running"]
        assert lab.capture(recovered[1], ["cat", "/root/mark"]).stdout == "kept\n"
        assert lab.capture(recovered[0], ["systemctl", "is-system-running", "--wait"]).stdout.strip() == "running"

        # killed again, then down: nothing of the lab remains
        _kill_from_outside(lab)
    finally:
        lab.down()
    assert leftovers(LIFE) == {k: [] for k in leftovers(LIFE)}
    assert base_image_present(
        lab_nodes.lab.image_info.path if lab_nodes.lab.image_info else lab.cache_dir / "base-bookworm"
    )
    assert lab_nodes.lab.capture(lab_nodes.node(1), ["true"]).returncode == 0  # the other lab is untouched


def test_cli_up_and_down_of_a_running_lab():
    require_lab()
    name = "kpc"
    try:
        res = kprov("lab", "up", "--name", name, "--nodes", "1")
        assert res.returncode == 0, res.stderr
        assert f"{name}-1" in res.stdout and "running" in res.stdout
        # stopping the whole lab stops its proxy too; start brings both back
        assert kprov("lab", "stop", "--name", name).returncode == 0
        assert kprov("lab", "status", "--name", name).stdout.splitlines()[1].split()[3] == "stopped"
        assert not leftovers(name)["processes"]
        assert kprov("lab", "start", "--name", name).returncode == 0
        assert kprov("lab", "ssh", "--name", name, f"{name}-1", "--", "true").returncode == 0
    finally:
        res = kprov("lab", "down", "--name", name)
    assert res.returncode == 0, res.stderr
    assert nothing_left(name), leftovers(name)
    # down of a lab that does not exist is a no-op, not an error
    assert kprov("lab", "down", "--name", name).returncode == 0


def _assert_input_error(res: subprocess.CompletedProcess[str], expect: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("error: ") and expect in lines[0], res.stderr
    assert any(line.startswith("hint: ") for line in lines), res.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--nodes", "0"], "bad --nodes 0"),
        (["--nodes", "-3"], "bad --nodes -3"),
        (["--name", "Bad_Name"], "bad lab name"),
        (["--name", "muchtoolong"], "bad lab name"),
        (["--name", "kpx", "--subnet", "10.231.5.7/24"], "bad --subnet"),
        (["--name", "kpx", "--subnet", "8.8.8.0/24"], "not a private network"),
        (["--name", "kpx", "--nodes", "2", "--control-planes", "3"], "bad control plane count"),
    ],
)
def test_cli_bad_input(args, expect):
    """Refused before anything is touched: runs without root too."""
    _assert_input_error(kprov("lab", "up", *args), expect)
    if lab_skip_reason() is None:
        assert nothing_left("kpx")


def test_cli_subnet_in_use(lab_nodes):
    used = lab_nodes.lab.state().subnet
    _assert_input_error(kprov("lab", "up", "--name", "kpx", "--nodes", "1", "--subnet", used), "is in use")
    assert nothing_left("kpx")


def test_cli_shrinking_is_refused(lab_nodes):
    _assert_input_error(kprov("lab", "up", "--name", lab_nodes.lab.name, "--nodes", "1"), "would remove nodes")


def test_cli_name_collision():
    """An interface with the lab's bridge name that no lab owns: refuse, do not take it over."""
    require_lab()
    run(["ip", "link", "add", "kprov-kpx", "type", "bridge"])  # no dummy driver in every kernel
    try:
        _assert_input_error(kprov("lab", "up", "--name", "kpx", "--nodes", "1"), "name collision")
        assert os.path.exists("/sys/class/net/kprov-kpx")
    finally:
        run(["ip", "link", "del", "kprov-kpx"])
    assert nothing_left("kpx")


@pytest.mark.parametrize("command", [["status"], ["inventory"], ["ssh", "x-1", "--", "true"], ["stop"], ["start"]])
def test_cli_missing_lab(command):
    require_lab()
    sub, *rest = command
    _assert_input_error(kprov("lab", sub, "--name", "kpnone", *rest), "does not exist")


def test_cli_needs_root():
    """Run as nobody: a one-line error naming what to do, exit 2."""
    require_lab()
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "provisioner.cli.main",
            "lab", "up", "--name", "kpx"]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    if "Permission denied" in res.stderr or "No module named 'provisioner'" in res.stderr:
        # e.g. a checkout under a 0700 directory (mktemp -d): nobody cannot even import kprov
        pytest.skip("the checkout is not readable by nobody")
    _assert_input_error(res, "needs root")
