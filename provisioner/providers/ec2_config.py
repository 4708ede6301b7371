"""The `ec2:` inventory section: validation and the typed configuration it becomes."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import InputError, InventoryError
from provisioner.inventory.check import Check
from provisioner.providers._common import (
    SectionChecker,
    as_list,
    cluster_name,
    is_cidr,
    resolve_path,
)

HINT = "see docs/ec2.md for the ec2: section"

#: Shorthand AMI names -> (owner account, name filter, default SSH user).
AMI_ALIASES: dict[str, tuple[str, str, str]] = {
    "debian-12": ("136693071363", "debian-12-amd64-*", "admin"),
    "debian-12-arm64": ("136693071363", "debian-12-arm64-*", "admin"),
    "ubuntu-24.04": ("099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", "ubuntu"),
    "ubuntu-24.04-arm64": ("099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*", "ubuntu"),
}
DEFAULT_AMI = "debian-12"
AMI_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
VPC_RE = re.compile(r"^vpc-[0-9a-f]{8,17}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
KEY_NAME_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
SSH_CIDR_ENV = "KPROV_EC2_SSH_CIDR"
SAME_AS_SSH = "ssh_cidr"  # nodeport_cidr: ssh_cidr -> NodePorts open to the same sources as SSH

ROLE_CONTROL_PLANE = "control_plane"
ROLE_WORKER = "worker"
#: inventory key, role tag value, host name infix, default count, default instance type
ROLE_GROUPS = (
    ("control_plane", ROLE_CONTROL_PLANE, "cp", 1, "t3.medium"),
    ("workers", ROLE_WORKER, "worker", 1, "t3.small"),
)

SECTION_KEYS = (
    "region",
    "profile",
    "ssh_cidr",
    "allow_world_ssh",
    "nodeport_cidr",
    "key_name",
    "public_key",
    "ssh_key",
    "ssh_user",
    "ami",
    "control_plane",
    "workers",
    "root_volume_gb",
    "subnet_id",
    "vpc_id",
    "address",
    "tags",
    "load_balancer",
)


@dataclass(frozen=True)
class AmiSpec:
    """An explicit AMI id, or an owner + name filter resolved to the newest available image."""

    image_id: str | None = None
    owner: str | None = None
    name: str | None = None
    architecture: str = "x86_64"


@dataclass(frozen=True)
class RoleGroup:
    role: str  # "control_plane" | "worker" (the kprov:role tag)
    infix: str  # host name part: <cluster>-<infix>-<i>
    count: int
    instance_type: str

    def names(self, cluster: str) -> list[str]:
        return [f"{cluster}-{self.infix}-{i}" for i in range(1, self.count + 1)]


@dataclass(frozen=True)
class Ec2Config:
    """Everything kprov needs to create, list and destroy one cluster's EC2 resources."""

    cluster: str
    region: str | None
    profile: str | None
    ssh_cidrs: tuple[str, ...]
    nodeport_cidrs: tuple[str, ...]
    key_name: str
    public_key: Path | None
    ssh_key: Path | None
    ssh_user: str
    ami: AmiSpec
    groups: tuple[RoleGroup, ...]
    root_volume_gb: int
    subnet_id: str | None
    vpc_id: str | None
    address: str  # "public" | "private"
    cni: str
    tags: Mapping[str, str] = field(default_factory=dict)
    #: ssh_cidr may be a /0 (SSH and the API server open to the whole internet): ec2.allow_world_ssh / --allow-world-ssh
    allow_world_ssh: bool = False
    #: a network load balancer on 6443 in front of the control planes (providers/ec2_nlb.py, docs/ha.md)
    load_balancer: bool = False

    @property
    def security_group_name(self) -> str:
        return f"kprov-{self.cluster}"

    def desired_names(self) -> dict[str, RoleGroup]:
        return {name: group for group in self.groups for name in group.names(self.cluster)}


