"""EC2 as a host provider: create, list and destroy one cluster's instances, found by tags.

Every resource kprov creates carries `kprov:cluster=<cluster name>` and `kprov:managed-by=kprov`;
lookups and deletions go through those tags only, so two clusters in one account never touch
each other's resources, and nothing kprov did not create is ever modified or deleted.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.errors import CloudError, InputError, KprovError
from provisioner.providers import ec2_nlb
from provisioner.providers.ec2_aws import aws_errors, ec2_client, error_code
from provisioner.providers.ec2_config import (
    ROLE_CONTROL_PLANE,
    ROLE_WORKER,
    AmiSpec,
    Ec2Config,
    load_config,
    require_ssh_cidrs,
    validate_section,
)
from provisioner.providers.ec2_owner import MANAGED_BY, TAG_CLUSTER, TAG_MANAGED, not_owned, owns, tags_of
from provisioner.providers.ec2_rules import desired_rules, reconcile_ingress
from provisioner.providers.reachability import Endpoint, wait_for_ssh

__all__ = [
    "CreateReport",
    "DestroyReport",
    "Ec2Config",
    "Instance",
    "cluster_instances",
    "create",
    "destroy",
    "hosts_from_instances",
    "load_config",
    "resolve_hosts",
    "validate_section",
]

log = logging.getLogger(__name__)

TAG_ROLE = "kprov:role"

LIVE_STATES = ("pending", "running", "stopping", "stopped")
NOT_TERMINATED = LIVE_STATES + ("shutting-down",)


@dataclass(frozen=True)
class Instance:
    """One EC2 instance of the cluster, as kprov sees it."""

    instance_id: str
    name: str
    role: str | None
    state: str
    instance_type: str
    private_ip: str | None
    public_ip: str | None
    zone: str | None
    tags: Mapping[str, str]

    def address(self, kind: str) -> str | None:
        return self.public_ip if kind == "public" else self.private_ip


@dataclass(frozen=True)
class CreateReport:
    instances: tuple[Instance, ...]
    created: tuple[str, ...]
    started: tuple[str, ...]
    extra: tuple[str, ...]  # tagged instances beyond the configured counts (left alone)
    security_group_id: str
    security_group_created: bool
    rules_added: int
    rules_revoked: int
    key_name: str
    key_imported: bool
    image_id: str
    subnet_id: str
    load_balancer: ec2_nlb.LoadBalancer | None = None  # the API NLB (ec2.load_balancer)


@dataclass(frozen=True)
class DestroyReport:
    terminated: tuple[str, ...]
    security_groups: tuple[str, ...]
    key_pairs: tuple[str, ...]
    left_alone: tuple[str, ...]  # same-named resources without the cluster's tags
    load_balancers: tuple[str, ...] = ()  # the API NLB and its target group


# --------------------------------------------------------------------------- provider contract


def resolve_hosts(section: dict, inventory: dict) -> list[dict]:
    """Hosts of `provider: ec2`: the cluster's running instances, as raw `hosts:` entries."""
    config = load_config(section, inventory)
    found = cluster_instances(config)
    instances = [i for i in found if i.state == "running"]
    for inst in found:
        if inst.state != "running":
            log.warning("instance %s (%s) is %s: left out of the host list", inst.name, inst.instance_id, inst.state)
    if not instances:
        raise CloudError(
            f"no running EC2 instances tagged {TAG_CLUSTER}={config.cluster} in {config.region or 'the default region'}",
            hint=f"create them first: kprov ec2 create --inventory {inventory.get('__file__', 'FILE')}",
        )
    return hosts_from_instances(instances, config)


def resolve_endpoint(section: dict, inventory: dict) -> str | None:
    """`control_plane_endpoint` of an EC2 cluster with ec2.load_balancer: the NLB's DNS name and 6443."""
    config = load_config(section, inventory)
    if not config.load_balancer:
        return None
    lb = ec2_nlb.find(config)
    if lb is None:
        raise CloudError(
            f"cluster {config.cluster} has ec2.load_balancer but no API load balancer {ec2_nlb.aws_name(config.cluster)}",
            hint=f"create it: kprov ec2 create --inventory {inventory.get('__file__', 'FILE')}",
        )
    return lb.endpoint


