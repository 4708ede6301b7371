"""`kprov ec2 create|inventory|destroy` against a real moto EC2 server (never real AWS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.errors import CloudError
from provisioner.providers import ec2 as provider
from provisioner.providers._common import load_raw_inventory
from provisioner.providers.ec2_rules import SELF, desired_rules, rules_from_aws
from tests.providers.helpers import PUBLIC_KEY, cluster_state, ec2_inventory

NOTHING = {"instances": [], "instance_count": 0, "groups": [], "keys": []}


def config_of(path: Path) -> provider.Ec2Config:
    raw = load_raw_inventory(path)
    return provider.load_config(raw["ec2"], raw)


def test_create_inventory_destroy(kprov, ec2, tmp_path):
    inv = ec2_inventory(tmp_path, "demo")

    rc, out, err = kprov("ec2", "create", "--inventory", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 0, err
    assert "demo-cp-1" in out and "demo-worker-2" in out and "3 created" in out
    assert cluster_state(ec2, "demo") == {
        "instances": ["demo-cp-1", "demo-worker-1", "demo-worker-2"],
        "instance_count": 3,
        "groups": ["kprov-demo"],
        "keys": ["kprov-demo"],
    }
    instance = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["demo-cp-1"]}])["Reservations"][0][
        "Instances"
    ][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {
        "Name": "demo-cp-1",
        "kprov:cluster": "demo",
        "kprov:role": "control_plane",
        "kprov:managed-by": "kprov",
        "team": "platform",
    }
    assert instance["InstanceType"] == "t3.medium" and instance["KeyName"] == "kprov-demo"
    volume = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}])[
        "Volumes"
    ][0]
    assert volume["Size"] == 20

    rc, out, err = kprov("ec2", "inventory", "--inventory", inv)
    assert rc == 0, err
    hosts = yaml.safe_load(out)["hosts"]
    assert [(h["name"], h["roles"]) for h in hosts] == [
        ("demo-cp-1", ["control_plane"]),
        ("demo-worker-1", ["worker"]),
        ("demo-worker-2", ["worker"]),
    ]
    assert hosts[0]["address"] == instance["PublicIpAddress"]
    assert hosts[0]["node_ip"] == instance["PrivateIpAddress"]
    assert hosts[0]["user"] == "ubuntu" and hosts[0]["become"] is True
    assert hosts[0]["ssh_key"] == str(tmp_path / "id_test")

    rc, out, err = kprov("ec2", "destroy", "--inventory", inv, "--poll", "0.1", "--yes")
    assert rc == 0, err
    assert "terminated: demo-cp-1" in out and "deleted key pair: kprov-demo" in out
    assert cluster_state(ec2, "demo") == NOTHING

    rc, out, err = kprov("ec2", "destroy", "--inventory", inv, "--poll", "0.1", "--yes")
    assert (rc, out.strip()) == (0, "cluster demo: nothing to destroy")


def test_recreate_is_idempotent_and_only_adds_what_is_missing(ec2, aws, tmp_path):
    config = config_of(ec2_inventory(tmp_path, "idem", workers={"count": 1, "instance_type": "t3.small"}))
    first = provider.create(config, wait_ssh=False, poll=0.1)
    again = provider.create(config, wait_ssh=False, poll=0.1)
    assert first.created == ("idem-cp-1", "idem-worker-1")
    assert (again.created, again.security_group_created, again.key_imported, again.rules_added) == ((), False, False, 0)
    assert [i.instance_id for i in again.instances] == [i.instance_id for i in first.instances]

    bigger = config_of(ec2_inventory(tmp_path, "idem", workers={"count": 3, "instance_type": "t3.small"}))
    grown = provider.create(bigger, wait_ssh=False, poll=0.1)
    assert grown.created == ("idem-worker-2", "idem-worker-3")
    assert cluster_state(ec2, "idem")["instance_count"] == 4

    smaller = config_of(ec2_inventory(tmp_path, "idem", workers={"count": 1, "instance_type": "t3.small"}))
    shrunk = provider.create(smaller, wait_ssh=False, poll=0.1)
    assert shrunk.created == () and shrunk.extra == ("idem-worker-2", "idem-worker-3")
    assert cluster_state(ec2, "idem")["instance_count"] == 4  # create never terminates


def test_stopped_instance_is_started_not_duplicated(ec2, aws, tmp_path):
    config = config_of(ec2_inventory(tmp_path, "stop", workers={"count": 0}))
    first = provider.create(config, wait_ssh=False, poll=0.1)
    ec2.stop_instances(InstanceIds=[first.instances[0].instance_id])
    again = provider.create(config, wait_ssh=False, poll=0.1)
    assert (again.created, again.started) == ((), ("stop-cp-1",))
    assert [i.state for i in again.instances] == ["running"]


def test_security_group_has_exactly_the_kubeadm_ports(ec2, aws, tmp_path):
    config = config_of(ec2_inventory(tmp_path, "sg", workers={"count": 0}))
    report = provider.create(config, wait_ssh=False, poll=0.1)
    group = ec2.describe_security_groups(GroupIds=[report.security_group_id])["SecurityGroups"][0]
    found = set(rules_from_aws(group["IpPermissions"], report.security_group_id))
    assert found == {
        ("tcp", 22, 22, "203.0.113.7/32"),
        ("tcp", 6443, 6443, "203.0.113.7/32"),
        ("tcp", 6443, 6443, SELF),
        ("tcp", 2379, 2380, SELF),
        ("tcp", 10250, 10250, SELF),
        ("tcp", 10257, 10257, SELF),
        ("tcp", 10259, 10259, SELF),
        ("tcp", 30000, 32767, SELF),
        ("udp", 8472, 8472, SELF),
        ("icmp", -1, -1, SELF),
    }

    # A rule added by hand is revoked, a changed ssh_cidr replaces the old one.
    ec2.authorize_security_group_ingress(
        GroupId=report.security_group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    moved = config_of(ec2_inventory(tmp_path, "sg", workers={"count": 0}, ssh_cidr="198.51.100.0/24"))
    again = provider.create(moved, wait_ssh=False, poll=0.1)
    group = ec2.describe_security_groups(GroupIds=[report.security_group_id])["SecurityGroups"][0]
    found = set(rules_from_aws(group["IpPermissions"], report.security_group_id))
    assert ("tcp", 80, 80, "0.0.0.0/0") not in found and ("tcp", 22, 22, "203.0.113.7/32") not in found
    assert ("tcp", 22, 22, "198.51.100.0/24") in found
    assert (again.rules_added, again.rules_revoked) == (2, 3)


@pytest.mark.parametrize(
    "cni, extra",
    [
        ("flannel", {("udp", 8472, 8472)}),
        ("calico", {("udp", 4789, 4789), ("tcp", 179, 179)}),
        ("bridge", set()),
    ],
)
def test_cni_specific_ports(cni, extra):
    common = {
        ("tcp", 6443, 6443),
        ("tcp", 2379, 2380),
        ("tcp", 10250, 10250),
        ("tcp", 10257, 10257),
        ("tcp", 10259, 10259),
        ("tcp", 30000, 32767),
        ("icmp", -1, -1),
    }
    in_group = {(r.protocol, r.from_port, r.to_port) for r in desired_rules(["192.0.2.1/32"], cni) if r.source == SELF}
    assert in_group == common | extra


@pytest.mark.parametrize("address, expected_field", [("public", "PublicIpAddress"), ("private", "PrivateIpAddress")])
def test_address_public_or_private_node_ip_always_private(ec2, aws, tmp_path, address, expected_field):
    path = ec2_inventory(tmp_path, "addr", workers={"count": 1}, address=address)
    provider.create(config_of(path), wait_ssh=False, poll=0.1)
    raw = load_raw_inventory(path)
    hosts = provider.resolve_hosts(raw["ec2"], raw)
    by_name = {
        next(t["Value"] for t in i["Tags"] if t["Key"] == "Name"): i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    for host in hosts:
        assert host["address"] == by_name[host["name"]][expected_field]
        assert host["node_ip"] == by_name[host["name"]]["PrivateIpAddress"]


def test_resolve_hosts_through_the_inventory_loader(ec2, aws, tmp_path):
    from provisioner.inventory.loader import load_inventory

    path = ec2_inventory(tmp_path, "loader", workers={"count": 1})
    provider.create(config_of(path), wait_ssh=False, poll=0.1)
    inventory = load_inventory(path)
    assert [(h.name, h.roles) for h in inventory.hosts] == [
        ("loader-cp-1", ("control_plane",)),
        ("loader-worker-1", ("worker",)),
    ]
    assert all(h.node_ip and h.node_ip.startswith("172.31.") for h in inventory.hosts)


def test_resolve_hosts_without_instances_says_what_to_do(aws, tmp_path):
    raw = load_raw_inventory(ec2_inventory(tmp_path, "empty"))
    with pytest.raises(CloudError, match=r"no running EC2 instances tagged kprov:cluster=empty") as info:
        provider.resolve_hosts(raw["ec2"], raw)
    assert "kprov ec2 create" in info.value.hint


def test_two_clusters_are_isolated_by_tags(kprov, ec2, tmp_path):
    inv_a = ec2_inventory(tmp_path, "alpha", workers={"count": 1})
    inv_b = ec2_inventory(tmp_path, "beta", workers={"count": 1})
    assert kprov("ec2", "create", "-i", inv_a, "--no-wait-ssh", "--poll", "0.1")[0] == 0
    assert kprov("ec2", "create", "-i", inv_b, "--no-wait-ssh", "--poll", "0.1")[0] == 0

    rc, out, _ = kprov("ec2", "inventory", "-i", inv_a)
    assert [h["name"] for h in yaml.safe_load(out)["hosts"]] == ["alpha-cp-1", "alpha-worker-1"]

    assert kprov("ec2", "destroy", "-i", inv_a, "--poll", "0.1", "--yes")[0] == 0
    assert cluster_state(ec2, "alpha") == NOTHING
    assert cluster_state(ec2, "beta") == {
        "instances": ["beta-cp-1", "beta-worker-1"],
        "instance_count": 2,
        "groups": ["kprov-beta"],
        "keys": ["kprov-beta"],
    }


def test_untagged_lookalikes_are_never_touched(kprov, ec2, tmp_path):
    """A same-named security group / key pair without the cluster's tags: create refuses, destroy skips."""
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    foreign = ec2.create_security_group(GroupName="kprov-foreign", Description="not kprov's", VpcId=default_vpc)[
        "GroupId"
    ]
    ec2.import_key_pair(KeyName="kprov-foreign", PublicKeyMaterial=PUBLIC_KEY.encode())
    ami = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    ec2.run_instances(
        ImageId=ami,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "foreign-cp-1"}]}],
    )
    inv = ec2_inventory(tmp_path, "foreign")

    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 1
    assert f"error: security group kprov-foreign ({foreign}) exists" in err
    assert "not owned by cluster foreign (no kprov tags); kprov will not modify it" in err and "Traceback" not in err

    rc, out, err = kprov("ec2", "destroy", "-i", inv, "--poll", "0.1", "--yes")
    assert rc == 0, err
    assert f"left alone (not tagged for cluster foreign): security group kprov-foreign ({foreign})" in out
    assert "left alone (not tagged for cluster foreign): key pair kprov-foreign" in out
    assert ec2.describe_security_groups(GroupIds=[foreign])["SecurityGroups"]
    assert ec2.describe_key_pairs(KeyNames=["kprov-foreign"])["KeyPairs"]
    states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert states == ["running"]


