"""Pure parts of the lab (no root): parsers, validation, generated files."""

from __future__ import annotations

import ipaddress
import json
import tarfile

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