def hosts_from_instances(instances: list[Instance] | tuple[Instance, ...], config: Ec2Config) -> list[dict]:
    """Raw host dicts (docs/inventory.md schema): address per ec2.address, node_ip = private IP."""
    hosts = []
    for inst in sorted(instances, key=_instance_order):
        if inst.role not in (ROLE_CONTROL_PLANE, ROLE_WORKER):
            log.warning("instance %s (%s) has no valid %s tag; skipped", inst.name, inst.instance_id, TAG_ROLE)
            continue
        address = inst.address(config.address)
        if not address:
            raise CloudError(
                f"instance {inst.name} ({inst.instance_id}) has no {config.address} IP address",
                hint="set ec2.address: private (when kprov runs inside the VPC) or use a subnet that assigns public IPs",
            )
        host: dict[str, Any] = {
            "name": inst.name,
            "address": address,
            "port": 22,
            "user": config.ssh_user,
            "become": config.ssh_user != "root",
            "node_ip": inst.private_ip,
            "roles": [inst.role],
            "labels": {},
        }
        if config.ssh_key is not None:
            host["ssh_key"] = str(config.ssh_key)
        hosts.append(host)
    return hosts


# --------------------------------------------------------------------------- listing


def cluster_instances(
    config: Ec2Config, *, client: Any = None, states: tuple[str, ...] = LIVE_STATES
) -> list[Instance]:
    """The cluster's instances (by tag) in the given states, control planes first."""
    ec2 = client or ec2_client(config)
    with aws_errors("list the cluster's instances"):
        return sorted(_find_instances(ec2, config.cluster, states), key=_instance_order)


def _find_instances(ec2: Any, cluster: str, states: tuple[str, ...]) -> list[Instance]:
    found = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    for page in pages:
        for reservation in page.get("Reservations", []):
            for raw in reservation.get("Instances", []):
                inst = _instance(raw)
                # Never trust the filter alone: act only on what really carries this cluster's tags.
                if owns(inst.tags, cluster):
                    found.append(inst)
    return found


def _instance(raw: dict[str, Any]) -> Instance:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    return Instance(
        instance_id=raw["InstanceId"],
        name=tags.get("Name", raw["InstanceId"]),
        role=tags.get(TAG_ROLE),
        state=raw.get("State", {}).get("Name", "unknown"),
        instance_type=raw.get("InstanceType", ""),
        private_ip=raw.get("PrivateIpAddress"),
        public_ip=raw.get("PublicIpAddress"),
        zone=raw.get("Placement", {}).get("AvailabilityZone"),
        tags=tags,
    )


def _instance_order(inst: Instance) -> tuple[int, str, int]:
    match = re.search(r"(\d+)$", inst.name)
    return (
        0 if inst.role == ROLE_CONTROL_PLANE else 1,
        inst.name.rstrip("0123456789"),
        int(match.group(1)) if match else 0,
    )


# --------------------------------------------------------------------------- create


def create(
    config: Ec2Config,
    *,
    wait_ssh: bool = True,
    timeout: float = 600.0,
    poll: float = 5.0,
    client: Any = None,
) -> CreateReport:
    """Create whatever of the cluster is missing (idempotent); return what exists afterwards."""
    require_ssh_cidrs(config)
    ec2 = client or ec2_client(config)
    done: list[str] = []  # what this call created, for the error message if a later step fails
    try:
        return _create(ec2, config, wait_ssh=wait_ssh, timeout=timeout, poll=poll, done=done)
    except KprovError as exc:
        if done:
            exc.detail = "\n".join(
                filter(
                    None,
                    [
                        exc.detail,
                        f"created before the failure: {', '.join(done)} (all tagged {TAG_CLUSTER}={config.cluster})",
                        "run `kprov ec2 create` again to finish, or `kprov ec2 destroy` to remove them",
                    ],
                )
            )
        raise


