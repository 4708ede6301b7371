"""The security group a kubeadm cluster needs, as data, and its reconciliation against AWS."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SELF = "self"  # source placeholder: the cluster's own security group


@dataclass(frozen=True, order=True)
class Rule:
    """One ingress permission: protocol, port range and one source (a CIDR or the group itself)."""

    protocol: str  # "tcp" | "udp" | "icmp"
    from_port: int
    to_port: int
    source: str  # CIDR, or SELF
    why: str = ""

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.protocol, self.from_port, self.to_port, self.source)


# Within the cluster: (protocol, from, to, why). 6443 is also opened to the operator below.
_CLUSTER_PORTS = (
    ("tcp", 6443, 6443, "kube-apiserver"),
    ("tcp", 2379, 2380, "etcd client and peer"),
    ("tcp", 10250, 10250, "kubelet API"),
    ("tcp", 10257, 10257, "kube-controller-manager"),
    ("tcp", 10259, 10259, "kube-scheduler"),
    ("tcp", 30000, 32767, "NodePort services"),
    ("icmp", -1, -1, "ICMP (path MTU discovery, ping)"),
)
_CNI_PORTS = {
    "flannel": (("udp", 8472, 8472, "flannel VXLAN"),),
    "calico": (("udp", 4789, 4789, "calico VXLAN"), ("tcp", 179, 179, "calico BGP")),
    "bridge": (),
}


def desired_rules(
    ssh_cidrs: Iterable[str], cni: str, nodeport_cidrs: Iterable[str] = (), api_cidrs: Iterable[str] = ()
) -> list[Rule]:
    """Exactly the ingress rules of a kubeadm cluster: SSH/API from the operator, the rest in-group
    (`api_cidrs`: the VPC, where the API load balancer's connections and health checks come from)."""
    rules = []
    for cidr in api_cidrs:
        rules.append(Rule("tcp", 6443, 6443, cidr, "kube-apiserver from the API load balancer"))
    for cidr in ssh_cidrs:
        rules.append(Rule("tcp", 22, 22, cidr, "SSH from the operator"))
        rules.append(Rule("tcp", 6443, 6443, cidr, "kube-apiserver from the operator"))
    for cidr in nodeport_cidrs:
        rules.append(Rule("tcp", 30000, 32767, cidr, "NodePort services from outside"))
    for protocol, low, high, why in _CLUSTER_PORTS + _CNI_PORTS.get(cni, ()):
        rules.append(Rule(protocol, low, high, SELF, why))
    return sorted(set(rules), key=lambda r: r.key)


def rules_from_aws(permissions: list[dict[str, Any]], group_id: str) -> dict[tuple, dict[str, Any]]:
    """Flatten AWS IpPermissions into {rule key: the single-source IpPermission to revoke it}."""
    found: dict[tuple, dict[str, Any]] = {}
    for perm in permissions:
        protocol = str(perm.get("IpProtocol"))
        low, high = int(perm.get("FromPort", -1)), int(perm.get("ToPort", -1))
        if protocol == "-1":
            low = high = -1
        base = {"IpProtocol": protocol, "FromPort": low, "ToPort": high}
        for ip in perm.get("IpRanges", []):
            found[(protocol, low, high, ip["CidrIp"])] = {**base, "IpRanges": [{"CidrIp": ip["CidrIp"]}]}
        for pair in perm.get("UserIdGroupPairs", []):
            source = SELF if pair.get("GroupId") == group_id else f"group:{pair.get('GroupId')}"
            found[(protocol, low, high, source)] = {**base, "UserIdGroupPairs": [{"GroupId": pair.get("GroupId")}]}
        for ip6 in perm.get("Ipv6Ranges", []):
            found[(protocol, low, high, ip6["CidrIpv6"])] = {**base, "Ipv6Ranges": [{"CidrIpv6": ip6["CidrIpv6"]}]}
        for prefix in perm.get("PrefixListIds", []):
            found[(protocol, low, high, f"pl:{prefix['PrefixListId']}")] = {
                **base,
                "PrefixListIds": [{"PrefixListId": prefix["PrefixListId"]}],
            }
    return found


def to_permission(rule: Rule, group_id: str) -> dict[str, Any]:
    """The AWS IpPermission that grants one Rule."""
    perm: dict[str, Any] = {"IpProtocol": rule.protocol, "FromPort": rule.from_port, "ToPort": rule.to_port}
    if rule.source == SELF:
        perm["UserIdGroupPairs"] = [{"GroupId": group_id, "Description": rule.why[:255]}]
    else:
        perm["IpRanges"] = [{"CidrIp": rule.source, "Description": rule.why[:255]}]
    return perm


@dataclass(frozen=True)
class RuleChanges:
    added: tuple[Rule, ...]
    revoked: tuple[tuple, ...]


def reconcile_ingress(ec2: Any, group_id: str, existing: list[dict[str, Any]], wanted: list[Rule]) -> RuleChanges:
    """Make the group's ingress rules exactly `wanted`: authorize missing ones, revoke the rest."""
    current = rules_from_aws(existing, group_id)
    wanted_keys = {rule.key for rule in wanted}
    extra = [key for key in current if key not in wanted_keys]
    if extra:
        log.info("security group %s: revoking %d rule(s) kprov does not manage", group_id, len(extra))
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[current[k] for k in extra])
    missing = [rule for rule in wanted if rule.key not in current]
    if missing:
        log.info("security group %s: adding %d rule(s)", group_id, len(missing))
        ec2.authorize_security_group_ingress(
            GroupId=group_id, IpPermissions=[to_permission(rule, group_id) for rule in missing]
        )
    return RuleChanges(tuple(missing), tuple(extra))
