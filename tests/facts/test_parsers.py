"""Fact parsers on output captured from a real Debian (lab) node (see capture.py), and module
decisions made from those facts: captured facts in, decision out."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.facts.parsers import (
    FileState,
    PackageState,
    ServiceState,
    SwapState,
    parse_dpkg,
    parse_file_state,
    parse_loaded_modules,
    parse_os_release,
    parse_swap,
    parse_sysctl_values,
    parse_systemctl_show,
)
from provisioner.modules.base import Change, NoChange
from provisioner.modules.system import PackageModule, ServiceModule, SwapModule, SysctlModule

CAPTURED = Path(__file__).parent / "captured"
SMALL_SHA = "4a1e67f2fe1d1cc7b31d0ca2ec441da4778203a036a77da10344c85e24ff0f92"


def captured(name: str) -> tuple[str, int]:
    return (CAPTURED / f"{name}.out").read_text(), int((CAPTURED / f"{name}.rc").read_text())


PARSE_CASES = [
    (
        "file_small",
        parse_file_state,
        FileState(True, "regular file", "640", "root", "root", 12, SMALL_SHA, b"hello\nworld\n"),
    ),
    ("file_nonl", parse_file_state, "content=b'no newline'"),
    (
        "file_empty",
        parse_file_state,
        FileState(
            True,
            "regular empty file",
            "644",
            "root",
            "root",
            0,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            b"",
        ),
    ),
    ("file_large", parse_file_state, "content=None"),  # too large to ship: checksum only
    ("file_dir", parse_file_state, FileState(True, "directory", "755", "root", "root", 40, "", None)),
    ("file_link", parse_file_state, "kind='symbolic link'"),
    ("file_absent", parse_file_state, FileState(False)),
    ("file_no_content", parse_file_state, "content=None"),
    (
        "dpkg",
        parse_dpkg,
        {
            "libc6": PackageState("libc6", True, "2.36-9+deb12u14", False),
            "openssh-server": PackageState("openssh-server", True, "1:9.2p1-2+deb12u10", True),
            "systemd": PackageState("systemd", True, "252.39-1~deb12u2", False),
        },
    ),
    (
        "dpkg_states",
        parse_dpkg,
        {
            "less": PackageState("less", False, "", False),
            "nano": PackageState("nano", False, "", False),
            # marked for removal ("ri") but still installed
            "openssh-client": PackageState("openssh-client", True, "1:9.2p1-2+deb12u10", False),
        },
    ),
    ("systemctl_ssh", parse_systemctl_show, ServiceState("loaded", "active", "enabled", "running")),
    ("systemctl_static", parse_systemctl_show, ServiceState("loaded", "active", "static", "running")),
    ("systemctl_disabled", parse_systemctl_show, ServiceState("loaded", "inactive", "disabled", "dead")),
    ("systemctl_masked", parse_systemctl_show, ServiceState("masked", "inactive", "masked", "dead")),
    ("systemctl_missing", parse_systemctl_show, ServiceState("not-found", "inactive", "", "dead")),
    ("sysctl", parse_sysctl_values, {"net.ipv4.ip_forward": "0", "kernel.printk": "4 4 1 7", "net.no.such.key": ""}),
    (
        "swap",
        parse_swap,
        SwapState((), ("/swapfile none swap sw 0 0  # kprov-capture", "  /dev/vdb2   none   swap   defaults 0 0")),
    ),
    ("os_release", parse_os_release, "ID=debian"),
]


@pytest.mark.parametrize("name, parser, expected", [pytest.param(*c, id=c[0]) for c in PARSE_CASES])
def test_parser_on_captured_output(name, parser, expected):
    out, rc = captured(name)
    got = parser(out, rc)
    if isinstance(expected, str):  # one field worth checking: "field=repr"
        field, _, want = expected.partition("=")
        value = got.get(field) if isinstance(got, dict) else getattr(got, field)
        assert repr(value) == want if not isinstance(got, dict) else value == want
    else:
        assert got == expected


def test_file_state_of_a_symlink_describes_the_target_content():
    st = parse_file_state(*captured("file_link"))
    assert st.exists and not st.is_file and st.sha256 == SMALL_SHA


def test_loaded_modules():
    mods = parse_loaded_modules(*captured("kernel_modules"))
    assert {"overlay", "br_netfilter"} <= mods and "" not in mods


def _pkg(args: dict, facts_from: str):
    m = PackageModule()
    return m.check(m.validate(args, "t"), {"pkgs": parse_dpkg(*captured(facts_from))})


@pytest.mark.parametrize(
    "args, facts_from, decision, msg",
    [
        ({"name": ["libc6", "systemd"]}, "dpkg", NoChange, "already present: libc6 2.36-9+deb12u14, systemd"),
        ({"name": "openssh-server", "hold": True}, "dpkg", NoChange, "already present"),
        ({"name": "systemd", "hold": True}, "dpkg", Change, "hold systemd"),
        ({"name": "libc6", "version": "2.36-9+deb12u14"}, "dpkg", NoChange, "already present"),
        ({"name": "systemd", "version": "252.39"}, "dpkg", NoChange, "already present"),
        ({"name": "systemd", "version": "252.40"}, "dpkg", Change, "change version of systemd to 252.40"),
        ({"name": "no-such-package-kprov"}, "dpkg", Change, "install no-such-package-kprov"),
        ({"name": ["libc6:amd64", "openssh-server:amd64"]}, "dpkg_arch", NoChange, "already present"),
        ({"name": "nano", "state": "absent"}, "dpkg_states", NoChange, "absent: nano"),
        ({"name": "openssh-client"}, "dpkg_states", NoChange, "already present"),
        ({"name": "openssh-client", "state": "absent"}, "dpkg_states", Change, "remove openssh-client"),
    ],
    ids=[
        "present",
        "held",
        "hold-needed",
        "exact-version",
        "version-prefix",
        "other-version",
        "missing",
        "arch-qualified",
        "never-installed-absent",
        "marked-for-removal-present",
        "marked-for-removal-absent",
    ],
)
def test_package_decisions_from_captured_dpkg(args, facts_from, decision, msg):
    got = _pkg(args, facts_from)
    assert isinstance(got, decision) and msg in got.msg


@pytest.mark.parametrize(
    "args, facts_from, decision, msg",
    [
        ({"name": "ssh.service", "state": "started", "enabled": True}, "systemctl_ssh", NoChange, "active, enabled"),
        ({"name": "ssh.service", "state": "restarted"}, "systemctl_ssh", Change, "restart"),
        ({"name": "systemd-journald.service", "enabled": True}, "systemctl_static", NoChange, "static"),
        (
            {"name": "debug-shell.service", "state": "stopped", "enabled": False},
            "systemctl_disabled",
            NoChange,
            "inactive",
        ),
        ({"name": "debug-shell.service", "state": "started"}, "systemctl_disabled", Change, "start"),
    ],
)
def test_service_decisions_from_captured_systemctl(args, facts_from, decision, msg):
    m = ServiceModule()
    got = m.check(m.validate(args, "t"), {"svc": parse_systemctl_show(*captured(facts_from))})
    assert isinstance(got, decision) and msg in got.msg


def test_sysctl_decision_only_applies_stale_values():
    m = SysctlModule()
    args = m.validate({"values": {"net.ipv4.ip_forward": 1, "kernel.printk": "4 4 1 7"}}, "t")
    got = m.check(args, {"file": FileState(False), "live": parse_sysctl_values(*captured("sysctl"))})
    assert isinstance(got, Change)
    assert "apply net.ipv4.ip_forward=1" in got.msg and "kernel.printk" not in got.msg.split("apply", 1)[1]


def test_swap_decision_comments_out_each_fstab_line():
    got = SwapModule().check({"state": "off"}, {"swap": parse_swap(*captured("swap"))})
    assert isinstance(got, Change) and "comment out 2 swap line(s)" in got.msg and "swapoff" not in got.msg


@pytest.mark.parametrize(
    "name, data, limit, expect_content",
    [
        ("small", b"hello\n", 262144, True),
        ("empty", b"", 262144, True),
        ("no-newline", b"x", 262144, True),
        ("over-limit", b"y" * 5000, 4096, False),
        ("any-size", b"z" * 5000, None, True),
    ],
)
def test_file_state_script_output_parses(tmp_path, name, data, limit, expect_content):
    """The script as it runs today (one stat; small files shipped whole, sha256 computed locally)."""
    import hashlib
    import subprocess

    from provisioner.facts.parsers import file_state_script

    f = tmp_path / name
    f.write_bytes(data)
    out = subprocess.run(["sh", "-c", file_state_script(str(f), True, limit)], capture_output=True, text=True).stdout
    st = parse_file_state(out)
    assert st.is_file and st.size == len(data) and st.sha256 == hashlib.sha256(data).hexdigest()
    assert (st.content == data) if expect_content else st.content is None