def _create(
    ec2: Any, config: Ec2Config, *, wait_ssh: bool, timeout: float, poll: float, done: list[str]
) -> CreateReport:
    with aws_errors("find the VPC and subnet"):
        vpc_id, subnet = _network(ec2, config)
    with aws_errors("resolve the AMI"):
        image = _resolve_image(ec2, config.ami)
    api_cidrs: tuple[str, ...] = ()
    if config.load_balancer:
        with aws_errors("find the VPC's address range"):
            api_cidrs = (ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"],)
    with aws_errors("set up the security group"):
        group_id, group_created, changes = _ensure_security_group(ec2, config, vpc_id, done, api_cidrs)
    with aws_errors("set up the key pair"):
        key_imported = _ensure_key_pair(ec2, config)
    if key_imported:
        done.append(f"key pair {config.key_name}")
    with aws_errors("list the cluster's instances"):
        existing = _find_instances(ec2, config.cluster, LIVE_STATES)

    desired = config.desired_names()
    by_name: dict[str, Instance] = {}
    extra = []
    for inst in sorted(existing, key=_instance_order):
        if inst.name in desired and inst.name not in by_name:
            by_name[inst.name] = inst
        else:
            extra.append(inst.name)
    if extra:
        log.warning("instances beyond the configured counts are left alone: %s", ", ".join(extra))

    started = [inst for inst in by_name.values() if inst.state in ("stopped", "stopping")]
    if started:
        with aws_errors("start stopped instances"):
            ids = [inst.instance_id for inst in started]
            ec2.get_waiter("instance_stopped").wait(InstanceIds=ids, WaiterConfig=_waiter(timeout, poll))
            ec2.start_instances(InstanceIds=ids)

    created = []
    for name, group in desired.items():
        if name in by_name:
            continue
        with aws_errors(f"launch {name}"):
            instance_id = _launch(ec2, config, name, group.role, group.instance_type, image, subnet, group_id)
        created.append(name)
        done.append(f"{name} ({instance_id})")

    with aws_errors("wait for the instances to run"):
        ids = [inst.instance_id for inst in _find_instances(ec2, config.cluster, LIVE_STATES) if inst.name in desired]
        if ids:
            ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=_waiter(timeout, poll))
        instances = tuple(
            sorted(
                (i for i in _find_instances(ec2, config.cluster, LIVE_STATES) if i.instance_id in ids),
                key=_instance_order,
            )
        )
    load_balancer = None
    if config.load_balancer:
        cp_ips = [i.private_ip for i in instances if i.role == ROLE_CONTROL_PLANE and i.private_ip]
        load_balancer = ec2_nlb.ensure(config, vpc_id=vpc_id, subnet_id=subnet["SubnetId"], control_plane_ips=cp_ips)
        if load_balancer.created:
            done.append(f"load balancer {load_balancer.name}")
    if wait_ssh:
        endpoints = [Endpoint(i.name, i.address(config.address) or "") for i in instances if i.address(config.address)]
        wait_for_ssh(endpoints, timeout=timeout, poll=poll)
    return CreateReport(
        instances=instances,
        created=tuple(created),
        started=tuple(inst.name for inst in started),
        extra=tuple(extra),
        security_group_id=group_id,
        security_group_created=group_created,
        rules_added=len(changes.added),
        rules_revoked=len(changes.revoked),
        key_name=config.key_name,
        key_imported=key_imported,
        image_id=image["ImageId"],
        subnet_id=subnet["SubnetId"],
        load_balancer=load_balancer,
    )


def _waiter(timeout: float, poll: float) -> dict[str, float]:
    delay = max(0.05, poll)
    return {"Delay": delay, "MaxAttempts": max(1, math.ceil(timeout / delay))}


def _tags(config: Ec2Config, **extra: str) -> list[dict[str, str]]:
    tags = {**config.tags, TAG_CLUSTER: config.cluster, TAG_MANAGED: MANAGED_BY, **extra}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _network(ec2: Any, config: Ec2Config) -> tuple[str, dict[str, Any]]:
    """(VPC id, subnet) to launch into: the configured ones, or the default VPC's first subnet."""
    if config.subnet_id:
        subnet = ec2.describe_subnets(SubnetIds=[config.subnet_id])["Subnets"][0]
        if config.vpc_id and subnet["VpcId"] != config.vpc_id:
            raise InputError(
                f"ec2.subnet_id: {config.subnet_id} is in {subnet['VpcId']}, not in ec2.vpc_id {config.vpc_id}",
                hint="drop ec2.vpc_id or pick a subnet of that VPC",
            )
        return subnet["VpcId"], subnet
    if config.vpc_id:
        vpc_id = config.vpc_id
        filters = [{"Name": "vpc-id", "Values": [vpc_id]}]
    else:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise CloudError(
                f"no default VPC in {config.region or 'this region'}",
                hint="set ec2.subnet_id (or ec2.vpc_id) to a subnet with a route to the internet",
            )
        vpc_id = vpcs[0]["VpcId"]
        filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "default-for-az", "Values": ["true"]}]
    subnets = ec2.describe_subnets(Filters=filters)["Subnets"]
    if not subnets:
        raise CloudError(f"no subnet found in {vpc_id}", hint="set ec2.subnet_id")
    # Public-IP subnets first, then by zone, so the choice is stable between runs.
    subnets.sort(key=lambda s: (not s.get("MapPublicIpOnLaunch", False), s.get("AvailabilityZone", ""), s["SubnetId"]))
    return vpc_id, subnets[0]


