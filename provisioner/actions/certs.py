"""Certificates of a kubeadm cluster: `check` (expiry per control plane, kubelet rotation per node) and
`renew` (kubeadm certs renew all, static pods restarted one control plane at a time, admin kubeconfig
re-fetched)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provisioner.actions._remote import checked, maintenance_lock, on_hosts, session
from provisioner.actions.static_pods import ADMIN_CONF, restart_static_pods
from provisioner.atomic import write_file
from provisioner.errors import InputError, KprovError
from provisioner.inventory.model import Host, Inventory
from provisioner.transport.ssh import ConnectOptions, SSHHost

DEFAULT_WARN_DAYS = 30
#: the control-plane static pods (kubeadm certs renew asks to restart them all)
STATIC_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")

# `kubeadm certs` left alpha in 1.20; older kubeadm only has `kubeadm alpha certs`
CHECK_SCRIPT = """
kubeadm certs check-expiration 2>/dev/null || kubeadm alpha certs check-expiration
"""
KUBELET_SCRIPT = r"""
c=/var/lib/kubelet/config.yaml
if [ ! -e "$c" ]; then echo "rotate none"; exit 0; fi
if grep -Eq '^rotateCertificates: *true' "$c"; then echo "rotate true"; else echo "rotate false"; fi
p=/var/lib/kubelet/pki/kubelet-client-current.pem
[ -L "$p" ] && echo "client $(readlink "$p")"
true
"""

_ROW = re.compile(r"^(?P<name>\S+)\s+(?P<expires>[A-Z][a-z]{2} \d{2}, \d{4} \d{2}:\d{2} UTC)\s+\S+\s*(?P<rest>.*)$")


@dataclass(frozen=True)
class Cert:
    """One certificate (or kubeconfig's embedded client certificate) as kubeadm lists it."""

    host: str
    name: str
    expires: datetime
    authority: str = ""
    is_ca: bool = False
    externally_managed: bool = False

    def days_left(self, now: datetime) -> int:
        return int((self.expires - now).total_seconds() // 86400)


@dataclass(frozen=True)
class KubeletRotation:
    host: str
    rotate: bool | None  # None: no kubelet config on this host (not joined)
    client_cert: str = ""


@dataclass(frozen=True)
class CertsReport:
    certs: tuple[Cert, ...]
    kubelets: tuple[KubeletRotation, ...]
    warn_days: int
    now: datetime
    #: host -> (message, exit status) for hosts that could not be checked
    errors: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def expiring(self) -> tuple[Cert, ...]:
        return tuple(c for c in self.certs if c.days_left(self.now) < self.warn_days)

    @property
    def nearest(self) -> Cert | None:
        return min(self.certs, key=lambda c: c.expires, default=None)

    @property
    def rotation_off(self) -> tuple[str, ...]:
        return tuple(k.host for k in self.kubelets if k.rotate is False)

    @property
    def ok(self) -> bool:
        return not self.expiring and not self.rotation_off and not self.errors


def parse_check_expiration(host: str, out: str) -> list[Cert]:
    """`kubeadm certs check-expiration` -> Certs (both tables: leaf certificates and authorities). Pure."""
    certs: list[Cert] = []
    in_ca_table = False
    for line in out.splitlines():
        if line.startswith("CERTIFICATE AUTHORITY"):
            in_ca_table = True
            continue
        m = _ROW.match(line.strip())
        if not m:
            continue
        expires = datetime.strptime(m.group("expires"), "%b %d, %Y %H:%M UTC").replace(tzinfo=UTC)
        rest = m.group("rest").split()
        managed = bool(rest) and rest[-1] == "yes"
        authority = rest[0] if not in_ca_table and len(rest) == 2 else ""
        certs.append(Cert(host, m.group("name"), expires, authority, in_ca_table, managed))
    return certs


def parse_kubelet_rotation(host: str, out: str) -> KubeletRotation:
    facts = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    rotate = {"true": True, "false": False}.get(facts.get("rotate", "none"))
    return KubeletRotation(host, rotate, facts.get("client", ""))


def select_control_planes(inv: Inventory, limit: Sequence[str] | None) -> list[Host]:
    cps = list(inv.control_planes)
    if limit:
        unknown = [n for n in limit if n not in {h.name for h in inv.hosts}]
        if unknown:
            raise InputError(
                f"--limit {unknown[0]!r} is not a host of this inventory",
                hint=f"hosts: {', '.join(h.name for h in inv.hosts)}",
            )
        cps = [h for h in cps if h.name in limit]
        if not cps:
            raise InputError(
                f"--limit {','.join(limit)} names no control plane",
                hint=f"control planes: {', '.join(h.name for h in inv.control_planes)}",
            )
    return cps


def check_certs(
    inv: Inventory,
    connect: ConnectOptions,
    *,
    warn_days: int = DEFAULT_WARN_DAYS,
    limit: Sequence[str] | None = None,
    now: datetime | None = None,
) -> CertsReport:
    """Every kubeadm certificate of every (selected) control plane, and kubelet rotation on every node."""
    if warn_days < 0:
        raise InputError(f"--warn-days {warn_days}: must be 0 or more", hint="e.g. --warn-days 30")
    cps = select_control_planes(inv, limit)
    cp_names = {h.name for h in cps}
    nodes = [h for h in inv.hosts if not limit or h.name in limit]

    def both(ssh: SSHHost) -> tuple[list[Cert], KubeletRotation]:
        certs: list[Cert] = []
        if ssh.host.name in cp_names:
            res = checked(
                ssh,
                ssh.script(CHECK_SCRIPT, timeout=120),
                "kubeadm certs check-expiration",
                hint="is this control plane initialised? (`kprov up`)",
            )
            certs = parse_check_expiration(ssh.host.name, res.stdout)
        return certs, parse_kubelet_rotation(ssh.host.name, ssh.script(KUBELET_SCRIPT, timeout=60).stdout)

    results = on_hosts(nodes, connect, both)
    certs: list[Cert] = []
    kubelets: list[KubeletRotation] = []
    errors: dict[str, tuple[str, int]] = {}
    for h in nodes:
        r = results[h.name]
        if isinstance(r, KprovError):
            errors[h.name] = (r.message, int(r.exit_status))
            continue
        certs.extend(r[0])
        kubelets.append(r[1])
    return CertsReport(tuple(certs), tuple(kubelets), warn_days, now or datetime.now(UTC), errors)


# --- renew ------------------------------------------------------------------------------------------------


def local_server(host: Host) -> str:
    """This control plane's own API server (admin.conf may point at a load balancer that another one answers)."""
    ip = host.node_ip
    return f"https://{'[' + ip + ']' if ':' in ip else ip}:6443"


@dataclass(frozen=True)
class RenewStep:
    host: str
    renewed: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class RenewReport:
    steps: tuple[RenewStep, ...]
    kubeconfig: str


def renew_certs(
    inv: Inventory,
    connect: ConnectOptions,
    *,
    kubeconfig_dest: str,
    limit: Sequence[str] | None = None,
    timeout_s: int = 300,
    progress: Callable[[str], None] = lambda _m: None,
) -> RenewReport:
    """Renew every kubeadm certificate, one control plane at a time, each back healthy before the next.

    Holds the locks `up` takes (the cluster's here, every reachable host's) from the preflight to the re-fetched
    admin kubeconfig: a concurrent run is LockHeld (exit 2) before anything changes."""
    with maintenance_lock(inv, connect, "kprov certs renew"):
        cps = select_control_planes(inv, limit)

        # preflight, before any change: every selected control plane is reachable and has a healthy API server
        def healthy(ssh: SSHHost) -> bool:
            res = ssh.run(
                [
                    "kubectl",
                    "--kubeconfig",
                    ADMIN_CONF,
                    "--server",
                    local_server(ssh.host),
                    "get",
                    "--raw=/healthz",
                    "--request-timeout=10s",
                ],
                timeout=30,
            )
            return res.rc == 0 and res.stdout.strip() == "ok"

        pre = on_hosts(cps, connect, healthy)
        bad = {
            n: (r.message if isinstance(r, KprovError) else "API server not healthy")
            for n, r in pre.items()
            if r is not True
        }
        if bad:
            name, why = next(iter(bad.items()))
            raise InputError(
                f"{name}: {why}: certificates not renewed anywhere",
                hint="fix the control plane first (`kprov status`), then rerun `kprov certs renew`",
            )
        steps: list[RenewStep] = []
        for h in cps:
            t0 = time.monotonic()
            progress(f"{h.name}: kubeadm certs renew all")
            with session(h, connect) as ssh:
                res = checked(
                    ssh,
                    ssh.script("kubeadm certs renew all 2>&1 || kubeadm alpha certs renew all 2>&1", timeout=180),
                    "kubeadm certs renew all",
                )
                renewed = tuple(
                    re.findall(
                        r"certificate (?:embedded in the kubeconfig file for )?(?:for )?(.+?) renewed", res.stdout
                    )
                )
                restart_static_pods(ssh, local_server(h), timeout_s=timeout_s, progress=progress)
            steps.append(RenewStep(h.name, renewed, round(time.monotonic() - t0, 1)))
        refetch_admin_kubeconfig(inv.control_planes[0], connect, kubeconfig_dest)
        return RenewReport(tuple(steps), kubeconfig_dest)


def refetch_admin_kubeconfig(cp: Host, connect: ConnectOptions, dest: str) -> None:
    """The renewed admin.conf, written atomically with mode 0600; the `server:` the operator already uses is
    kept (`up` may have rewritten it), else the control plane's address."""
    import os

    server = f"https://{'[' + cp.address + ']' if ':' in cp.address else cp.address}:6443"
    if os.path.isfile(dest):
        m = re.search(r"(?m)^\s*server:\s*(\S+)\s*$", Path(dest).read_text(encoding="utf-8", errors="replace"))
        server = m.group(1) if m else server
    with session(cp, connect) as ssh:
        content = ssh.fetch(ADMIN_CONF)
    content = re.sub(rb"(?m)^(\s*server:\s*).*$", lambda m: m.group(1) + server.encode(), content)
    write_file(dest, content, 0o600)
