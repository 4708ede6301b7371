"""kprov does not read ~/.ssh/config (docs/security.md), but says so when that file would send `ssh` to
another place than kprov goes (issue 15): one note per rewritten inventory host, nothing otherwise,
and reading it for the note never runs a command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.inventory.loader import load_inventory
from provisioner.reporting.ssh_targets import ssh_config_notes
from tests.cli.helpers import KPROV

INVENTORY = {
    "cluster": {"name": "unote", "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12"},
    "defaults": {"user": "root"},
    "hosts": [
        {"name": "lab-1", "address": "127.0.0.1", "port": 1, "roles": ["control_plane"], "node_ip": "10.9.9.1"},
        {"name": "lab-2", "address": "127.0.0.2", "port": 1, "roles": ["worker"], "node_ip": "10.9.9.2"},
    ],
}


def _inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(INVENTORY))
    return path


@pytest.mark.parametrize(
    "config, expected",
    [
        # a block for the inventory name: `ssh lab-1` goes elsewhere, as someone else
        (
            "Host lab-1\n  HostName 10.0.0.9\n  User admin\n  Port 2222\n",
            [
                "rewrites 'lab-1' for ssh (`ssh lab-1` would go to admin@10.0.0.9:2222); kprov does not read it and "
                "connects to lab-1 at root@127.0.0.1:1, as the inventory says"
            ],
        ),
        # a glob on the address with a jump host
        (
            "Host 127.0.0.*\n  ProxyJump jumper\n",
            [
                "rewrites '127.0.0.1' for ssh (`ssh 127.0.0.1` would go to root@127.0.0.1:1 via ProxyJump jumper)",
                "rewrites '127.0.0.2' for ssh (`ssh 127.0.0.2` would go to root@127.0.0.2:1 via ProxyJump jumper)",
            ],
        ),
        # one host only, by address, with a ProxyCommand
        (
            "Host 127.0.0.2\n  ProxyCommand nc -x proxy %h %p\n",
            ["rewrites '127.0.0.2' for ssh (`ssh 127.0.0.2` would go to root@127.0.0.2:1 via its ProxyCommand)"],
        ),
        # defaults for every host are not a rewrite of one
        ("Host *\n  User admin\n  ServerAliveInterval 30\n", []),
        # a block that says what the inventory says: nothing differs
        ("Host lab-1\n  HostName 127.0.0.1\n  User root\n  Port 1\n", []),
        # unrelated hosts
        ("Host github.invalid\n  User git\n", []),
        ("", []),
    ],
)
def test_notes_name_what_ssh_would_do_and_what_kprov_does(tmp_path: Path, config: str, expected: list[str]) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    notes = ssh_config_notes(load_inventory(_inventory(tmp_path)).hosts, path)
    assert len(notes) == len(expected), notes
    for note, part in zip(notes, expected, strict=True):
        assert note.startswith(f"{path} ") and part in note, note


def test_reading_the_file_for_a_note_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "ssh_config"
    path.write_text(
        f'Match exec "touch {marker}"\n  HostName 10.0.0.9\nCanonicalizeHostname always\nHost lab-2\n  User admin\n'
    )
    notes = ssh_config_notes(load_inventory(_inventory(tmp_path)).hosts, path)
    assert not marker.exists()
    assert [n.split(" for ssh")[0].rsplit(" ", 1)[1] for n in notes] == ["'lab-2'"]


@pytest.mark.parametrize("content", [None, b"\xff\xfe not utf-8", "Host\n"])
def test_a_missing_or_unreadable_file_is_no_note(tmp_path: Path, content: str | bytes | None) -> None:
    path = tmp_path / "ssh_config"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert ssh_config_notes(load_inventory(_inventory(tmp_path)).hosts, path) == []


def test_plan_prints_the_note_on_stderr(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host lab-1\n  HostName 10.0.0.9\n  User admin\n")
    inv = _inventory(tmp_path)
    proc = subprocess.run(
        [str(KPROV), "plan", "-i", str(inv), "--connect-timeout", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(home)},
    )
    notes = [line for line in proc.stderr.splitlines() if "rewrites 'lab-1' for ssh" in line]
    assert len(notes) == 1, proc.stderr
    assert "would go to admin@10.0.0.9:1" in notes[0] and "connects to lab-1 at root@127.0.0.1:1" in notes[0]
    assert "lab-2" not in proc.stderr.split("rewrites", 1)[1].split("\n", 1)[0]