def validate_section(section: dict, where: str = "ec2", located: Check | None = None) -> None:
    """Check the raw `ec2:` mapping; raise InventoryError naming the first bad key path (file:line with `located`)."""
    check = SectionChecker(section, where, SECTION_KEYS, HINT, located)
    check.string("region", pattern=REGION_RE)
    check.string("profile")
    check.cidrs("ssh_cidr")
    if section.get("nodeport_cidr") != SAME_AS_SSH:
        check.cidrs("nodeport_cidr")
    check.string("key_name", pattern=KEY_NAME_RE)
    check.string("public_key")
    check.string("ssh_key")
    check.string("ssh_user", pattern=re.compile(r"^[a-z_][a-z0-9_-]*$"))
    check.string("subnet_id", pattern=SUBNET_RE)
    check.string("vpc_id", pattern=VPC_RE)
    check.string("address", choices=("public", "private"))
    check.integer("root_volume_gb", minimum=8, maximum=16384)
    check.string_map("tags")
    if section.get("allow_world_ssh") is not None and not isinstance(section["allow_world_ssh"], bool):
        check.fail("allow_world_ssh", f"expected true or false, got {section['allow_world_ssh']!r}")
    if section.get("load_balancer") is not None and not isinstance(section["load_balancer"], bool):
        check.fail("load_balancer", f"expected true or false, got {section['load_balancer']!r}")
    for key in section.get("tags") or {}:
        if key.startswith(("aws:", "kprov:")) or key == "Name":
            check.fail(f"tags.{key}", "reserved tag key (aws:*, kprov:* and Name are set by kprov)")
    _validate_ami(check, section.get("ami"))
    for key, *_ in ROLE_GROUPS:
        _validate_group(check, key, section.get(key))


def _validate_ami(check: SectionChecker, ami: Any) -> None:
    if ami is None:
        return
    if isinstance(ami, str):
        if ami not in AMI_ALIASES and not AMI_ID_RE.match(ami):
            check.fail(
                "ami", f"expected an AMI id (ami-...), one of {', '.join(AMI_ALIASES)}, or {{owner, name}}; got {ami!r}"
            )
        return
    if not isinstance(ami, Mapping):
        check.fail("ami", "expected an AMI id or a mapping {owner, name}")
    unknown = sorted(set(ami) - {"owner", "name", "architecture"})
    if unknown:
        check.fail(f"ami.{unknown[0]}", "unknown key (known: architecture, name, owner)")
    for key in ("owner", "name"):
        if not isinstance(ami.get(key), str) or not ami.get(key):
            check.fail(f"ami.{key}", "expected a non-empty string")
    if ami.get("architecture", "x86_64") not in ("x86_64", "arm64"):
        check.fail("ami.architecture", "expected x86_64 or arm64")


def _validate_group(check: SectionChecker, key: str, group: Any) -> None:
    if group is None:
        return
    if not isinstance(group, Mapping):
        check.fail(key, "expected a mapping {count, instance_type}")
    unknown = sorted(set(group) - {"count", "instance_type"})
    if unknown:
        check.fail(f"{key}.{unknown[0]}", "unknown key (known: count, instance_type)")
    minimum = 1 if key == "control_plane" else 0
    check.integer("count", minimum=minimum, maximum=100, section=group, path=f"{key}.count")
    itype = group.get("instance_type")
    if itype is not None and (not isinstance(itype, str) or not INSTANCE_TYPE_RE.match(itype)):
        check.fail(f"{key}.instance_type", f"expected an instance type such as t3.medium, got {itype!r}")


