"""Guard rails (issue 15): destructive commands confirm on a terminal, -y/--yes skips the question,
without a terminal they need --yes; `cluster.smoke: false` turns the smoke test of `up` off.

The hosts are a loopback listener that records whether kprov connected at all: a refused or declined
reset must not touch any host.
"""

from __future__ import annotations

import io
import os
import pty
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.inventory.loader import load_inventory
from tests.cli.helpers import KPROV, REPO
from tests.cli.test_errors import FakeHost, _close, inventory


@pytest.fixture
def host():
    h = FakeHost(_close)
    yield h
    h.close()


def run_with_terminal(argv: list[str], answer: str | None) -> tuple[int, str]:
    """Run kprov with a pseudo-terminal as stdin; type `answer` at the prompt."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(KPROV), *argv], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        os.close(slave)
        if answer is not None:
            os.write(master, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=300)
    finally:
        os.close(master)
    return proc.returncode, out + err


def test_reset_without_a_terminal_needs_yes(tmp_path: Path, host: FakeHost) -> None:
    proc = subprocess.run(
        [str(KPROV), "reset", "-i", str(inventory(tmp_path, host.port))],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: reset removes Kubernetes from 1 host(s) of cluster fake: not confirmed (no terminal to ask on)",
        "hint: add --yes (-y) to confirm in scripts and CI",
    ]
    assert not host.accepted.is_set(), "a refused reset connected to a host"


@pytest.mark.parametrize(
    "answer,yes,rc,connected",
    [
        ("n", False, 1, False),  # declined: nothing touched
        ("", False, 1, False),  # the default is no
        ("y", False, 3, True),  # confirmed: it runs (the fake host is unreachable: exit 3)
        (None, True, 3, True),  # --yes: no question
    ],
)
def test_reset_on_a_terminal_shows_the_hosts_and_asks(
    tmp_path: Path, host: FakeHost, answer: str | None, yes: bool, rc: int, connected: bool
) -> None:
    argv = ["reset", "-i", str(inventory(tmp_path, host.port)), "--connect-timeout", "1"] + (["-y"] if yes else [])
    code, output = run_with_terminal(argv, answer)
    assert code == rc, output
    assert host.accepted.is_set() == connected
    assert ("  - h1" in output and "Continue? [y/N]" in output) == (not yes)
    if not connected:
        assert "not confirmed: nothing was changed" in output


def test_ec2_destroy_without_a_terminal_needs_yes() -> None:
    proc = subprocess.run(
        [str(KPROV), "ec2", "destroy", "-i", str(REPO / "inventories" / "ec2-example.yaml")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "not confirmed (no terminal to ask on)" in proc.stderr and "--yes" in proc.stderr


@pytest.mark.parametrize("value,expected", [(None, True), (True, True), (False, False)])
def test_cluster_smoke_switch(tmp_path: Path, value: bool | None, expected: bool) -> None:
    path = inventory(tmp_path, 22)
    doc = yaml.safe_load(path.read_text())
    if value is not None:
        doc["cluster"]["smoke"] = value
    path.write_text(yaml.safe_dump(doc))
    assert load_inventory(path, resolve=False).cluster.smoke is expected


def test_cluster_smoke_must_be_a_boolean(tmp_path: Path) -> None:
    path = inventory(tmp_path, 22)
    doc = yaml.safe_load(path.read_text())
    doc["cluster"]["smoke"] = "no"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([str(KPROV), "plan", "-i", str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cluster.smoke" in proc.stderr


def test_after_a_whole_cluster_reset_the_merged_context_is_offered_for_removal(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Without a terminal nothing is removed unasked: the hint names the command that removes it."""
    from provisioner.actions import kubeconfig as kc
    from provisioner.cli.cluster import _offer_kubeconfig_removal

    admin = tmp_path / "admin.conf"
    admin.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443"}}],
                "users": [{"name": "a", "user": {"token": "t"}}],
            }
        )
    )
    config = tmp_path / "config"
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal
    kc.merge(admin, "demo")
    before = config.read_text()
    _offer_kubeconfig_removal("demo", "inv.yaml", yes=False)
    assert config.read_text() == before
    assert capsys.readouterr().err.strip() == (
        f"context kprov-demo stays in {config}; remove it with: kprov kubeconfig -i inv.yaml --remove"
    )
    _offer_kubeconfig_removal("other", "inv.yaml", yes=False)  # nothing merged: nothing said
    assert capsys.readouterr().err == ""


def _noop_roles(tmp_path: Path) -> Path:
    """site.yaml's roles, each one no-op task: `up` converges at once on any host."""
    roles = tmp_path / "roles"
    for play in yaml.safe_load((REPO / "roles" / "site.yaml").read_text()):
        (roles / play["role"]).mkdir(parents=True, exist_ok=True)
        (roles / play["role"] / "tasks.yaml").write_text(
            f"- name: {play['role']} | nothing\n  command:\n    shell: 'true'\n  changed_when: false\n"
        )
    (tmp_path / "templates").mkdir()
    return roles


@pytest.mark.netns
@pytest.mark.parametrize(
    "smoke, flags, skipped, smoke_ran",
    [
        (False, [], "smoke test skipped (cluster.smoke: false)", False),
        (True, ["--no-smoke"], "", False),
        (True, [], "", True),  # the smoke test runs (and fails: there is no cluster on these hosts)
    ],
    ids=["cluster.smoke false", "--no-smoke", "default"],
)
def test_up_runs_the_smoke_test_unless_the_inventory_turns_it_off(
    netns_fleet, tmp_path: Path, smoke: bool, flags: list[str], skipped: str, smoke_ran: bool
) -> None:
    path = netns_fleet.inventory(tmp_path / "inv.yaml", cluster=f"smk{os.getpid()}")
    doc = yaml.safe_load(path.read_text())
    doc["cluster"]["smoke"] = smoke
    path.write_text(yaml.safe_dump(doc))
    argv = ["up", "-i", str(path), "--roles-dir", str(_noop_roles(tmp_path)), *flags]
    proc = subprocess.run([str(KPROV), *argv], capture_output=True, text=True, timeout=600)
    assert ("smoke test skipped" in proc.stderr) == bool(skipped), proc.stderr
    if skipped:
        assert skipped in proc.stderr
    assert "RECAP" in proc.stdout and "total wall time" in proc.stdout, proc.stdout[-2000:]  # up itself converged
    assert ("error: smoke test failed" in proc.stderr) == smoke_ran, proc.stderr[-2000:]
    assert proc.returncode == (1 if smoke_ran else 0), proc.stderr[-2000:]
