"""wait_for, fetch and upload on real sshd hosts."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from provisioner.engine.events import Status

pytestmark = pytest.mark.netns

H1 = "kpe-1"
MiB = 1 << 20


# -- wait_for ----------------------------------------------------------------------------------------


def test_wait_for_port_and_commands_succeed_without_changing(fleet, workdir):
    fleet.sh(H1, f"mkdir -p '{workdir}'")
    out = fleet.run("waits", hosts=H1, extra_vars={"dir": workdir})
    assert out.exit_status == 0
    assert [e.status for e in out.events(H1)] == [Status.OK] * 3
    assert fleet.exists(H1, f"{workdir}/flag")


def test_wait_for_timeout_fails_the_host_with_a_message(fleet, workdir):
    out = fleet.run("wait_timeout", hosts=H1, extra_vars={"dir": workdir})
    assert out.exit_status == 1
    (ev,) = out.events(H1)
    assert ev.status is Status.FAILED
    assert "timed out after 1s waiting for 127.0.0.1:1" in ev.stderr_tail
    assert 1000 <= ev.duration_ms < 60000  # bounded (generous: the machine may be heavily shared)
    assert not fleet.exists(H1, f"{workdir}/after")


# -- fetch -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tamper", [None, "content", "mode"])
def test_fetch_writes_a_private_local_copy_idempotently(fleet, workdir, tmp_path, tamper):
    local = tmp_path / "fetched"
    ev = {"dir": workdir, "local_dir": str(local)}
    first = fleet.run("fetching", extra_vars=ev)
    assert first.exit_status == 0
    for n in fleet.names:
        f = local / f"{n}.txt"
        assert f.read_text() == f"from {n}\n"
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    target = local / f"{H1}.txt"
    if tamper == "content":
        target.write_text("edited locally\n")
    elif tamper == "mode":
        target.chmod(0o644)
    again = fleet.run("fetching", extra_vars=ev)
    assert again.exit_status == 0
    assert [(e.host, e.task) for e in again.sink.events if e.changed] == (
        [] if tamper is None else [(H1, "fetching | fetch it")]
    )
    assert target.read_text() == f"from {H1}\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in local.iterdir()) == sorted(f"{n}.txt" for n in fleet.names)  # no temp files left


# -- upload -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("upload") / "big.bin"
    data = os.urandom(12 * MiB + 12345)
    path.write_bytes(data)
    return path, data


def _remote_sha(fleet, path: str) -> str:
    return fleet.sh(H1, f"sha256sum < '{path}' | cut -c1-64").stdout.strip()


@pytest.mark.parametrize(
    "part, outcome",
    [
        (None, "uploaded"),
        ("prefix", "resumed"),
        ("garbage", "mismatch-then-retry"),
    ],
)
def test_upload_big_file(fleet, workdir, big_file, part, outcome):
    src, data = big_file
    dest = f"{workdir}/big.bin"
    fleet.sh(H1, f"mkdir -p '{workdir}'")
    if part == "prefix":
        fleet.put(H1, dest + ".part", data[: 5 * MiB])
    elif part == "garbage":
        fleet.put(H1, dest + ".part", b"\0" * (5 * MiB))
    out = fleet.run("uploading", hosts=H1, extra_vars={"dir": workdir, "big": str(src)})
    (ev,) = out.events(H1)
    if outcome == "mismatch-then-retry":
        assert out.exit_status == 1 and ev.status is Status.FAILED
        assert "checksum mismatch" in ev.stderr_tail
        assert not fleet.exists(H1, dest) and not fleet.exists(H1, dest + ".part")
        out = fleet.run("uploading", hosts=H1, extra_vars={"dir": workdir, "big": str(src)})
        (ev,) = out.events(H1)
    assert out.exit_status == 0 and ev.status is Status.CHANGED
    assert ("resuming at 5242880 bytes" in ev.msg) == (outcome == "resumed")
    assert _remote_sha(fleet, dest) == hashlib.sha256(data).hexdigest()
    assert fleet.stat(H1, dest) == "regular file|640"
    assert not fleet.exists(H1, dest + ".part")
    again = fleet.run("uploading", hosts=H1, extra_vars={"dir": workdir, "big": str(src)}, count=True)
    assert again.changed() == 0 and again.exec_counts == {H1: 1}


def test_upload_with_wrong_checksum_fails_and_leaves_nothing(fleet, workdir, big_file):
    src, _ = big_file
    out = fleet.run("uploading_bad_sum", hosts=H1, extra_vars={"dir": workdir, "big": str(src)})
    assert out.exit_status == 1
    (ev,) = out.events(H1)
    assert ev.status is Status.FAILED and "checksum mismatch" in ev.stderr_tail
    assert fleet.sh(H1, f"ls -A '{workdir}'").stdout == ""


def test_fetch_a_large_file(fleet, workdir, tmp_path):
    ev = {"dir": workdir, "local_dir": str(tmp_path)}
    out = fleet.run("fetching_big", hosts=H1, extra_vars=ev)
    assert out.exit_status == 0, [(e.task, e.msg) for e in out.events(H1)]
    local = (tmp_path / f"{H1}.bin").read_bytes()
    assert len(local) == 700000 and hashlib.sha256(local).hexdigest() == _remote_sha(fleet, f"{workdir}/big.bin")
    assert fleet.run("fetching_big", hosts=H1, extra_vars=ev).changed() == 0
