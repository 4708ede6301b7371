"""Pure parts of the lab (no root): parsers, validation, generated files."""

from __future__ import annotations

import ipaddress
import json
import tarfile
from pathlib import Path

import pytest

from provisioner.errors import InputError, PrerequisiteMissing
from provisioner.lab import host, inventory, keys, mirror, mkimage, network, state
from provisioner.lab.node import hosts_file

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
"""


@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        ("deb822", DEB822, mirror.Mirrors("http://mirror.example/debian", "http://mirror.example/debian-security")),
        ("list", "deb http://m.example/debian/ bookworm main\n", mirror.Mirrors("http://m.example/debian", None)),
        (
            "list",
            "# comment\ndeb [signed-by=/k.gpg arch=amd64] http://a.example/debian bookworm main\n"
            "deb http://a.example/debian-security bookworm-security main\ndeb-src http://x.example/ bookworm main\n",
            mirror.Mirrors("http://a.example/debian", "http://a.example/debian-security"),
        ),
        ("list", "deb-src http://x.example/ bookworm main\n", None),
    ],
)
def test_mirror_parsing(parser, text, expected):
    sources = mirror.parse_deb822(text) if parser == "deb822" else mirror.parse_one_line(text)
    assert mirror.choose(sources) == expected


@pytest.mark.parametrize(
    ("name", "ok"),
    [("lab", True), ("kpt", True), ("a", True), ("abcdefgh", True), ("abcdefghi", False), ("Lab", False),
     ("1lab", False), ("la-b", False), ("", False), ("la b", False)],
)  # fmt: skip
def test_lab_name_validation(name, ok):
    if ok:
        assert state.validate_name(name) == name
        assert len(network.veth_name(f"{name}-{state.MAX_NODES}")) <= 15
    else:
        with pytest.raises(InputError):
            state.validate_name(name)


@pytest.mark.parametrize(
    ("nodes", "cps", "ok"),
    [(1, 1, True), (3, 1, True), (3, 3, True), (0, 1, False), (3, 0, False), (2, 3, False), (201, 1, False)],
)
def test_counts_validation(nodes, cps, ok):
    if ok:
        state.validate_counts(nodes, cps)
    else:
        with pytest.raises(InputError):
            state.validate_counts(nodes, cps)


@pytest.mark.parametrize(
    ("text", "ok"),
    [("10.231.7.0/24", True), ("10.231.0.0/16", True), ("10.231.7.1/24", False), ("8.8.8.0/24", False),
     ("10.0.0.0/8", False), ("10.231.7.0/25", False), ("nonsense", False)],
)  # fmt: skip
def test_subnet_parsing(text, ok):
    if ok:
        assert str(network.parse_subnet(text)) == text
    else:
        with pytest.raises(InputError):
            network.parse_subnet(text)


def test_addresses_in_subnet():
    net = ipaddress.IPv4Network("10.231.9.0/24")
    assert str(network.gateway(net)) == "10.231.9.1"
    assert [str(network.node_address(net, i)) for i in (1, 2, 200)] == ["10.231.9.11", "10.231.9.12", "10.231.9.210"]
    assert network.max_nodes(net) == 244


def test_overlaps():
    used = [ipaddress.IPv4Network("10.231.0.0/24"), ipaddress.IPv4Network("10.0.0.0/8")]
    assert network.overlaps(ipaddress.IPv4Network("10.231.0.0/24"), used[:1]) == used[0]
    assert network.overlaps(ipaddress.IPv4Network("10.231.1.0/24"), used[:1]) is None
    assert network.overlaps(ipaddress.IPv4Network("10.231.1.0/24"), used) == used[1]


@pytest.mark.parametrize(
    ("nodes", "cps", "roles"), [(3, 1, ["control_plane", "worker", "worker"]), (2, 2, ["control_plane"] * 2)]
)
def test_inventory_document(tmp_path, nodes, cps, roles):
    hosts = [
        inventory.host_entry(f"x-{i}", f"10.231.3.{10 + i}", inventory.roles_for(i, cps)) for i in range(1, nodes + 1)
    ]
    doc = inventory.document("x", hosts, tmp_path / "key", tmp_path / "kh")
    assert doc["provider"] == "static"
    assert (
        doc["cluster"]["name"] == "x"
        and doc["cluster"]["kubernetes_version"] == "1.20.2"
        and doc["cluster"]["cni"] == "bridge"
    )
    assert doc["defaults"] == {"user": "root", "ssh_key": str(tmp_path / "key"), "known_hosts": str(tmp_path / "kh")}
    assert [h["roles"] for h in doc["hosts"]] == [[r] for r in roles]
    assert all(h["node_ip"] == h["address"] for h in doc["hosts"])
    assert (doc["cluster"]["control_plane_endpoint"] is None) == (cps == 1)
    inventory.write(tmp_path / "inv.yaml", doc)
    import yaml

    assert yaml.safe_load((tmp_path / "inv.yaml").read_text()) == doc


def test_keys_are_openssh_ed25519(tmp_path):
    pub = keys.ensure(tmp_path / "id", "c")
    assert pub.startswith("ssh-ed25519 ") and pub.endswith(" c")
    assert (tmp_path / "id").read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert oct((tmp_path / "id").stat().st_mode & 0o777) == "0o600"
    assert keys.ensure(tmp_path / "id", "c") == pub  # reused, not regenerated


def test_hosts_file_lists_all_nodes(tmp_path):
    from provisioner.lab.node import NodeSpec

    specs = [NodeSpec("x", f"x-{i}", i, ipaddress.IPv4Address(f"10.231.3.{10 + i}"), tmp_path) for i in (1, 2)]
    assert hosts_file(specs).splitlines()[-2:] == ["10.231.3.11 x-1", "10.231.3.12 x-2"]


def test_mkimage_writes_docker_archive(tmp_path):
    src = tmp_path / "hello"
    src.write_text("#!/bin/sh\necho hi\n")
    src.chmod(0o755)
    out = tmp_path / "img.tar"
    mkimage.build(str(out), "local/t:1", [f"{src}:/bin/hello", "/bin/sh->hello", "data/"], cmd=["/bin/hello"])
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == ["local/t:1"]
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        assert config["config"]["Cmd"] == ["/bin/hello"]
        with tarfile.open(fileobj=tar.extractfile("layer.tar")) as layer:
            names = layer.getnames()
            assert {"bin/hello", "bin/sh", "data", "tmp"} <= set(names)
            assert layer.getmember("bin/hello").mode == 0o755


@pytest.mark.parametrize(
    ("missing", "package"),
    [("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"), ("apt-cacher-ng", "apt-cacher-ng"),
     ("ssh", "openssh-client"), ("ip", "iproute2"), ("iptables", "iptables")],
)  # fmt: skip
def test_missing_program_names_the_debian_package(monkeypatch, missing, package):
    real = host.which
    monkeypatch.setattr(host, "which", lambda p: None if p == missing else real(p) or f"/usr/bin/{p}")
    with pytest.raises(PrerequisiteMissing) as err:
        host.require(root=False)
    assert missing in err.value.message and err.value.hint == f"apt-get install -y {package}"


# ---- guard rules matched by their exact comment token (issue 10 item 9) ----
IPTABLES_S = """\
-P FORWARD ACCEPT
-A FORWARD -i kprov-a ! -o kprov-a -m comment --comment kprov-lab:a -j DROP
-A FORWARD ! -i kprov-a -o kprov-a -m comment --comment kprov-lab:a -j DROP
-A FORWARD -i kprov-ab ! -o kprov-ab -m comment --comment kprov-lab:ab -j DROP
-A FORWARD -i kprov-lab ! -o kprov-lab -m comment --comment kprov-lab:lab -j DROP
-A FORWARD -i kprov-lab2 ! -o kprov-lab2 -m comment --comment kprov-lab:lab2 -j DROP
-A FORWARD -i docker0 -m comment --comment "mentions kprov-lab:a in passing" -j ACCEPT
-A FORWARD -i x -m comment --comment "kprov-lab:a" -j DROP
-A FORWARD -m comment --comment 'unbalanced -j DROP
"""


@pytest.mark.parametrize(("lab", "kept_comments"), [
    ("a", 3), ("ab", 1), ("lab", 1), ("lab2", 1), ("b", 0), ("la", 0),
])  # fmt: skip
def test_guard_rules_are_selected_by_exact_comment(lab, kept_comments):
    chosen = network.select_lab_rules(IPTABLES_S.splitlines(), lab)
    assert len(chosen) == kept_comments
    assert all(network.rule_comment(line) == f"kprov-lab:{lab}" for line in chosen)


def _netns_skip_reason() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "needs root (a private network namespace)"
    missing = [p for p in ("iptables", "unshare") if shutil.which(p) is None]
    return f"missing: {', '.join(missing)}" if missing else None


def test_lab_down_rules_leave_other_labs_rules_in_a_private_netns():
    """Real iptables, in a network namespace of its own (the machine's rules are never touched)."""
    import subprocess
    import sys

    if reason := _netns_skip_reason():
        pytest.skip(reason)
    script = (
        "import json, subprocess\n"
        "from provisioner.lab import network\n"
        "for lab in ('a', 'ab', 'lab', 'lab2'):\n"
        "    network.ensure_guard_rules(lab)\n"
        "network.ensure_guard_rules('a')\n"  # idempotent: still two rules
        "network.remove_guard_rules('a')\n"
        "network.remove_guard_rules('lab')\n"
        "out = subprocess.run(['iptables', '-w', '-S', 'FORWARD'], capture_output=True, text=True, check=True)\n"
        "print(json.dumps([network.rule_comment(l) for l in out.stdout.splitlines() if network.rule_comment(l)]))\n"
    )
    proc = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)) == ["kprov-lab:ab", "kprov-lab:ab", "kprov-lab:lab2", "kprov-lab:lab2"]


