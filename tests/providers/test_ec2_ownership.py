"""Issue 10 item 10 against a real moto EC2 server: one ownership rule for `ec2 create` and `destroy`,
and a /0 ssh_cidr only with an explicit flag."""

from __future__ import annotations

import pytest

from provisioner.providers.ec2_rules import rules_from_aws
from tests.providers.helpers import cluster_state, ec2_inventory

NOTHING = {"instances": [], "instance_count": 0, "groups": [], "keys": []}
#: a rule the other owner put on its group; create must never revoke it
THEIR_RULE = {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}


def _rules(ec2, group_id: str) -> set:
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return set(rules_from_aws(group["IpPermissions"], group_id))


@pytest.mark.parametrize(
    ("tags", "found"),
    [
        ({"kprov:cluster": "own", "kprov:managed-by": "terraform"}, "kprov:cluster=own, kprov:managed-by=terraform"),
        ({"kprov:cluster": "other", "kprov:managed-by": "kprov"}, "kprov:cluster=other, kprov:managed-by=kprov"),
        ({"kprov:cluster": "own"}, "kprov:cluster=own"),
        ({"kprov:managed-by": "kprov"}, "kprov:managed-by=kprov"),
        ({"team": "platform"}, "no kprov tags"),
    ],
    ids=["other-manager", "other-cluster", "cluster-tag-only", "managed-tag-only", "untagged"],
)
def test_a_group_owned_by_another_is_neither_adopted_nor_deleted(kprov, ec2, tmp_path, tags, found):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group_id = ec2.create_security_group(
        GroupName="kprov-own",
        Description="someone else's",
        VpcId=vpc,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[THEIR_RULE])
    before = _rules(ec2, group_id)
    inv = ec2_inventory(tmp_path, "own", workers={"count": 0})

    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert (
        f"error: security group kprov-own ({group_id}) exists but is not owned by cluster own ({found}); "
        "kprov will not modify it" in lines
    )
    assert any(
        line.startswith("hint: kprov adopts only resources tagged kprov:cluster=own and kprov:managed-by=kprov")
        for line in lines
    )
    assert _rules(ec2, group_id) == before  # nothing revoked, nothing added
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert instances == []  # refused before any launch

    rc, out, err = kprov("ec2", "destroy", "-i", inv, "--poll", "0.1", "--yes")
    assert rc == 0, err
    assert f"left alone (not tagged for cluster own): security group kprov-own ({group_id})" in out
    assert ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert _rules(ec2, group_id) == before


def test_an_owned_group_is_adopted_and_its_rules_reconciled(kprov, ec2, tmp_path):
    """The positive side of the same rule: a group tagged for this cluster and kprov is kprov's."""
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group_id = ec2.create_security_group(
        GroupName="kprov-mine",
        Description="kprov's",
        VpcId=vpc,
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [{"Key": "kprov:cluster", "Value": "mine"}, {"Key": "kprov:managed-by", "Value": "kprov"}],
            }
        ],
    )["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[THEIR_RULE])
    inv = ec2_inventory(tmp_path, "mine", workers={"count": 0})
    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 0, err
    assert not any(rule[1] == 80 for rule in _rules(ec2, group_id))  # a stray rule on kprov's own group goes
    rc, out, err = kprov("ec2", "destroy", "-i", inv, "--poll", "0.1", "--yes")
    assert rc == 0, err
    assert f"deleted security group: {group_id}" in out
    assert cluster_state(ec2, "mine") == NOTHING


@pytest.mark.parametrize(
    ("inventory", "argv", "outcome"),
    [
        ({"ssh_cidr": "0.0.0.0/0"}, [], "refused"),
        ({"ssh_cidr": ["203.0.113.7/32", "0.0.0.0/0"]}, [], "refused"),
        ({"ssh_cidr": "203.0.113.7/32"}, ["--ssh-cidr", "0.0.0.0/0"], "refused"),
        ({"ssh_cidr": "0.0.0.0/0", "allow_world_ssh": False}, [], "refused"),
        ({"ssh_cidr": "0.0.0.0/0"}, ["--allow-world-ssh"], "open"),
        ({"ssh_cidr": "0.0.0.0/0", "allow_world_ssh": True}, [], "open"),
        ({"ssh_cidr": "0.0.0.0/1"}, [], "open"),  # half the internet is a choice, not the /0 accident
    ],
    ids=["inventory", "in-a-list", "command-line", "explicit-false", "flag", "inventory-flag", "slash-1"],
)
def test_world_ssh_needs_an_explicit_flag(kprov, ec2, tmp_path, inventory, argv, outcome):
    inv = ec2_inventory(tmp_path, "world", workers={"count": 0}, **inventory)
    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1", *argv)
    if outcome == "refused":
        assert rc == 2 and "Traceback" not in err
        assert err.strip().splitlines() == [
            "error: ec2.ssh_cidr: 0.0.0.0/0 would open SSH (22) and the API server (6443) to the whole internet",
            "hint: give your own address, e.g. 203.0.113.7/32; to open them to everyone on purpose, "
            "pass --allow-world-ssh or set ec2.allow_world_ssh: true",
        ]
        assert cluster_state(ec2, "world") == NOTHING
        return
    assert rc == 0, err
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["kprov-world"]}])["SecurityGroups"][
        0
    ]
    ssh_sources = {r[3] for r in rules_from_aws(group["IpPermissions"], group["GroupId"]) if r[1] == 22}
    assert ssh_sources == {inventory["ssh_cidr"]}


@pytest.mark.parametrize(
    ("inventory", "argv", "message"),
    [
        ({"ssh_cidr": "::/0"}, [], "error: ec2.ssh_cidr: expected an IPv4 CIDR such as 203.0.113.7/32, got '::/0'"),
        (
            {"ssh_cidr": "::/0", "allow_world_ssh": True},
            [],
            "error: ec2.ssh_cidr: expected an IPv4 CIDR such as 203.0.113.7/32, got '::/0'",
        ),
        ({}, ["--ssh-cidr", "::/0"], "error: --ssh-cidr/KPROV_EC2_SSH_CIDR: expected an IPv4 CIDR, got '::/0'"),
        ({"allow_world_ssh": "yes"}, [], "error: ec2.allow_world_ssh: expected true or false, got 'yes'"),
    ],
    ids=["v6-world", "v6-world-with-flag", "v6-command-line", "flag-not-bool"],
)
def test_ipv6_world_and_bad_flags_are_bad_input(kprov, ec2, tmp_path, inventory, argv, message):
    """IPv6 sources are not supported by the security group rules at all: ::/0 is refused even with the flag."""
    inv = ec2_inventory(tmp_path, "six", workers={"count": 0}, **inventory)
    rc, _, err = kprov("ec2", "create", "-i", inv, "--no-wait-ssh", "--poll", "0.1", *argv)
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[0] == message
    assert cluster_state(ec2, "six") == NOTHING
