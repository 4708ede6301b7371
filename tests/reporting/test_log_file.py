"""`--log-file` is private to its owner (issue 10 item 13): created 0600 whatever the umask, an existing
file tightened to 0600 and appended to, a device written as it is. Real CLI, a host on loopback."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.inventory.cli import kprov_forked

# nothing listens on 127.0.0.1:1: plan reports the host unreachable (exit 3) after writing its events
INVENTORY = "cluster: {name: demo}\nhosts:\n  - {name: cp1, address: 127.0.0.1, port: 1, roles: [control_plane]}\n"


def _plan(tmp_path: Path, log: Path, umask: int = 0o022):
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY)
    old = os.umask(umask)
    try:
        return kprov_forked(
            "plan",
            "-i",
            str(inv),
            "--log-file",
            str(log),
            "--connect-timeout",
            "5",
            env={"KPROV_HOME": str(tmp_path / "home")},
        )
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("existing_mode", "umask"),
    [
        (None, 0o000),
        (0o666, 0o000),
        (0o600, 0o022),
    ],
    ids=["new-umask-0", "existing-666", "existing-600"],
)
def test_log_file_is_0600_and_appended(tmp_path, existing_mode, umask):
    log = tmp_path / "events.jsonl"
    if existing_mode is not None:
        log.write_text('{"earlier": true}\n')
        log.chmod(existing_mode)
    proc = _plan(tmp_path, log, umask)
    assert proc.returncode == 3, proc.stderr
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line.get("host") == "cp1" for line in lines)
    assert (lines[0] == {"earlier": True}) == (existing_mode is not None)


def test_a_device_log_file_keeps_its_mode(tmp_path):
    before = stat.S_IMODE(os.stat("/dev/null").st_mode)
    proc = _plan(tmp_path, Path("/dev/null"))
    assert proc.returncode == 3, proc.stderr
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == before


def test_unwritable_log_file_is_bad_input(tmp_path):
    proc = _plan(tmp_path, tmp_path / "no" / "such" / "dir" / "events.jsonl")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("error: --log-file ") and "Traceback" not in proc.stderr
