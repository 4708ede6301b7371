"""What Kubernetes version each node really runs, and the guard that keeps `up`/`apply`/`plan` from
changing it: a version change goes through `kprov upgrade` (drain, kubeadm upgrade, node by node)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from provisioner.actions._remote import on_hosts
from provisioner.errors import InputError, KprovError
from provisioner.inventory.model import Host, Inventory
from provisioner.k8s.versions import same_version
from provisioner.transport.ssh import ConnectOptions, SSHHost

#: per host: the joined kubelet's binary version, the binaries' versions, the API server's image tag
PROBE_SCRIPT = r"""
v() { "$@" 2>/dev/null | sed -n 's/.*\(v[0-9][0-9]*\.[0-9][0-9]*\.[0-9][^ ,"]*\).*/\1/p' | head -n1; }
if [ -e /etc/kubernetes/kubelet.conf ]; then echo "joined yes"; else echo "joined no"; fi
command -v kubelet >/dev/null 2>&1 && echo "kubelet $(v kubelet --version)"
command -v kubeadm >/dev/null 2>&1 && echo "kubeadm $(v kubeadm version -o short)"
m=/etc/kubernetes/manifests/kube-apiserver.yaml
if [ -e "$m" ]; then echo "apiserver $(sed -n 's/^ *image: *//p' "$m" | head -n1)"; fi
true
"""


@dataclass(frozen=True)
class NodeVersions:
    """Facts of one host: is it part of a cluster, and which versions are installed / running there."""

    joined: bool = False
    kubelet: str = ""
    kubeadm: str = ""
    apiserver: str = ""

    @property
    def running(self) -> str:
        """The version this node runs for the cluster ('' when it is not part of one)."""
        return (self.apiserver or self.kubelet) if self.joined or self.apiserver else ""


def image_tag(image: str) -> str:
    """`k8s.gcr.io/kube-apiserver:v1.20.2` -> `v1.20.2` (a registry port is not a tag)."""
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1].split("@", 1)[0] if ":" in last else ""


def parse_node_versions(out: str) -> NodeVersions:
    """Parse PROBE_SCRIPT's output (pure)."""
    facts: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(" ")
        facts[key] = value.strip()
    strip = lambda s: s.lstrip("v")  # noqa: E731
    return NodeVersions(
        joined=facts.get("joined") == "yes",
        kubelet=strip(facts.get("kubelet", "")),
        kubeadm=strip(facts.get("kubeadm", "")),
        apiserver=strip(image_tag(facts["apiserver"])) if facts.get("apiserver") else "",
    )


def probe_versions(hosts: Sequence[Host], connect: ConnectOptions) -> dict[str, NodeVersions | KprovError]:
    """NodeVersions per host (or the error that kept us from asking it)."""

    def probe(ssh: SSHHost) -> NodeVersions:
        res = ssh.script(PROBE_SCRIPT, timeout=60)
        return parse_node_versions(res.stdout)

    return on_hosts(hosts, connect, probe)


def version_mismatches(wanted: str, versions: dict[str, NodeVersions | KprovError]) -> dict[str, str]:
    """host -> the version it runs, for the hosts of a cluster that run another version than `wanted`."""
    return {
        name: v.running
        for name, v in versions.items()
        if isinstance(v, NodeVersions) and v.running and not same_version(v.running, wanted)
    }


def guard_version_unchanged(inv: Inventory, hosts: Sequence[Host], connect: ConnectOptions) -> None:
    """Refuse (InputError, exit 2) when a host of the running cluster is at another version than the inventory.

    Hosts that cannot be reached are left to the run, which reports them unreachable and touches nothing there.
    """
    wanted = inv.cluster.kubernetes_version
    off = version_mismatches(wanted, probe_versions(hosts, connect))
    if not off:
        return
    running = sorted(set(off.values()))
    where = ", ".join(sorted(off))
    raise InputError(
        f"cluster {inv.cluster.name} runs Kubernetes {' and '.join(running)} ({where}) but the inventory wants "
        f"{wanted}: up/apply/plan never change the Kubernetes version",
        hint=f"run `kprov upgrade -i {inv.path}` (drains and upgrades node by node), "
        f'or set kubernetes_version back to "{running[0]}"',
    )