def load_config(
    section: dict, inventory: dict, *, ssh_cidrs: tuple[str, ...] = (), allow_world_ssh: bool = False
) -> Ec2Config:
    """Validate the `ec2:` section and turn it into an Ec2Config (defaults filled in).

    `ssh_cidrs` (from the command line) overrides `ec2.ssh_cidr`; `allow_world_ssh` (--allow-world-ssh)
    does what `ec2.allow_world_ssh: true` does.
    """
    validate_section(section, "ec2")
    name = cluster_name(inventory)
    ami, default_user = _ami_spec(section.get("ami", DEFAULT_AMI))
    public_key = resolve_path(section["public_key"], inventory) if section.get("public_key") else None
    if section.get("ssh_key"):
        ssh_key: Path | None = resolve_path(section["ssh_key"], inventory)
    elif public_key is not None and public_key.suffix == ".pub":
        ssh_key = public_key.with_suffix("")
    else:
        ssh_key = None
    cni = ((inventory.get("cluster") or {}).get("cni")) or "flannel"
    groups = []
    for key, role, infix, count, itype in ROLE_GROUPS:
        raw = section.get(key) or {}
        groups.append(RoleGroup(role, infix, raw.get("count", count), raw.get("instance_type", itype)))
    cidr_override = tuple(ssh_cidrs) or tuple(c for c in os.environ.get(SSH_CIDR_ENV, "").split(",") if c)
    for cidr in cidr_override:
        if not is_cidr(cidr):
            raise InputError(
                f"--ssh-cidr/{SSH_CIDR_ENV}: expected an IPv4 CIDR, got {cidr!r}", hint="e.g. 203.0.113.7/32"
            )
    ssh = cidr_override or tuple(as_list(section.get("ssh_cidr")))
    nodeport = section.get("nodeport_cidr")
    return Ec2Config(
        cluster=name,
        region=section.get("region"),
        profile=section.get("profile"),
        ssh_cidrs=ssh,
        nodeport_cidrs=ssh if nodeport == SAME_AS_SSH else tuple(as_list(nodeport)),
        key_name=section.get("key_name") or f"kprov-{name}",
        public_key=public_key,
        ssh_key=ssh_key,
        ssh_user=section.get("ssh_user") or default_user,
        ami=ami,
        groups=tuple(groups),
        root_volume_gb=section.get("root_volume_gb", 20),
        subnet_id=section.get("subnet_id"),
        vpc_id=section.get("vpc_id"),
        address=section.get("address", "public"),
        cni=str(cni),
        tags={str(k): str(v) for k, v in (section.get("tags") or {}).items()},
        allow_world_ssh=allow_world_ssh or section.get("allow_world_ssh") is True,
        # by default only an HA cluster gets one: several control planes need a shared endpoint
        load_balancer=section["load_balancer"] if section.get("load_balancer") is not None else groups[0].count > 1,
    )


def _ami_spec(ami: Any) -> tuple[AmiSpec, str]:
    if isinstance(ami, str) and ami in AMI_ALIASES:
        owner, name, user = AMI_ALIASES[ami]
        arch = "arm64" if "arm64" in ami else "x86_64"
        return AmiSpec(owner=owner, name=name, architecture=arch), user
    if isinstance(ami, str):
        return AmiSpec(image_id=ami), "admin"
    user = "ubuntu" if "ubuntu" in ami["name"] else "admin"
    return AmiSpec(owner=str(ami["owner"]), name=ami["name"], architecture=ami.get("architecture", "x86_64")), user


def require_ssh_cidrs(config: Ec2Config) -> None:
    """`ec2 create` refuses to guess who may reach port 22, and to open it to everyone unless told so."""
    if not config.ssh_cidrs:
        raise InventoryError(
            "ec2.ssh_cidr: required to create the security group (who may reach SSH and the API server)",
            hint=f"set ec2.ssh_cidr: <your public IP>/32 in the inventory, or pass --ssh-cidr / set {SSH_CIDR_ENV}",
        )
    world = [c for c in config.ssh_cidrs if is_world(c)]
    if world and not config.allow_world_ssh:
        raise InventoryError(
            f"ec2.ssh_cidr: {world[0]} would open SSH (22) and the API server (6443) to the whole internet",
            hint="give your own address, e.g. 203.0.113.7/32; to open them to everyone on purpose, "
            "pass --allow-world-ssh or set ec2.allow_world_ssh: true",
        )


def is_world(cidr: str) -> bool:
    """0.0.0.0/0 or ::/0 (any network with a /0 prefix)."""
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False