def test_existing_key_pair_is_used_and_kept(ec2, aws, tmp_path):
    ec2.import_key_pair(KeyName="team-key", PublicKeyMaterial=PUBLIC_KEY.encode())
    config = config_of(ec2_inventory(tmp_path, "keep", key_name="team-key", public_key=None, workers={"count": 0}))
    report = provider.create(config, wait_ssh=False, poll=0.1)
    assert (report.key_name, report.key_imported) == ("team-key", False)
    destroyed = provider.destroy(config, poll=0.1)
    assert destroyed.key_pairs == () and destroyed.left_alone == ("key pair team-key",)
    assert ec2.describe_key_pairs(KeyNames=["team-key"])["KeyPairs"]


def test_partial_failure_leaves_only_tagged_resources_and_destroy_cleans_up(kprov, ec2, tmp_path, monkeypatch):
    """The worker launch fails after the SG, key pair and control plane exist: the error says what
    was created, everything is tagged, and destroy leaves nothing behind."""
    import moto.settings

    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    inv = ec2_inventory(tmp_path, "partial", workers={"count": 2, "instance_type": "t3.nosuchsize"})

    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 1
    assert "error: cannot launch partial-worker-1: InvalidInstanceType" in err
    assert "created before the failure: security group sg-" in err
    assert "key pair kprov-partial, partial-cp-1 (i-" in err
    assert "Traceback" not in err
    assert cluster_state(ec2, "partial") == {
        "instances": ["partial-cp-1"],
        "instance_count": 1,
        "groups": ["kprov-partial"],
        "keys": ["kprov-partial"],
    }

    rc, out, err = kprov("ec2", "destroy", "-i", inv, "--poll", "0.1", "--yes")
    assert rc == 0, err
    assert cluster_state(ec2, "partial") == NOTHING


