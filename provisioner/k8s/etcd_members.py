"""kubeadm's stacked etcd seen from a surviving control plane: member list, health, removal, quorum rules.

The lab's etcd image (Debian's etcd-server) has no etcdctl, and a control plane has no etcdctl unless
someone installed it; every etcd 3.4+ serves its v3 API as JSON on the client port (the gRPC
gateway), so these scripts use curl with kubeadm's etcd client certificate on the control plane.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

PKI = "/etc/kubernetes/pki/etcd"
_CURL = [
    "curl",
    "-sS",
    "--max-time",
    "15",
    "--cacert",
    f"{PKI}/ca.crt",
    "--cert",
    f"{PKI}/healthcheck-client.crt",
    "--key",
    f"{PKI}/healthcheck-client.key",
]
LOCAL = "https://127.0.0.1:2379"
CURL_HINT = "kprov talks to etcd with curl on a surviving control plane: install curl there"


@dataclass(frozen=True)
class EtcdMember:
    id: str  # uint64 as the gateway prints it (a decimal string)
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    healthy: bool = False

    def is_host(self, name: str, node_ip: str) -> bool:
        """Is this the member of that control plane? (kubeadm names members after the node; an unstarted
        member has no name yet, only its peer URL.)"""
        host = f"[{node_ip}]" if ":" in node_ip else node_ip
        return self.name == name or f"https://{host}:2380" in self.peer_urls


def quorum(members: int) -> int:
    return members // 2 + 1


def removal_refusal(members: int, healthy: int, removed_healthy: bool) -> str | None:
    """Why removing one member (healthy or not) from an etcd of `members` with `healthy` healthy ones is
    unsafe, or None. Pure; `--force` overrides."""
    if members <= 1:
        return "it is the last etcd member: removing it destroys the cluster's data"
    if healthy < quorum(members):
        return (
            f"etcd has lost quorum ({healthy} of {members} members healthy, {quorum(members)} needed): "
            "a member cannot be removed"
        )
    if members == 2:
        return (
            "etcd has 2 members: removing one needs both and leaves a single member without a spare "
            "(a hiccup of either loses quorum)"
        )
    left, left_healthy = members - 1, healthy - (1 if removed_healthy else 0)
    if left_healthy < quorum(left):
        return (
            f"after the removal {left_healthy} of {left} members would be healthy, {quorum(left)} are needed for quorum"
        )
    return None


def _post(path: str, body: dict, url: str = LOCAL) -> str:
    return shlex.join([*_CURL, "-X", "POST", f"{url}{path}", "-d", json.dumps(body)])


def list_script() -> str:
    """On a control plane: `list <json>` of the member list of its local etcd."""
    return f"""
command -v curl >/dev/null 2>&1 || {{ echo "curl not found" >&2; exit 127; }}
list=$({_post("/v3/cluster/member/list", {})}) || {{ echo "etcd at {LOCAL} did not answer" >&2; exit 1; }}
echo "list $list" | tr -d '\\n'; echo
"""


def health_script(members: list[EtcdMember]) -> str:
    """On a control plane: `health <id> <json>` for every member's first client URL (empty JSON: no answer)."""
    lines = []
    for m in members:
        if m.client_urls and m.id.isdigit():
            url = shlex.quote(m.client_urls[0] + "/health")
            lines.append(
                f"echo \"health {m.id} $({shlex.join([*_CURL, '--max-time', '5'])} {url} 2>/dev/null | tr -d '\\n')\""
            )
    return "\n".join([*lines, "true"]) + "\n"


def parse_members(out: str) -> list[EtcdMember]:
    """list_script output, then optionally health_script output -> members with their health. Pure."""
    listing: dict = {}
    health: dict[str, bool] = {}
    for line in out.splitlines():
        kind, _, rest = line.strip().partition(" ")
        if kind == "list":
            listing = json.loads(rest or "{}")
        elif kind == "health":
            mid, _, body = rest.partition(" ")
            try:
                health[mid] = str(json.loads(body).get("health")).lower() == "true"
            except ValueError:
                health[mid] = False
    return [
        EtcdMember(
            str(m.get("ID", "")),
            m.get("name", ""),
            tuple(m.get("peerURLs") or ()),
            tuple(m.get("clientURLs") or ()),
            health.get(str(m.get("ID", "")), False),
        )
        for m in listing.get("members") or []
    ]


def remove_member_script(member_id: str) -> str:
    """On a surviving control plane: remove the member; prints `removed` (or `absent`: already gone)."""
    if not member_id.isdigit():
        raise ValueError(f"not an etcd member id: {member_id!r}")
    cmd = _post("/v3/cluster/member/remove", {"ID": member_id})
    return f"""
out=$({cmd}) || {{ echo "etcd at {LOCAL} did not answer" >&2; exit 1; }}
case "$out" in
  *'"members"'*|'{{"header"'*) echo removed ;;
  *'member not found'*) echo absent ;;
  *) echo "$out" >&2; exit 1 ;;
esac
"""