def _resolve_image(ec2: Any, ami: AmiSpec) -> dict[str, Any]:
    """The image for an explicit id, or the newest available image matching owner + name."""
    if ami.image_id:
        images = ec2.describe_images(ImageIds=[ami.image_id])["Images"]
        if not images:
            raise CloudError(f"AMI {ami.image_id} not found", hint="check ec2.ami and ec2.region")
        return images[0]
    images = ec2.describe_images(
        Owners=[ami.owner],
        Filters=[
            {"Name": "name", "Values": [ami.name]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": [ami.architecture]},
        ],
    )["Images"]
    if not images:
        raise CloudError(
            f"no {ami.architecture} AMI named {ami.name!r} owned by {ami.owner} in this region",
            hint="check ec2.ami {owner, name} (name accepts * wildcards) and ec2.region",
        )
    newest = max(images, key=lambda img: (img.get("CreationDate", ""), img.get("Name", "")))
    log.info("AMI %s resolved to %s (%s)", ami.name, newest["ImageId"], newest.get("Name"))
    return newest


def _ensure_security_group(
    ec2: Any, config: Ec2Config, vpc_id: str, done: list[str], api_cidrs: tuple[str, ...] = ()
) -> tuple[str, bool, Any]:
    name = config.security_group_name
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    created = False
    if groups:
        group = groups[0]
        if not owns(tags_of(group), config.cluster):  # never adopt (and revoke the rules of) another's group
            raise not_owned("security group", f"{name} ({group['GroupId']})", tags_of(group), config.cluster)
        group_id, permissions = group["GroupId"], group.get("IpPermissions", [])
    else:
        group_id = ec2.create_security_group(
            GroupName=name,
            Description=f"kprov cluster {config.cluster} (kubeadm ports)",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(config, Name=name)}],
        )["GroupId"]
        created, permissions = True, []
        done.append(f"security group {group_id}")
    changes = reconcile_ingress(
        ec2, group_id, permissions, desired_rules(config.ssh_cidrs, config.cni, config.nodeport_cidrs, api_cidrs)
    )
    return group_id, created, changes


def _ensure_key_pair(ec2: Any, config: Ec2Config) -> bool:
    """Use the named key pair if it exists, else import ec2.public_key; True if imported now."""
    try:
        ec2.describe_key_pairs(KeyNames=[config.key_name])
        return False
    except Exception as exc:
        if error_code(exc) != "InvalidKeyPair.NotFound":
            raise
    if config.public_key is None:
        raise CloudError(
            f"key pair {config.key_name!r} does not exist in this region and ec2.public_key is not set",
            hint="set ec2.public_key: ~/.ssh/id_ed25519.pub so kprov imports it",
        )
    try:
        material = config.public_key.read_bytes()
    except OSError as exc:
        raise InputError(
            f"ec2.public_key: cannot read {config.public_key}: {exc.strerror}",
            hint="create one with ssh-keygen -t ed25519, or point ec2.public_key at an existing .pub file",
        ) from None
    ec2.import_key_pair(
        KeyName=config.key_name,
        PublicKeyMaterial=material,
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": _tags(config)}],
    )
    log.info("imported key pair %s from %s", config.key_name, config.public_key)
    return True