# ---- the lab lock: one holder, also across `lab down` (issue 10 item 9) ----
def _wait_for_lock_waiter(path, bound: float = 60.0) -> None:
    """Block until some open file description waits for a flock on `path` (/proc/locks shows `->`)."""
    import os
    import time

    ino = os.stat(path).st_ino
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields and any(f.endswith(f":{ino}") for f in fields):
                return
        time.sleep(0.01)
    raise AssertionError(f"nobody ever waited for {path}")


def test_lab_lock_has_one_holder_when_down_releases_it(tmp_path):
    """`down` holds the lock while another `up` waits; once `down` is done, the waiter holds the lock
    that a third process sees (the lock file was not unlinked, so the third cannot lock a fresh file)."""
    import fcntl
    import threading

    from provisioner.lab.lab import Lab

    lab = Lab("i", state_dir=tmp_path)
    down_in, down_go, up_in, up_go = (threading.Event() for _ in range(4))

    def down_like() -> None:
        with lab._locked(removing=True):
            down_in.set()
            down_go.wait()

    def up_like() -> None:
        with lab._locked():
            up_in.set()
            up_go.wait()

    t1 = threading.Thread(target=down_like)
    t1.start()
    down_in.wait()
    t2 = threading.Thread(target=up_like)
    t2.start()
    _wait_for_lock_waiter(lab.paths.lock)  # the "up" waits on the lock down holds
    down_go.set()
    t1.join()
    up_in.wait()
    try:
        with open(lab.paths.lock, "a") as probe, pytest.raises(BlockingIOError):  # a third `kprov lab up` now
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        up_go.set()
        t2.join()
    assert lab.paths.lock.exists() and lab.paths.lock.stat().st_size == 0
    assert not lab.paths.root.exists()