def test_ami_owner_and_name_resolve_to_the_newest_image(ec2, aws, tmp_path):
    ami = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    source = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ids = {}
    for name in (
        "debian-12-amd64-20250101-1",
        "debian-12-amd64-20250301-3",
        "debian-12-amd64-20250201-2",
        "debian-11-amd64-20250401-4",
    ):
        ids[name] = ec2.create_image(InstanceId=source, Name=name)["ImageId"]
    config = config_of(
        ec2_inventory(tmp_path, "ami", workers={"count": 0}, ami={"owner": "self", "name": "debian-12-amd64-*"})
    )
    report = provider.create(config, wait_ssh=False, poll=0.1)
    assert report.image_id == ids["debian-12-amd64-20250301-3"]
    assert config.ssh_user == "admin"


def test_explicit_ami_id(ec2, aws, tmp_path):
    ami = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    report = provider.create(
        config_of(ec2_inventory(tmp_path, "amiid", workers={"count": 0}, ami=ami)), wait_ssh=False, poll=0.1
    )
    assert report.image_id == ami


def test_create_waits_for_ssh_on_each_instance(ec2, aws, tmp_path, monkeypatch):
    probed = []
    monkeypatch.setattr(
        "provisioner.providers.ec2.wait_for_ssh",
        lambda endpoints, **kw: probed.extend((e.name, e.address, e.port) for e in endpoints),
    )
    report = provider.create(config_of(ec2_inventory(tmp_path, "ssh", workers={"count": 1})), poll=0.1)
    assert probed == [(i.name, i.public_ip, 22) for i in report.instances]