def _launch(
    ec2: Any,
    config: Ec2Config,
    name: str,
    role: str,
    instance_type: str,
    image: dict[str, Any],
    subnet: dict[str, Any],
    group_id: str,
) -> str:
    tags = _tags(config, Name=name, **{TAG_ROLE: role})
    params: dict[str, Any] = {
        "ImageId": image["ImageId"],
        "InstanceType": instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": config.key_name,
        "BlockDeviceMappings": [
            {
                "DeviceName": image.get("RootDeviceName", "/dev/xvda"),
                "Ebs": {"VolumeSize": config.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
            }
        ],
        # Tags are applied atomically with the launch, so no untagged instance can ever leak.
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
    }
    if config.address == "public" and not subnet.get("MapPublicIpOnLaunch", False):
        params["NetworkInterfaces"] = [
            {
                "DeviceIndex": 0,
                "SubnetId": subnet["SubnetId"],
                "Groups": [group_id],
                "AssociatePublicIpAddress": True,
            }
        ]
    else:
        params["SubnetId"] = subnet["SubnetId"]
        params["SecurityGroupIds"] = [group_id]
    instance_id = ec2.run_instances(**params)["Instances"][0]["InstanceId"]
    log.info("launched %s (%s, %s)", name, instance_id, instance_type)
    return instance_id


# --------------------------------------------------------------------------- destroy


def destroy(config: Ec2Config, *, timeout: float = 600.0, poll: float = 5.0, client: Any = None) -> DestroyReport:
    """Terminate the cluster's instances, then delete its security group and imported key pair."""
    ec2 = client or ec2_client(config)
    left_alone: list[str] = []
    # the API load balancer first: it is looked up by name and tags whether or not ec2.load_balancer is set now
    load_balancers = ec2_nlb.remove(config, left_alone, timeout=timeout, poll=poll)
    with aws_errors("list the cluster's instances"):
        instances = _find_instances(ec2, config.cluster, NOT_TERMINATED)
    if instances:
        with aws_errors("terminate the instances"):
            ids = [inst.instance_id for inst in instances]
            ec2.terminate_instances(InstanceIds=ids)
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=_waiter(timeout, poll))
    with aws_errors("delete the security group"):
        groups = _tagged_groups(ec2, config, left_alone)
        deadline = time.monotonic() + timeout
        for group in groups:
            _delete_group(ec2, group["GroupId"], deadline, poll)
    with aws_errors("delete the key pair"):
        keys = _tagged_key_pairs(ec2, config, left_alone)
        for key in keys:
            ec2.delete_key_pair(KeyName=key["KeyName"])
    for what in left_alone:
        log.warning("left alone (not tagged %s=%s): %s", TAG_CLUSTER, config.cluster, what)
    return DestroyReport(
        terminated=tuple(f"{inst.name} ({inst.instance_id})" for inst in sorted(instances, key=_instance_order)),
        security_groups=tuple(g["GroupId"] for g in groups),
        key_pairs=tuple(k["KeyName"] for k in keys),
        left_alone=tuple(left_alone),
        load_balancers=load_balancers,
    )


def _is_ours(resource: dict[str, Any], cluster: str) -> bool:
    return owns(tags_of(resource), cluster)


def _tagged_groups(ec2: Any, config: Ec2Config, left_alone: list[str]) -> list[dict[str, Any]]:
    tagged = ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [config.cluster]}])
    named = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [config.security_group_name]}])
    ours = [g for g in tagged["SecurityGroups"] if _is_ours(g, config.cluster)]
    ours_ids = {g["GroupId"] for g in ours}
    left_alone.extend(
        f"security group {g['GroupName']} ({g['GroupId']})"
        for g in named["SecurityGroups"]
        if g["GroupId"] not in ours_ids
    )
    return ours


def _tagged_key_pairs(ec2: Any, config: Ec2Config, left_alone: list[str]) -> list[dict[str, Any]]:
    keys = ec2.describe_key_pairs(Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [config.cluster]}])["KeyPairs"]
    ours = [k for k in keys if _is_ours(k, config.cluster)]
    if not any(k["KeyName"] == config.key_name for k in ours):
        try:
            ec2.describe_key_pairs(KeyNames=[config.key_name])
            left_alone.append(f"key pair {config.key_name}")
        except Exception as exc:
            if error_code(exc) != "InvalidKeyPair.NotFound":
                raise
    return ours


def _delete_group(ec2: Any, group_id: str, deadline: float, poll: float) -> None:
    # ENIs of terminated instances are released asynchronously: retry DependencyViolation a while.
    while True:
        try:
            ec2.delete_security_group(GroupId=group_id)
            return
        except Exception as exc:
            code = error_code(exc)
            if code == "InvalidGroup.NotFound":
                return
            if code != "DependencyViolation" or time.monotonic() >= deadline:
                raise
            log.info("security group %s still in use; retrying", group_id)
            time.sleep(poll)


class Ec2Provider:
    """`provider: ec2` (providers/base.py): the cluster's running instances, found by tags."""

    name = "ec2"

    def validate_section(self, section: Mapping[str, Any], where: str, check: Any) -> None:
        validate_section(dict(section), where, check)

    def resolve_hosts(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
        return resolve_hosts(dict(section), dict(inventory))

    def connection_defaults(self, section: Mapping[str, Any]) -> dict[str, Any]:
        return {}  # each host entry carries its user and key

    def resolve_endpoint(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> str | None:
        return resolve_endpoint(dict(section), dict(inventory))


PROVIDER = Ec2Provider()
