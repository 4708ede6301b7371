"""The API endpoint of an EC2 cluster: a network load balancer on 6443 in front of the control planes.

`kprov ec2 create` makes (idempotently) a TCP listener on 6443 forwarding to a target group of the control planes'
private IPs, health-checked on `https://<ip>:6443/healthz`; `kprov ec2 destroy` removes both. Targets are IPs,
not instances: with instance targets the NLB keeps the client's address and a control plane that reaches the API
through the NLB (kubelet, kube-proxy) and lands on itself is dropped (AWS's hairpin limitation).

Like every other resource they carry `kprov:cluster` and `kprov:managed-by` and are found by name *and* tags:
a same-named load balancer without the cluster's tags is never modified or deleted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from provisioner.errors import CloudError
from provisioner.providers.ec2_aws import aws_errors, error_code
from provisioner.providers.ec2_config import Ec2Config
from provisioner.providers.ec2_owner import MANAGED_BY, TAG_CLUSTER, TAG_MANAGED, not_owned, owns, tag_map

log = logging.getLogger(__name__)

API_PORT = 6443


@dataclass(frozen=True)
class LoadBalancer:
    name: str
    arn: str
    dns_name: str
    target_group_arn: str
    targets: tuple[str, ...]  # private IPs of the control planes
    created: bool

    @property
    def endpoint(self) -> str:
        return f"{self.dns_name}:{API_PORT}"


def aws_name(cluster: str, suffix: str = "") -> str:
    """An ELB name (at most 32 of [A-Za-z0-9-]) that is stable for the cluster: kprov-<cluster>[-<suffix>]."""
    name = f"kprov-{cluster}" + (f"-{suffix}" if suffix else "")
    if len(name) <= 32:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = 32 - len("kprov-") - len(digest) - 1 - (len(suffix) + 1 if suffix else 0)
    return f"kprov-{cluster[:keep].rstrip('-')}-{digest}" + (f"-{suffix}" if suffix else "")


def elbv2_client(config: Ec2Config) -> Any:
    """An elbv2 client from the standard credential chain (same region/profile as EC2)."""
    import boto3

    from provisioner.providers.ec2_aws import _client_config

    with aws_errors("connect to Elastic Load Balancing"):
        session = boto3.session.Session(profile_name=config.profile, region_name=config.region)
        if session.region_name is None:
            raise CloudError("no AWS region configured", hint="set ec2.region in the inventory, or AWS_REGION")
        return session.client("elbv2", config=_client_config())


def _tags(config: Ec2Config, name: str) -> list[dict[str, str]]:
    tags = {**config.tags, TAG_CLUSTER: config.cluster, TAG_MANAGED: MANAGED_BY, "Name": name}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _tags_of(elb: Any, arn: str) -> dict[str, str]:
    described = elb.describe_tags(ResourceArns=[arn])["TagDescriptions"]
    return tag_map(t for d in described for t in d.get("Tags", []))


def _is_ours(elb: Any, arn: str, cluster: str) -> bool:
    return owns(_tags_of(elb, arn), cluster)  # the rule of every EC2 resource (ec2_owner.py)


def _find_lb(elb: Any, name: str) -> dict[str, Any] | None:
    try:
        found = elb.describe_load_balancers(Names=[name])["LoadBalancers"]
    except Exception as exc:
        if error_code(exc) == "LoadBalancerNotFound":
            return None
        raise
    return found[0] if found else None


def _find_tg(elb: Any, name: str) -> dict[str, Any] | None:
    try:
        found = elb.describe_target_groups(Names=[name])["TargetGroups"]
    except Exception as exc:
        if error_code(exc) == "TargetGroupNotFound":
            return None
        raise
    return found[0] if found else None


def _not_ours(elb: Any, arn: str, what: str, name: str, cluster: str) -> CloudError:
    return not_owned(what, name, _tags_of(elb, arn), cluster)


def ensure(
    config: Ec2Config, *, vpc_id: str, subnet_id: str, control_plane_ips: Sequence[str], client: Any = None
) -> LoadBalancer:
    """Create what is missing of the NLB, its target group and listener; targets = exactly the control planes."""
    elb = client or elbv2_client(config)
    lb_name, tg_name = aws_name(config.cluster), aws_name(config.cluster, "api")
    with aws_errors("set up the API target group"):
        tg = _find_tg(elb, tg_name)
        if tg is None:
            tg = elb.create_target_group(
                Name=tg_name,
                Protocol="TCP",
                Port=API_PORT,
                VpcId=vpc_id,
                TargetType="ip",
                HealthCheckProtocol="HTTPS",
                HealthCheckPort=str(API_PORT),
                HealthCheckPath="/healthz",
                HealthCheckIntervalSeconds=10,
                HealthyThresholdCount=2,
                UnhealthyThresholdCount=2,
                Tags=_tags(config, tg_name),
            )["TargetGroups"][0]
        elif not _is_ours(elb, tg["TargetGroupArn"], config.cluster):
            raise _not_ours(elb, tg["TargetGroupArn"], "target group", tg_name, config.cluster)
        tg_arn = tg["TargetGroupArn"]
        _reconcile_targets(elb, tg_arn, control_plane_ips)
    with aws_errors("set up the API load balancer"):
        lb = _find_lb(elb, lb_name)
        created = lb is None
        if lb is None:
            lb = elb.create_load_balancer(
                Name=lb_name,
                Type="network",
                Subnets=[subnet_id],
                Scheme="internet-facing" if config.address == "public" else "internal",
                Tags=_tags(config, lb_name),
            )["LoadBalancers"][0]
            log.info("created network load balancer %s (%s)", lb_name, lb["DNSName"])
        elif not _is_ours(elb, lb["LoadBalancerArn"], config.cluster):
            raise _not_ours(elb, lb["LoadBalancerArn"], "load balancer", lb_name, config.cluster)
        listeners = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        if not any(li.get("Port") == API_PORT for li in listeners):
            elb.create_listener(
                LoadBalancerArn=lb["LoadBalancerArn"],
                Protocol="TCP",
                Port=API_PORT,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
            )
    return LoadBalancer(
        lb_name, lb["LoadBalancerArn"], lb["DNSName"], tg_arn, tuple(sorted(control_plane_ips)), created
    )


def _reconcile_targets(elb: Any, tg_arn: str, ips: Sequence[str]) -> None:
    health = elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    registered = {d["Target"]["Id"] for d in health}
    wanted = set(ips)
    if wanted - registered:
        elb.register_targets(
            TargetGroupArn=tg_arn, Targets=[{"Id": ip, "Port": API_PORT} for ip in sorted(wanted - registered)]
        )
    if registered - wanted:
        elb.deregister_targets(
            TargetGroupArn=tg_arn, Targets=[{"Id": ip, "Port": API_PORT} for ip in sorted(registered - wanted)]
        )


def find(config: Ec2Config, client: Any = None) -> LoadBalancer | None:
    """The cluster's NLB if it exists (and is tagged as the cluster's), else None."""
    elb = client or elbv2_client(config)
    lb_name, tg_name = aws_name(config.cluster), aws_name(config.cluster, "api")
    with aws_errors("look up the API load balancer"):
        lb = _find_lb(elb, lb_name)
        if lb is None or not _is_ours(elb, lb["LoadBalancerArn"], config.cluster):
            return None
        tg = _find_tg(elb, tg_name)
        targets: tuple[str, ...] = ()
        if tg is not None:
            health = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
            targets = tuple(sorted(d["Target"]["Id"] for d in health))
        return LoadBalancer(
            lb_name, lb["LoadBalancerArn"], lb["DNSName"], tg["TargetGroupArn"] if tg else "", targets, False
        )


def remove(
    config: Ec2Config, left_alone: list[str], *, timeout: float = 600.0, poll: float = 5.0, client: Any = None
) -> tuple[str, ...]:
    """Delete the cluster's NLB (its listeners go with it) and then its target group; returns what was deleted."""
    elb = client or elbv2_client(config)
    lb_name, tg_name = aws_name(config.cluster), aws_name(config.cluster, "api")
    deleted: list[str] = []
    with aws_errors("delete the API load balancer"):
        lb = _find_lb(elb, lb_name)
        if lb is not None:
            if _is_ours(elb, lb["LoadBalancerArn"], config.cluster):
                elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
                deleted.append(f"load balancer {lb_name}")
            else:
                left_alone.append(f"load balancer {lb_name}")
    with aws_errors("delete the API target group"):
        tg = _find_tg(elb, tg_name)
        if tg is not None:
            if _is_ours(elb, tg["TargetGroupArn"], config.cluster):
                _delete_target_group(elb, tg["TargetGroupArn"], time.monotonic() + timeout, poll)
                deleted.append(f"target group {tg_name}")
            else:
                left_alone.append(f"target group {tg_name}")
    return tuple(deleted)


def _delete_target_group(elb: Any, arn: str, deadline: float, poll: float) -> None:
    # a target group stays "in use" until the deleted load balancer's listener is gone: retry a while
    while True:
        try:
            elb.delete_target_group(TargetGroupArn=arn)
            return
        except Exception as exc:
            code = error_code(exc)
            if code == "TargetGroupNotFound":
                return
            if code != "ResourceInUse" or time.monotonic() >= deadline:
                raise
            time.sleep(poll)
