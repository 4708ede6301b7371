"""EC2: `kprov ec2 create` makes the API's network load balancer (6443, target group of the control planes' IPs,
tagged like every other resource), the inventory resolves control_plane_endpoint to its DNS name, and `kprov ec2
destroy` removes it. Against a real moto server on 127.0.0.1 (elbv2 + EC2), never AWS."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import CloudError
from provisioner.inventory.loader import load_inventory
from provisioner.providers import ec2 as provider
from provisioner.providers import ec2_nlb
from provisioner.providers._common import load_raw_inventory
from tests.providers.conftest import aws, ec2, kprov, loopback_only, moto_endpoint  # noqa: F401 - fixtures
from tests.providers.helpers import REGION, ec2_inventory

HA = {"control_plane": {"count": 3, "instance_type": "t3.medium"}, "workers": {"count": 1, "instance_type": "t3.small"}}


@pytest.fixture
def elb(aws: str):  # noqa: F811 - the moto fixture
    import boto3

    return boto3.client("elbv2", region_name=REGION)


def config_of(path: Path) -> provider.Ec2Config:
    raw = load_raw_inventory(path)
    return provider.load_config(raw["ec2"], raw)


def nlb_state(elb, name: str) -> dict:
    lbs = [lb for lb in elb.describe_load_balancers()["LoadBalancers"] if lb["LoadBalancerName"] == name]
    tgs = [tg for tg in elb.describe_target_groups()["TargetGroups"] if tg["TargetGroupName"] == f"{name}-api"]
    return {"load_balancers": len(lbs), "target_groups": len(tgs)}


def test_create_resolve_destroy(kprov, ec2, elb, tmp_path):  # noqa: F811
    inv = ec2_inventory(tmp_path, "hanlb", **HA)
    rc, out, err = kprov("ec2", "create", "--inventory", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 0, err
    assert "API load balancer kprov-hanlb (created)" in out

    lb = elb.describe_load_balancers(Names=["kprov-hanlb"])["LoadBalancers"][0]
    assert (lb["Type"], lb["Scheme"]) == ("network", "internet-facing")
    tags = {
        t["Key"]: t["Value"]
        for t in elb.describe_tags(ResourceArns=[lb["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]
    }
    assert tags == {"Name": "kprov-hanlb", "kprov:cluster": "hanlb", "kprov:managed-by": "kprov", "team": "platform"}
    listener = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert [(li["Protocol"], li["Port"]) for li in listener] == [("TCP", 6443)]
    tg = elb.describe_target_groups(Names=["kprov-hanlb-api"])["TargetGroups"][0]
    assert listener[0]["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    assert (tg["Protocol"], tg["Port"], tg["TargetType"]) == ("TCP", 6443, "ip")
    assert (tg["HealthCheckProtocol"], tg["HealthCheckPath"]) == ("HTTPS", "/healthz")
    cps = [i for i in provider.cluster_instances(config_of(inv)) if i.role == "control_plane"]
    targets = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
    assert sorted(t["Target"]["Id"] for t in targets) == sorted(i.private_ip for i in cps)
    assert len(cps) == 3

    # the nodes' security group lets the balancer (from the VPC) reach 6443
    group = ec2.describe_security_groups(GroupNames=["kprov-hanlb"])["SecurityGroups"][0]
    vpc_cidr = ec2.describe_vpcs(VpcIds=[group["VpcId"]])["Vpcs"][0]["CidrBlock"]
    api_sources = {r["CidrIp"] for p in group["IpPermissions"] if p.get("FromPort") == 6443 for r in p["IpRanges"]}
    assert vpc_cidr in api_sources

    # idempotent: a second create changes nothing
    rc, out, err = kprov("ec2", "create", "--inventory", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc == 0 and "API load balancer kprov-hanlb (exists)" in out, err
    assert nlb_state(elb, "kprov-hanlb") == {"load_balancers": 1, "target_groups": 1}

    # the inventory's endpoint is the balancer's DNS name: kubeadm, the joins, the SANs and the kubeconfig use it
    loaded = load_inventory(inv)
    assert loaded.cluster.control_plane_endpoint == f"{lb['DNSName']}:6443"
    assert [h.name for h in loaded.control_planes] == ["hanlb-cp-1", "hanlb-cp-2", "hanlb-cp-3"]

    rc, out, err = kprov("ec2", "destroy", "--inventory", inv, "--poll", "0.1", "--yes")
    assert rc == 0, err
    assert "deleted: load balancer kprov-hanlb" in out and "deleted: target group kprov-hanlb-api" in out
    assert nlb_state(elb, "kprov-hanlb") == {"load_balancers": 0, "target_groups": 0}
    rc, out, err = kprov("ec2", "destroy", "--inventory", inv, "--poll", "0.1", "--yes")
    assert (rc, out.strip()) == (0, "cluster hanlb: nothing to destroy")


@pytest.mark.parametrize(
    "section, expected",
    [
        ({}, False),  # one control plane: no balancer by default
        (HA, True),  # several: one by default
        ({**HA, "load_balancer": False}, False),  # the user brings their own (control_plane_endpoint)
        ({"load_balancer": True}, True),  # a single control plane behind an NLB (grow later)
    ],
    ids=["1-cp", "3-cp", "3-cp-opt-out", "1-cp-opt-in"],
)
def test_load_balancer_default(tmp_path, section, expected):
    assert config_of(ec2_inventory(tmp_path, "dflt", **section)).load_balancer is expected


def test_private_address_makes_an_internal_balancer_and_targets_follow_the_control_planes(ec2, elb, tmp_path):  # noqa: F811
    config = config_of(
        ec2_inventory(
            tmp_path,
            "priv",
            address="private",
            load_balancer=True,
            control_plane={"count": 1, "instance_type": "t3.medium"},
        )
    )
    first = provider.create(config, wait_ssh=False, poll=0.1)
    assert first.load_balancer and first.load_balancer.created and len(first.load_balancer.targets) == 1
    lb = elb.describe_load_balancers(Names=["kprov-priv"])["LoadBalancers"][0]
    assert lb["Scheme"] == "internal"
    grown = config_of(
        ec2_inventory(
            tmp_path,
            "priv",
            address="private",
            load_balancer=True,
            control_plane={"count": 3, "instance_type": "t3.medium"},
        )
    )
    again = provider.create(grown, wait_ssh=False, poll=0.1)
    assert again.load_balancer and not again.load_balancer.created and len(again.load_balancer.targets) == 3
    provider.destroy(grown, poll=0.1)


def test_a_same_named_balancer_of_someone_else_is_left_alone(kprov, ec2, elb, tmp_path):  # noqa: F811
    subnet = ec2.describe_subnets()["Subnets"][0]
    foreign = elb.create_load_balancer(
        Name="kprov-other", Type="network", Subnets=[subnet["SubnetId"]], Tags=[{"Key": "owner", "Value": "someone"}]
    )["LoadBalancers"][0]
    inv = ec2_inventory(tmp_path, "other", **HA)
    rc, out, err = kprov("ec2", "create", "--inventory", inv, "--no-wait-ssh", "--poll", "0.1")
    assert rc != 0 and "load balancer kprov-other exists but is not owned by cluster other (no kprov tags)" in err
    rc, out, err = kprov("ec2", "destroy", "--inventory", inv, "--poll", "0.1", "--yes")
    assert rc == 0 and "left alone (not tagged for cluster other): load balancer kprov-other" in out, err
    assert elb.describe_load_balancers(LoadBalancerArns=[foreign["LoadBalancerArn"]])["LoadBalancers"]


def test_missing_balancer_is_a_one_line_error(ec2, elb, tmp_path):  # noqa: F811
    inv = ec2_inventory(tmp_path, "nolb", **{**HA, "load_balancer": False})
    provider.create(config_of(inv), wait_ssh=False, poll=0.1)
    inv = ec2_inventory(tmp_path, "nolb", **HA)  # now asks for one that was never created
    with pytest.raises(CloudError) as err:
        load_inventory(inv)
    assert "has ec2.load_balancer but no API load balancer kprov-nolb" in err.value.message
    assert "kprov ec2 create" in err.value.hint


@pytest.mark.parametrize("cluster", ["a", "x" * 26, "y" * 27, "long-cluster-name-" + "z" * 22])
def test_names_fit_elb_limits(cluster):
    for suffix in ("", "api"):
        name = ec2_nlb.aws_name(cluster, suffix)
        assert len(name) <= 32 and name.startswith("kprov-") and not name.endswith("-")
        assert name == ec2_nlb.aws_name(cluster, suffix)  # stable
    assert ec2_nlb.aws_name(cluster) != ec2_nlb.aws_name(cluster, "api")
