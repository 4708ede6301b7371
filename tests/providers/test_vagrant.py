"""Vagrant: ssh-config parsing, node_ip selection, settings -> machines, the Vagrantfile itself,
and `provider: vagrant` / `kprov vagrant inventory` through a `vagrant` stand-in on PATH that
replays captured output (real `vagrant` runs only in the `vagrant validate` test, when installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.errors import InventoryError, PrerequisiteMissing
from provisioner.providers import vagrant as provider

FIXTURES = Path(__file__).parent / "fixtures" / "vagrant"
REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --------------------------------------------------------------------------- pure parsers


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "ssh-config-virtualbox.txt",
            [
                (
                    "cp-1",
                    "127.0.0.1",
                    2222,
                    "vagrant",
                    ("/home/ana/My Labs/kprov/vagrant/.vagrant/machines/cp-1/virtualbox/private_key",),
                ),
                (
                    "worker-1",
                    "127.0.0.1",
                    2200,
                    "vagrant",
                    ("/home/ana/My Labs/kprov/vagrant/.vagrant/machines/worker-1/virtualbox/private_key",),
                ),
                (
                    "worker-2",
                    "127.0.0.1",
                    2201,
                    "vagrant",
                    ("/home/ana/My Labs/kprov/vagrant/.vagrant/machines/worker-2/virtualbox/private_key",),
                ),
            ],
        ),
        (
            "ssh-config-libvirt.txt",
            [
                (
                    "cp-1",
                    "192.168.121.87",
                    22,
                    "vagrant",
                    (
                        "/srv/lab/vagrant/.vagrant/machines/cp-1/libvirt/private_key",
                        "/root/.vagrant.d/insecure_private_key",
                    ),
                ),
                (
                    "worker-1",
                    "192.168.121.143",
                    22,
                    "vagrant",
                    ("/srv/lab/vagrant/.vagrant/machines/worker-1/libvirt/private_key",),
                ),
            ],
        ),
    ],
)
def test_parse_ssh_config(name, expected):
    entries = provider.parse_ssh_config(fixture(name))
    assert [(e.name, e.hostname, e.port, e.user, e.identity_files) for e in entries] == expected


def test_parse_ssh_config_accepts_equals_and_any_key_case():
    text = 'Host a\n  hostname=10.1.1.1\n  PORT 2022\n  user = me\n  identityfile="/k y"\n# comment\nHost b\n'
    entries = provider.parse_ssh_config(text)
    assert [(e.name, e.hostname, e.port, e.user, e.identity_files) for e in entries] == [
        ("a", "10.1.1.1", 2022, "me", ("/k y",)),
        ("b", "b", 22, "vagrant", ()),
    ]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ip-addr-virtualbox-cp-1.txt", [("lo", "127.0.0.1"), ("eth0", "10.0.2.15"), ("eth1", "192.168.56.10")]),
        (
            "ip-addr-libvirt-worker-1.txt",
            [("lo", "127.0.0.1"), ("eth0", "192.168.121.143"), ("eth1", "192.168.56.11"), ("cni0", "10.244.1.1")],
        ),
    ],
)
def test_parse_ip_addr(name, expected):
    assert provider.parse_ip_addr(fixture(name)) == expected


@pytest.mark.parametrize(
    "addresses, expected, ssh_address, chosen",
    [
        # the NAT address is never chosen, whatever the interface order
        (["10.0.2.15", "192.168.56.10"], None, "127.0.0.1", "192.168.56.10"),
        (["127.0.0.1", "10.0.2.15", "192.168.56.10"], None, None, "192.168.56.10"),
        (["10.0.2.15"], None, "127.0.0.1", None),
        # libvirt: the management address (used for SSH) loses to the private network
        (["192.168.121.87", "192.168.56.10"], None, "192.168.121.87", "192.168.56.10"),
        (["192.168.121.87"], None, "192.168.121.87", "192.168.121.87"),
        # link-local is never a node IP
        (["169.254.3.4", "172.28.0.5"], None, None, "172.28.0.5"),
        # settings say which one: it must be there, else no answer (misconfigured VM)
        (["10.0.2.15", "192.168.56.10", "192.168.56.99"], "192.168.56.99", None, "192.168.56.99"),
        (["10.0.2.15", "192.168.56.10"], "192.168.56.11", None, None),
        ([], None, None, None),
    ],
)
def test_select_node_ip(addresses, expected, ssh_address, chosen):
    assert provider.select_node_ip(addresses, expected=expected, ssh_address=ssh_address) == chosen


# --------------------------------------------------------------------------- settings and the Vagrantfile

SETTINGS_CASES = {
    "repo": None,  # vagrant/settings.yaml as shipped
    "small": {"control_planes": 1, "workers": 0, "network": {"prefix": "10.77.0", "first_ip": 100}},
    "ha": {
        "control_planes": 3,
        "workers": 4,
        "control_plane": {"cpus": 4, "memory": 4096},
        "worker": {"cpus": 1, "memory": 1024},
        "provider": "libvirt",
        "libvirt": {"driver": "qemu"},
    },
    "defaults": {},
}


def settings_file(tmp_path: Path, case: str) -> Path:
    data = SETTINGS_CASES[case]
    if data is None:
        return REPO / "vagrant" / "settings.yaml"
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repo_settings_machines():
    machines = provider.machines(provider.load_settings(REPO / "vagrant" / "settings.yaml"))
    assert [(m.name, m.role, m.ip) for m in machines] == [
        ("cp-1", "control_plane", "192.168.56.10"),
        ("worker-1", "worker", "192.168.56.11"),
        ("worker-2", "worker", "192.168.56.12"),
    ]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"network": {"prefix": "192.168.56.0"}}, "network.prefix: expected three octets"),
        ({"network": {"prefix": "300.1.1"}}, "network.prefix: expected three octets"),
        ({"workers": -1}, "workers: expected an integer from 0 to 200"),
        ({"control_planes": 0}, "control_planes: expected an integer from 1 to 50"),
        ({"provider": "docker"}, "provider: expected virtualbox or libvirt"),
        ({"worker": {"memory": 64}}, "worker.memory: expected an integer from 512"),
        ({"workers": 200, "network": {"first_ip": 100}}, "network.first_ip: too many machines"),
    ],
)
def test_bad_settings(tmp_path, data, message):
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InventoryError, match=message):
        provider.load_settings(path)


def test_vagrantfile_syntax():
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed")
    proc = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Syntax OK" in proc.stdout, proc.stderr


# Loads the real Vagrantfile with a recording stand-in for Vagrant's config DSL and prints what it
# defined, so the machine list can be compared with what kprov computes from the same settings.
RUBY_HARNESS = r"""
require "json"
class Rec
  def initialize; @h = {}; end
  def to_h; @h; end
  def method_missing(name, *args, **kw, &blk)
    key = name.to_s
    if key.end_with?("=") then @h[key.chomp("=")] = args[0] else (@h[key] ||= []) << args end
    nil
  end
  def respond_to_missing?(*) true end
