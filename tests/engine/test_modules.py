"""File-shaped and command modules on real sshd hosts: converge, then 0 changed; check mode never writes."""

from __future__ import annotations

import pytest

from provisioner.engine.events import Status

pytestmark = pytest.mark.netns

HOST = "kpe-1"

# role -> (setup script run on the host first, expected state after the first run)
# expected: path (relative to the test dir) -> content, or ("stat", "%F|%a"), or ("link", target), or None (absent)
CONVERGE = {
    "files": (
        'mkdir -p "$D" && echo doomed > "$D/gone" && printf keep > "$D/attrs" && chmod 644 "$D/attrs"',
        {
            "a.txt": "alpha\n",
            "a.txt#stat": "regular file|600",
            "sub/deeper#stat": "directory|750",
            "link#link": "{dir}/a.txt",
            "gone": None,
            "attrs": "keep",
            "attrs#stat": "regular file|600",
            "conf": "# for {host}\nx = 1\ny = 2\nnode_ip = {address}\n",
            "conf#stat": "regular file|640",
            "empty": "",
            "empty#stat": "regular empty file|644",
        },
    ),
    "lines": (
        'mkdir -p "$D" && printf "# comment\\nb=1\\nc=3\\ndup=1\\nkeep=yes\\ndup=2\\n" > "$D/cfg" && chmod 600 "$D/cfg"'
        ' && printf first > "$D/nonl"',
        {
            "new.conf": "a=1\n",
            "cfg": "b=2\ndup=final\nkeep=yes\nz=26\n",
            "cfg#stat": "regular file|600",
            "nonl": "first\nsecond\n",
        },
    ),
    "commands": (
        'mkdir -p "$D" && touch "$D/todelete"',
        {
            "created": "made\n",
            "todelete": None,
            "hostname": "{hostname}|0|1\n",
            "three": "3 three\n",
            "stdin.out": "line one\nline two\n",
            "env.out": "hi there",
        },
    ),
}


def _check_state(fleet, host: str, d: str, expected: dict) -> None:
    address = fleet.host(host).address
    for key, want in expected.items():
        rel, _, kind = key.partition("#")
        path = f"{d}/{rel}"
        if isinstance(want, str):
            want = want.format(dir=d, host=host, address=address, hostname=fleet.hostname(host))
        if kind == "stat":
            assert fleet.stat(host, path) == want, path
        elif kind == "link":
            assert fleet.sh(host, f"readlink -- '{path}'").stdout.strip() == want, path
        elif want is None:
            assert not fleet.exists(host, path), path
        else:
            assert fleet.read(host, path) == want, path


def snapshot(fleet, host: str, d: str) -> str:
    """Everything observable about a directory tree: names, kinds, modes, sizes, checksums, link targets."""
    return fleet.sh(
        host,
        f'[ -e "{d}" ] || {{ echo ABSENT; exit 0; }}; cd "{d}" && '
        "find . -exec stat -c '%n|%F|%a|%s|%N' {} + | sort && "
        "find . -type f -exec sha256sum {} + | sort",
    ).stdout


@pytest.mark.parametrize("role", sorted(CONVERGE))
def test_module_converges_then_reports_no_change(fleet, workdir, role):
    setup, expected = CONVERGE[role]
    for name in fleet.names:
        fleet.sh(name, f"D='{workdir}'; {setup}")
    first = fleet.run(role, extra_vars={"dir": workdir})
    assert first.exit_status == 0, [(e.host, e.task, e.msg) for e in first.sink.events if e.status is Status.FAILED]
    assert first.changed(HOST) > 0
    for name in fleet.names:
        _check_state(fleet, name, workdir, expected)
    before = snapshot(fleet, HOST, workdir)
    second = fleet.run(role, extra_vars={"dir": workdir})
    assert second.exit_status == 0
    assert [(e.host, e.task, e.msg) for e in second.sink.events if e.changed] == []
    assert snapshot(fleet, HOST, workdir) == before


@pytest.mark.parametrize(
    "role, fresh",
    [
        ("files", False),
        ("lines", False),
        ("lines", True),
        ("commands", False),
        ("commands", True),
        ("handlers", True),
        ("flow", True),
        ("fetching", True),
    ],
)
def test_check_mode_changes_nothing_on_the_host(fleet, workdir, tmp_path, role, fresh):
    if not fresh:
        for name in fleet.names:
            fleet.sh(name, f"D='{workdir}'; {CONVERGE[role][0]}")
    before = {n: snapshot(fleet, n, workdir) for n in fleet.names}
    out = fleet.run(role, check=True, extra_vars={"dir": workdir, "local_dir": str(tmp_path / "fetched")})
    assert out.exit_status == 0, [(e.host, e.task, e.msg) for e in out.sink.events if e.status is Status.FAILED]
    assert out.changed(HOST) > 0, "check mode must still report what it would change"
    assert all(e.msg.startswith("would ") for e in out.sink.events if e.changed)
    assert {n: snapshot(fleet, n, workdir) for n in fleet.names} == before
    assert not (tmp_path / "fetched").exists()
    if fresh:
        assert all(before[n] == "ABSENT\n" for n in fleet.names)


@pytest.mark.parametrize(
    "case, setup, kind, target, needle",
    [
        ("link over a directory", 'mkdir -p "$D/adir"', "link", "adir", "is a directory, not a link"),
        (
            "line through a symlink",
            'mkdir -p "$D" && echo x > "$D/real" && ln -s real "$D/alink"',
            "line",
            "alink",
            "is a symbolic link",
        ),
    ],
)
def test_conflicting_path_fails_clearly_and_leaves_it_alone(fleet, workdir, case, setup, kind, target, needle):
    fleet.sh(HOST, f"D='{workdir}'; {setup}")
    before = snapshot(fleet, HOST, workdir)
    out = fleet.run(
        "link_conflicts", hosts=HOST, extra_vars={"dir": workdir, "case": case, "kind": kind, "target": target}
    )
    assert out.exit_status == 1
    (failed,) = [e for e in out.events(HOST) if e.status is Status.FAILED]
    assert needle in failed.msg
    assert snapshot(fleet, HOST, workdir) == before
