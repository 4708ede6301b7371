"""The `ec2:` section: validation messages (table) and the defaults it turns into."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import InputError, InventoryError
from provisioner.providers import ec2 as provider
from provisioner.providers.ec2_config import require_ssh_cidrs

INVENTORY = {"cluster": {"name": "demo"}, "__file__": "/srv/inv/demo.yaml"}


@pytest.mark.parametrize(
    "section, message",
    [
        ([], "ec2: expected a mapping"),
        ({"regoin": "eu-west-1"}, "ec2.regoin: unknown key"),
        ({"region": 5}, "ec2.region: expected a non-empty string, got 5"),
        ({"region": "Europe"}, "ec2.region: invalid value 'Europe'"),
        ({"ssh_cidr": "203.0.113.7"}, "ec2.ssh_cidr: expected an IPv4 CIDR such as 203.0.113.7/32, got '203.0.113.7'"),
        ({"ssh_cidr": "203.0.113.7/24"}, "ec2.ssh_cidr: expected an IPv4 CIDR"),
        ({"ssh_cidr": []}, "ec2.ssh_cidr: expected a CIDR or a non-empty list of CIDRs"),
        ({"ssh_cidr": ["10.0.0.0/8", 7]}, "ec2.ssh_cidr: expected an IPv4 CIDR such as 203.0.113.7/32, got 7"),
        ({"ami": "debian-13"}, "ec2.ami: expected an AMI id (ami-...)"),
        ({"ami": {"owner": "136693071363"}}, "ec2.ami.name: expected a non-empty string"),
        ({"ami": {"owner": "1", "name": "x", "arch": "x86_64"}}, "ec2.ami.arch: unknown key"),
        (
            {"ami": {"owner": "1", "name": "x", "architecture": "sparc"}},
            "ec2.ami.architecture: expected x86_64 or arm64",
        ),
        ({"control_plane": {"count": 0}}, "ec2.control_plane.count: expected an integer from 1 to 100, got 0"),
        ({"workers": {"count": -1}}, "ec2.workers.count: expected an integer from 0 to 100, got -1"),
        ({"workers": {"count": True}}, "ec2.workers.count: expected an integer from 0 to 100, got True"),
        (
            {"workers": {"instance_type": "big"}},
            "ec2.workers.instance_type: expected an instance type such as t3.medium, got 'big'",
        ),
        ({"workers": {"size": 3}}, "ec2.workers.size: unknown key (known: count, instance_type)"),
        ({"workers": 3}, "ec2.workers: expected a mapping {count, instance_type}"),
        ({"root_volume_gb": 4}, "ec2.root_volume_gb: expected an integer from 8 to 16384, got 4"),
        ({"address": "elastic"}, "ec2.address: expected one of public, private, got 'elastic'"),
        ({"subnet_id": "subnet-xyz"}, "ec2.subnet_id: invalid value 'subnet-xyz'"),
        ({"tags": ["team"]}, "ec2.tags: expected a mapping of strings"),
        ({"tags": {"kprov:cluster": "x"}}, "ec2.tags.kprov:cluster: reserved tag key"),
        ({"tags": {"Name": "x"}}, "ec2.tags.Name: reserved tag key"),
        ({"tags": {"team": ["a"]}}, "ec2.tags.team: expected a string value"),
    ],
)
def test_validate_section_names_the_key_path(section, message):
    with pytest.raises(InventoryError) as info:
        provider.validate_section(section, "ec2")
    assert str(info.value).startswith(message)
    assert info.value.hint == "see docs/ec2.md for the ec2: section"


def test_the_example_inventory_is_valid():
    import yaml

    raw = yaml.safe_load(Path("inventories/ec2-example.yaml").read_text())
    provider.validate_section(raw["ec2"], "ec2")


def test_defaults():
    config = provider.load_config({"ssh_cidr": "203.0.113.7/32"}, INVENTORY)
    assert (config.cluster, config.key_name, config.security_group_name) == ("demo", "kprov-demo", "kprov-demo")
    assert (config.ami.owner, config.ami.name, config.ssh_user) == ("136693071363", "debian-12-amd64-*", "admin")
    assert [(g.role, g.count, g.instance_type) for g in config.groups] == [
        ("control_plane", 1, "t3.medium"),
        ("worker", 1, "t3.small"),
    ]
    assert (config.root_volume_gb, config.address, config.cni, config.public_key, config.ssh_key) == (
        20,
        "public",
        "flannel",
        None,
        None,
    )
    assert config.desired_names().keys() == {"demo-cp-1", "demo-worker-1"}


@pytest.mark.parametrize(
    "ami, owner, user",
    [
        ("ubuntu-24.04", "099720109477", "ubuntu"),
        ("debian-12", "136693071363", "admin"),
        (
            {"owner": "099720109477", "name": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"},
            "099720109477",
            "ubuntu",
        ),
        ("ami-0123456789abcdef0", None, "admin"),
    ],
)
def test_ami_forms_and_default_user(ami, owner, user):
    config = provider.load_config({"ami": ami}, INVENTORY)
    assert (config.ami.owner, config.ssh_user) == (owner, user)


def test_paths_are_relative_to_the_inventory_and_ssh_key_follows_public_key():
    config = provider.load_config({"public_key": "keys/ci.pub"}, INVENTORY)
    assert (config.public_key, config.ssh_key) == (Path("/srv/inv/keys/ci.pub"), Path("/srv/inv/keys/ci"))
    home = provider.load_config({"public_key": "~/.ssh/id_ed25519.pub", "ssh_key": "/k/id"}, INVENTORY)
    assert (home.public_key, home.ssh_key) == (Path.home() / ".ssh/id_ed25519.pub", Path("/k/id"))


def test_ssh_cidr_is_required_to_create_and_can_come_from_the_command_line(monkeypatch):
    monkeypatch.delenv("KPROV_EC2_SSH_CIDR", raising=False)
    with pytest.raises(InventoryError, match=r"^ec2.ssh_cidr: required"):
        require_ssh_cidrs(provider.load_config({}, INVENTORY))
    assert provider.load_config({"ssh_cidr": "10.0.0.0/8"}, INVENTORY, ssh_cidrs=("192.0.2.1/32",)).ssh_cidrs == (
        "192.0.2.1/32",
    )
    with pytest.raises(InputError, match="expected an IPv4 CIDR"):
        provider.load_config({}, INVENTORY, ssh_cidrs=("192.0.2.1",))


@pytest.mark.parametrize("cluster", [None, {"name": "Bad_Name"}, {"name": "x" * 41}])
def test_cluster_name_is_checked(cluster):
    with pytest.raises(InventoryError, match=r"^cluster"):
        provider.load_config({}, {"cluster": cluster} if cluster else {})


def test_nodeport_cidr_can_follow_ssh_cidr_and_its_override():
    section = {"ssh_cidr": "203.0.113.7/32", "nodeport_cidr": "ssh_cidr"}
    assert provider.load_config(section, INVENTORY).nodeport_cidrs == ("203.0.113.7/32",)
    assert provider.load_config(section, INVENTORY, ssh_cidrs=("192.0.2.9/32",)).nodeport_cidrs == ("192.0.2.9/32",)
    assert provider.load_config({"nodeport_cidr": ["10.0.0.0/8"]}, INVENTORY).nodeport_cidrs == ("10.0.0.0/8",)
    assert provider.load_config({}, INVENTORY).nodeport_cidrs == ()
    with pytest.raises(InventoryError, match="ec2.nodeport_cidr: expected an IPv4 CIDR"):
        provider.validate_section({"nodeport_cidr": "same"}, "ec2")
