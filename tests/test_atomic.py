"""provisioner.atomic.write_file: the one local atomic write (kubeconfig, fetch, snapshots, known_hosts, lab files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisioner.atomic import write_file


@pytest.mark.parametrize(
    "data, mode, existing",
    [
        (b"secret\n", 0o600, None),
        ("text\n", 0o644, None),
        (b"new", 0o600, b"old content"),
        ("x", 0o755, "old"),
    ],
)
def test_write_file_replaces_with_mode_and_leaves_no_temp(tmp_path: Path, data, mode, existing):
    path = tmp_path / "sub" / "file"
    if existing is not None:
        path.parent.mkdir()
        path.write_text(existing) if isinstance(existing, str) else path.write_bytes(existing)
        path.chmod(0o666)
    write_file(path, data, mode)
    assert path.read_bytes() == (data.encode() if isinstance(data, str) else data)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert os.listdir(path.parent) == ["file"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path):
    path = tmp_path / "file"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_file(path, 42, 0o600)  # type: ignore[arg-type] - not bytes: the write itself fails
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["file"]