def test_create_requires_ssh_cidr_unless_given_on_the_command_line(kprov, ec2, tmp_path, monkeypatch):
    inv = ec2_inventory(tmp_path, "cidr", ssh_cidr=None, workers={"count": 0})
    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh")
    assert rc == 2
    assert "error: ec2.ssh_cidr: required to create the security group" in err and "--ssh-cidr" in err
    assert cluster_state(ec2, "cidr") == NOTHING

    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--ssh-cidr", "198.51.100.4/32", "--poll", "0.1")
    assert rc == 0, err
    monkeypatch.setenv("KPROV_EC2_SSH_CIDR", "198.51.100.5/32,198.51.100.6/32")
    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 0, err
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["kprov-cidr"]}])["SecurityGroups"][
        0
    ]
    ssh_sources = {k[3] for k in rules_from_aws(group["IpPermissions"], group["GroupId"]) if k[1] == 22}
    assert ssh_sources == {"198.51.100.5/32", "198.51.100.6/32"}


def test_nodeports_open_to_the_operator_only_when_asked(ec2, aws, tmp_path):
    config = config_of(ec2_inventory(tmp_path, "np", workers={"count": 0}, nodeport_cidr="ssh_cidr"))
    report = provider.create(config, wait_ssh=False, poll=0.1)
    group = ec2.describe_security_groups(GroupIds=[report.security_group_id])["SecurityGroups"][0]
    nodeport_sources = {k[3] for k in rules_from_aws(group["IpPermissions"], report.security_group_id) if k[1] == 30000}
    assert nodeport_sources == {SELF, "203.0.113.7/32"}