end
class VM < Rec
  def define(name) node = Holder.new; yield node; (@h["defines"] ||= []) << [name, node.vm.to_h]; end
  def provider(name) p = Rec.new; yield p; (@h["providers"] ||= {})[name] = p.to_h; end
  def network(type, **kw) (@h["networks"] ||= []) << [type, kw]; end
end
class Holder; attr_reader :vm; def initialize; @vm = VM.new; end; end
module Vagrant
  def self.configure(version) c = Holder.new; yield c; $recorded = c.vm.to_h; end
end
load ARGV[0]
puts JSON.generate({"vm" => $recorded, "default_provider" => ENV["VAGRANT_DEFAULT_PROVIDER"]})
"""


@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_vagrantfile_defines_the_machines_kprov_expects(tmp_path, case):
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed")
    settings = settings_file(tmp_path, case)
    harness = tmp_path / "harness.rb"
    harness.write_text(RUBY_HARNESS)
    env = {k: v for k, v in os.environ.items() if k != "VAGRANT_DEFAULT_PROVIDER"}
    env["KPROV_VAGRANT_SETTINGS"] = str(settings)
    proc = subprocess.run(
        ["ruby", str(harness), str(VAGRANTFILE)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads(proc.stdout)
    parsed = provider.load_settings(settings)
    defined = [
        (
            name,
            vm["hostname"],
            vm["networks"][0][1]["ip"],
            vm["providers"]["virtualbox"]["cpus"],
            vm["providers"]["virtualbox"]["memory"],
            vm["providers"]["libvirt"]["memory"],
        )
        for name, vm in recorded["vm"]["defines"]
    ]
    assert defined == [(m.name, m.name, m.ip, m.cpus, m.memory, m.memory) for m in provider.machines(parsed)]
    assert all(vm["networks"][0][0] == "private_network" for _, vm in recorded["vm"]["defines"])
    assert recorded["vm"]["box"] == parsed.box and recorded["default_provider"] == parsed.provider
    assert recorded["vm"]["synced_folder"] == [[".", "/vagrant"]]  # disabled (kwargs not recorded)


def test_vagrant_validate():
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (Debian: apt install vagrant)")
    proc = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=VAGRANTFILE.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- through a `vagrant` stand-in

FAKE_VAGRANT = """#!/bin/sh
# Replays captured `vagrant` output; records each call and its directory.
echo "$PWD $*" >> "$FAKE_VAGRANT_LOG"
case "$1" in
  ssh-config) cat "$FAKE_VAGRANT_SSH_CONFIG"; exit "${FAKE_VAGRANT_RC:-0}" ;;
  ssh) cat "$FAKE_VAGRANT_IP_DIR/ip-addr-$FAKE_VAGRANT_FLAVOUR-$2.txt" ;;
  *) echo "unexpected: $*" >&2; exit 9 ;;
esac
"""


def no_vm_there(address: str, port: int) -> tuple[str, str]:
    """The captured ssh-config names VMs that do not exist here: reading their host key fails like a VM that is down."""
    raise OSError(f"no VM at {address}:{port} (captured ssh-config)")


@pytest.fixture
def fake_vagrant(tmp_path, monkeypatch):
    monkeypatch.setattr(provider, "scan_host_key", no_vm_there)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vagrant"
    script.write_text(FAKE_VAGRANT)
    script.chmod(0o755)
    log = tmp_path / "vagrant-calls.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VAGRANT_LOG", str(log))
    monkeypatch.setenv("FAKE_VAGRANT_IP_DIR", str(FIXTURES))

    def use(flavour: str, rc: int = 0) -> Path:
        monkeypatch.setenv("FAKE_VAGRANT_SSH_CONFIG", str(FIXTURES / f"ssh-config-{flavour}.txt"))
        monkeypatch.setenv("FAKE_VAGRANT_FLAVOUR", flavour)
        monkeypatch.setenv("FAKE_VAGRANT_RC", str(rc))
        return log

    return use


def lab_dir(tmp_path: Path, settings: dict | None = None) -> Path:
    directory = tmp_path / "lab" / "vagrant"
    directory.mkdir(parents=True)
    shutil.copy(VAGRANTFILE, directory / "Vagrantfile")
    if settings is not None:
        (directory / "settings.yaml").write_text(yaml.safe_dump(settings))
    else:
        shutil.copy(REPO / "vagrant" / "settings.yaml", directory / "settings.yaml")
    return directory


def vagrant_inventory(tmp_path: Path, **section) -> dict:
    return {
        "provider": "vagrant",
        "cluster": {"name": "vlab"},
        "vagrant": section,
        "__file__": str(tmp_path / "lab" / "inventories" / "vagrant.yaml"),
    }


def test_resolve_hosts_from_settings(tmp_path, fake_vagrant):
    log = fake_vagrant("virtualbox")
    directory = lab_dir(tmp_path)
    inventory = vagrant_inventory(tmp_path, dir="../vagrant")
    hosts = provider.resolve_hosts(inventory["vagrant"], inventory)
    assert hosts == [
        {
            "name": "cp-1",
            "address": "127.0.0.1",
            "port": 2222,
            "user": "vagrant",
            "become": True,
            "node_ip": "192.168.56.10",
            "roles": ["control_plane"],
            "labels": {},
            "ssh_key": "/home/ana/My Labs/kprov/vagrant/.vagrant/machines/cp-1/virtualbox/private_key",
            "known_hosts": str(directory / ".vagrant" / "kprov_known_hosts"),
        },
        {
            "name": "worker-1",
            "address": "127.0.0.1",
            "port": 2200,
            "user": "vagrant",
            "become": True,
            "node_ip": "192.168.56.11",
            "roles": ["worker"],
            "labels": {},
            "ssh_key": "/home/ana/My Labs/kprov/vagrant/.vagrant/machines/worker-1/virtualbox/private_key",
            "known_hosts": str(directory / ".vagrant" / "kprov_known_hosts"),
        },
        {
            "name": "worker-2",
            "address": "127.0.0.1",
            "port": 2201,
            "user": "vagrant",
            "become": True,
            "node_ip": "192.168.56.12",
            "roles": ["worker"],
            "labels": {},
            "ssh_key": "/home/ana/My Labs/kprov/vagrant/.vagrant/machines/worker-2/virtualbox/private_key",
            "known_hosts": str(directory / ".vagrant" / "kprov_known_hosts"),
        },
    ]
    assert log.read_text().splitlines() == [f"{directory} ssh-config"]
    assert all(h["node_ip"] != "10.0.2.15" for h in hosts)


def test_resolve_hosts_query_mode_asks_each_vm(tmp_path, fake_vagrant):
    log = fake_vagrant("libvirt")
    directory = lab_dir(tmp_path)
    inventory = vagrant_inventory(tmp_path, dir="../vagrant", node_ip="query")
    hosts = provider.resolve_hosts(inventory["vagrant"], inventory)
    assert [(h["name"], h["address"], h["port"], h["node_ip"], h["ssh_key"]) for h in hosts] == [
        ("cp-1", "192.168.121.87", 22, "192.168.56.10", "/srv/lab/vagrant/.vagrant/machines/cp-1/libvirt/private_key"),
        (
            "worker-1",
            "192.168.121.143",
            22,
            "192.168.56.11",
            "/srv/lab/vagrant/.vagrant/machines/worker-1/libvirt/private_key",
        ),
    ]
    assert log.read_text().splitlines() == [
        f"{directory} ssh-config",
        f"{directory} ssh cp-1 -c ip -4 -o addr show",
        f"{directory} ssh worker-1 -c ip -4 -o addr show",
    ]


def test_query_mode_rejects_a_vm_without_its_private_address(tmp_path, fake_vagrant):
    fake_vagrant("libvirt")
    lab_dir(tmp_path, {"network": {"prefix": "192.168.57"}})
    inventory = vagrant_inventory(tmp_path, dir="../vagrant", node_ip="query")
    with pytest.raises(
        InventoryError,
        match=r"^VM cp-1 does not have the private network address 192.168.57.10 "
        r"\(it has: 127.0.0.1, 192.168.121.87, 192.168.56.10\)$",
    ):
        provider.resolve_hosts(inventory["vagrant"], inventory)


def test_machine_unknown_to_settings_gets_its_ip_from_the_vm(tmp_path, fake_vagrant, monkeypatch):
    fake_vagrant("virtualbox")
    lab_dir(tmp_path, {"control_planes": 1, "workers": 0})  # worker-1/2 exist but are not in settings
    for name in ("worker-1", "worker-2"):  # they answer like cp-1 would, on another address
        text = fixture("ip-addr-virtualbox-cp-1.txt").replace("192.168.56.10", f"192.168.56.{20 + int(name[-1])}")
        (tmp_path / f"ip-addr-virtualbox-{name}.txt").write_text(text)
    shutil.copy(FIXTURES / "ip-addr-virtualbox-cp-1.txt", tmp_path / "ip-addr-virtualbox-cp-1.txt")
    monkeypatch.setenv("FAKE_VAGRANT_IP_DIR", str(tmp_path))
    inventory = vagrant_inventory(tmp_path, dir="../vagrant")
    hosts = provider.resolve_hosts(inventory["vagrant"], inventory)
    assert [(h["name"], h["roles"], h["node_ip"]) for h in hosts] == [
        ("cp-1", ["control_plane"], "192.168.56.10"),
        ("worker-1", ["worker"], "192.168.56.21"),
        ("worker-2", ["worker"], "192.168.56.22"),
    ]


def test_vagrant_failure_is_one_readable_error(tmp_path, fake_vagrant):
    fake_vagrant("virtualbox", rc=1)
    lab_dir(tmp_path)
    inventory = vagrant_inventory(tmp_path, dir="../vagrant")
    with pytest.raises(InventoryError, match=r"`vagrant ssh-config` failed in .* \(exit 1\)") as info:
        provider.resolve_hosts(inventory["vagrant"], inventory)
    assert "vagrant up" in info.value.hint


def test_vagrant_not_installed(tmp_path, monkeypatch):
    lab_dir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    inventory = vagrant_inventory(tmp_path, dir="../vagrant")
    with pytest.raises(PrerequisiteMissing, match="vagrant is not installed"):
        provider.resolve_hosts(inventory["vagrant"], inventory)


def test_missing_vagrantfile(tmp_path):
    inventory = vagrant_inventory(tmp_path, dir="nowhere")
    with pytest.raises(InventoryError, match=r"nowhere: no Vagrantfile there"):
        provider.resolve_hosts(inventory["vagrant"], inventory)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"dirr": "x"}, "vagrant.dirr: unknown key"),
        ({"dir": 3}, "vagrant.dir: expected a non-empty string"),
        ({"node_ip": "dhcp"}, "vagrant.node_ip: expected one of settings, query, got 'dhcp'"),
        ("vagrant/", "vagrant: expected a mapping"),
    ],
)
def test_validate_section(section, message):
    with pytest.raises(InventoryError, match=message) as info:
        provider.validate_section(section, "vagrant")
    assert info.value.hint == "see docs/vagrant.md for the vagrant: section"


def test_through_the_inventory_loader(tmp_path, fake_vagrant):
    from provisioner.inventory.loader import load_inventory

    fake_vagrant("virtualbox")
    lab_dir(tmp_path)
    inv_dir = tmp_path / "lab" / "inventories"
    inv_dir.mkdir()
    shutil.copy(REPO / "inventories" / "vagrant.yaml", inv_dir / "vagrant.yaml")
    inventory = load_inventory(inv_dir / "vagrant.yaml")
    assert [(h.name, h.address, h.port, h.node_ip, h.roles) for h in inventory.hosts] == [
        ("cp-1", "127.0.0.1", 2222, "192.168.56.10", ("control_plane",)),
        ("worker-1", "127.0.0.1", 2200, "192.168.56.11", ("worker",)),
        ("worker-2", "127.0.0.1", 2201, "192.168.56.12", ("worker",)),
    ]


def test_cli_vagrant_inventory(kprov, tmp_path, fake_vagrant, monkeypatch):
    fake_vagrant("virtualbox")
    directory = lab_dir(tmp_path)
    rc, out, err = kprov("vagrant", "inventory", "--dir", directory)
    assert rc == 0, err
    doc = yaml.safe_load(out)
    assert doc["provider"] == "static" and doc["cluster"]["name"] == "vagrant"
    assert [h["node_ip"] for h in doc["hosts"]] == ["192.168.56.10", "192.168.56.11", "192.168.56.12"]

    target = tmp_path / "static.yaml"
    rc, _, err = kprov("vagrant", "inventory", "--dir", directory, "-o", target)
    assert rc == 0 and "wrote 3 host(s)" in err
    from provisioner.inventory.loader import load_inventory

    assert [h.node_ip for h in load_inventory(target).hosts] == ["192.168.56.10", "192.168.56.11", "192.168.56.12"]

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    rc, _, err = kprov("vagrant", "inventory", "--dir", directory)
    assert rc == 2 and "error: vagrant is not installed" in err and "Traceback" not in err
