"""etcd snapshot and restore for kubeadm's stacked etcd (one member per control plane).

snapshot: a consistent `etcdctl snapshot save` from a healthy member, copied to the operator's machine (0600)
with its sha256 and a small JSON of metadata beside it; `keep` prunes older ones.
restore: checksum verified, every control plane stopped (static pods parked), every member restored from the
snapshot with a new cluster token (the old data directory kept aside), control planes started, healthy API.
Everything written to the cluster after the snapshot is lost.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from provisioner.actions._remote import checked, maintenance_lock, on_hosts, session
from provisioner.actions.certs import STATIC_PODS
from provisioner.actions.static_pods import ADMIN_CONF, MANIFESTS
from provisioner.actions.versions import PROBE_SCRIPT, parse_node_versions
from provisioner.atomic import write_file
from provisioner.errors import InputError, KprovError
from provisioner.inventory.model import Host, Inventory
from provisioner.transport.ssh import ConnectOptions, SSHHost

PKI = "/etc/kubernetes/pki/etcd"
REMOTE_DIR = "/var/lib/kprov/etcd"
PARKED = "/etc/kubernetes/kprov/manifests-parked"
_CLIENT = [
    "--endpoints=https://127.0.0.1:2379",
    f"--cacert={PKI}/ca.crt",
    f"--cert={PKI}/healthcheck-client.crt",
    f"--key={PKI}/healthcheck-client.key",
]
ETCDCTL_HINT = (
    "kprov runs etcdctl on the control planes: install it there "
    "(Debian/Ubuntu: apt-get install etcd-client; or etcdctl from the etcd release matching the cluster)"
)


def etcdctl(*args: str) -> str:
    """A shell command line running etcdctl (API v3) against the local member with kubeadm's client cert."""
    return "ETCDCTL_API=3 " + shlex.join(["etcdctl", *_CLIENT, *args])


# --- facts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """What a control plane's etcd static pod manifest says about its member."""

    host: str
    name: str
    peer_url: str
    data_dir: str
    has_etcdctl: bool
    healthy: bool = False
    etcd_version: str = ""


MEMBER_SCRIPT = f"""
m={MANIFESTS}/etcd.yaml; [ -e "$m" ] || m={PARKED}/etcd.yaml
if [ -e "$m" ]; then sed -n 's/^ *- --\\(name\\|initial-advertise-peer-urls\\|data-dir\\)=\\(.*\\)$/\\1 \\2/p' "$m"; fi
if command -v etcdctl >/dev/null 2>&1; then
  echo "etcdctl yes"
  {etcdctl("endpoint", "health", "--command-timeout=10s")} >/dev/null 2>&1 && echo "healthy yes"
  {etcdctl("endpoint", "status", "-w", "json", "--command-timeout=10s")} 2>/dev/null | sed -n 's/.*"version":"\\([^"]*\\)".*/version \\1/p'
fi
true
"""


def parse_member(host: str, out: str) -> Member | None:
    """MEMBER_SCRIPT output -> Member (None: no etcd static pod on this host). Pure."""
    facts: dict[str, str] = {}
    for line in out.splitlines():
        k, _, v = line.strip().partition(" ")
        facts.setdefault(k, v.strip())
    if "name" not in facts:
        return None
    return Member(
        host,
        facts["name"],
        facts.get("initial-advertise-peer-urls", ""),
        facts.get("data-dir", "/var/lib/etcd"),
        facts.get("etcdctl") == "yes",
        facts.get("healthy") == "yes",
        facts.get("version", ""),
    )


def probe_members(cps: Sequence[Host], connect: ConnectOptions) -> dict[str, Member]:
    """Member facts of every control plane; any host unreachable or without etcd is refused (InputError)."""
    results = on_hosts(
        cps, connect, lambda ssh: parse_member(ssh.host.name, ssh.script(MEMBER_SCRIPT, timeout=90).stdout)
    )
    members: dict[str, Member] = {}
    for h in cps:
        r = results[h.name]
        if isinstance(r, KprovError):
            raise InputError(
                f"{h.name}: {r.message}", hint="every control plane must be reachable; nothing was changed"
            )
        if r is None:
            raise InputError(
                f"{h.name}: no etcd static pod (/etc/kubernetes/manifests/etcd.yaml)",
                hint="kprov handles kubeadm's stacked etcd on initialised control planes (`kprov up`)",
            )
        if not r.has_etcdctl:
            raise InputError(f"{h.name}: etcdctl not found", hint=ETCDCTL_HINT)
        members[h.name] = r
    return members


# --- snapshot ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotReport:
    path: Path
    sha256: str
    size: int
    member: str
    revision: int
    metadata: dict
    pruned: tuple[Path, ...]
    seconds: float


def default_snapshot_dir(inv: Inventory) -> Path:
    base = Path(os.environ.get("KPROV_HOME", Path.home() / ".kprov"))
    return base / "snapshots" / inv.cluster.name


def snapshot(
    inv: Inventory,
    connect: ConnectOptions,
    *,
    output: Path | None = None,
    keep: int | None = None,
    now: datetime | None = None,
) -> SnapshotReport:
    """A consistent snapshot from the first healthy member, copied 0600 to `output` with .sha256 and .json."""
    if keep is not None and keep < 1:
        raise InputError(f"--keep {keep}: must be 1 or more", hint="--keep 7 keeps the seven newest snapshots")
    out_dir = Path(output) if output else default_snapshot_dir(inv)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output {out_dir}: not a directory", hint="give a directory (created when missing)")
    t0 = time.monotonic()
    members = probe_members(inv.control_planes, connect)
    healthy = [m for m in members.values() if m.healthy]
    if not healthy:
        raise InputError(
            f"no healthy etcd member on {', '.join(members)}: no snapshot taken",
            hint="check the control planes (`kprov status`, `journalctl -u kubelet`)",
        )
    member = healthy[0]
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    remote = f"{REMOTE_DIR}/snapshot-{stamp}.db"
    with session(inv.host(member.host), connect) as ssh:
        script = f"""
set -e
umask 077
mkdir -p {REMOTE_DIR}
rm -f {remote} {remote}.part
{etcdctl("snapshot", "save", remote, "--command-timeout=300s")} >/dev/null
echo "sha256 $(sha256sum {remote} | cut -d' ' -f1)"
echo "status $({etcdctl("snapshot", "status", remote, "-w", "json")})"
"""
        res = checked(ssh, ssh.script(script, timeout=400), "etcdctl snapshot save", hint=ETCDCTL_HINT)
        facts = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{inv.cluster.name}-{stamp}.db"
        tmp = out_dir / f".{name}.part"
        try:
            sha, size = _fetch_private(ssh, remote, tmp)
        finally:
            ssh.run(["rm", "-f", remote], timeout=60)
        versions = parse_node_versions(ssh.script(PROBE_SCRIPT, timeout=60).stdout)
    if sha != facts.get("sha256"):
        tmp.unlink(missing_ok=True)
        raise KprovError(
            f"{member.host}: the snapshot changed in transit (sha256 {sha[:12]} != {facts.get('sha256', '?')[:12]})",
            hint="rerun `kprov etcd snapshot`",
        )
    status = json.loads(facts.get("status") or "{}")
    meta = {
        "cluster": inv.cluster.name,
        "kubernetes_version": versions.apiserver or versions.kubelet,
        "etcd_version": member.etcd_version,
        "member": member.name,
        "host": member.host,
        "revision": status.get("revision"),
        "total_keys": status.get("totalKey"),
        "size": size,
        "sha256": sha,
        "time": stamp,
        "file": name,
    }
    path = out_dir / name
    os.replace(tmp, path)
    _write_private(path.with_name(name + ".sha256"), f"{sha}  {name}\n".encode())
    _write_private(path.with_name(name.removesuffix(".db") + ".json"), (json.dumps(meta, indent=2) + "\n").encode())
    pruned = prune(out_dir, inv.cluster.name, keep) if keep else ()
    return SnapshotReport(
        path, sha, size, member.name, int(status.get("revision") or 0), meta, pruned, round(time.monotonic() - t0, 1)
    )


FETCH_CHUNK = 8 << 20


def _fetch_private(ssh: SSHHost, remote: str, dest: Path) -> tuple[str, int]:
    """Copy a remote file to dest (mode 0600) in bounded chunks; (sha256, size) of what was written."""
    import base64

    h, size = hashlib.sha256(), 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        for i in itertools.count():
            res = checked(
                ssh,
                ssh.run(
                    [
                        "sh",
                        "-c",
                        f"dd if={shlex.quote(remote)} bs={FETCH_CHUNK} skip={i} count=1 status=none | base64 -w0",
                    ],
                    timeout=300,
                ),
                "copying the snapshot",
            )
            block = base64.b64decode(res.stdout)
            if not block:
                break
            fh.write(block)
            h.update(block)
            size += len(block)
            if len(block) < FETCH_CHUNK:
                break
    os.chmod(dest, 0o600)
    return h.hexdigest(), size


def _write_private(path: Path, data: bytes) -> None:
    write_file(path, data, 0o600)


_SNAP_NAME = re.compile(r"^(?P<cluster>.+)-(?P<stamp>\d{8}T\d{6}Z)\.db$")


def prune(out_dir: Path, cluster: str, keep: int) -> tuple[Path, ...]:
    """Remove all but the `keep` newest snapshots of `cluster` in out_dir (with their .sha256 and .json)."""
    snaps = sorted(
        (
            p
            for p in out_dir.glob(f"{cluster}-*.db")
            if (m := _SNAP_NAME.match(p.name)) and m.group("cluster") == cluster
        ),
        key=lambda p: p.name,
    )
    old = snaps[:-keep] if keep else []
    for p in old:
        for q in (p, p.with_name(p.name + ".sha256"), p.with_name(p.name.removesuffix(".db") + ".json")):
            q.unlink(missing_ok=True)
    return tuple(old)


# --- restore ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedSnapshot:
    path: Path
    sha256: str
    metadata: dict


def verify_snapshot_file(path: Path, cluster: str) -> VerifiedSnapshot:
    """The file exists, matches the sha256 beside it, and (when its JSON says so) belongs to this cluster."""
    if not path.is_file():
        raise InputError(
            f"--from {path}: snapshot file not found",
            hint="give a .db written by `kprov etcd snapshot` (default dir ~/.kprov/snapshots/<cluster>)",
        )
    sum_file = path.with_name(path.name + ".sha256")
    if not sum_file.is_file():
        raise InputError(
            f"--from {path}: no checksum file {sum_file.name} beside it",
            hint="restore only snapshots written by `kprov etcd snapshot` (it writes the .sha256)",
        )
    want = sum_file.read_text(encoding="utf-8", errors="replace").split()[:1]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if not want or want[0].lower() != h.hexdigest():
        raise InputError(
            f"--from {path}: checksum mismatch (sha256 {h.hexdigest()[:12]}, "
            f"{sum_file.name} says {(want or ['nothing'])[0][:12]})",
            hint="the file is corrupt or not the one snapshotted: use another snapshot",
        )
    meta_file = path.with_name(path.name.removesuffix(".db") + ".json")
    meta: dict = {}
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            meta = {}
    if meta.get("cluster") and meta["cluster"] != cluster:
        raise InputError(
            f"--from {path}: a snapshot of cluster {meta['cluster']}, not {cluster}",
            hint="give a snapshot of this inventory's cluster",
        )
    return VerifiedSnapshot(path, h.hexdigest(), meta)


@dataclass(frozen=True)
class RestoreReport:
    snapshot: Path
    members: tuple[str, ...]
    token: str
    seconds: float
    kept_aside: str


def _stop_script(timeout_s: int) -> str:
    pods = " ".join(STATIC_PODS)
    return f"""
set -e
mkdir -p {PARKED}
for p in {pods}; do [ -e {MANIFESTS}/$p.yaml ] && mv {MANIFESTS}/$p.yaml {PARKED}/$p.yaml; done
end=$(( $(date +%s) + {timeout_s} ))
while ss -Hltn '( sport = :6443 or sport = :2379 or sport = :2380 )' | grep -q .; do
  [ "$(date +%s)" -lt "$end" ] || {{ echo "control-plane pods did not stop within {timeout_s}s" >&2; exit 1; }}
  sleep 2
done
echo stopped
"""


def _restore_script(m: Member, remote: str, initial_cluster: str, token: str, aside: str) -> str:
    d = shlex.quote(m.data_dir)
    restore = shlex.join(
        [
            "etcdctl",
            "snapshot",
            "restore",
            remote,
            f"--name={m.name}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={token}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--data-dir={m.data_dir}.kprov-new",
        ]
    )
    return f"""
set -e
rm -rf {d}.kprov-new
ETCDCTL_API=3 {restore} >/dev/null
if [ -e {d} ]; then mv {d} {shlex.quote(m.data_dir + aside)}; fi
mv {d}.kprov-new {d}
chmod 700 {d}
echo restored
"""


def _start_script() -> str:
    pods = " ".join(STATIC_PODS)
    return f"""
set -e
for p in {pods}; do [ -e {PARKED}/$p.yaml ] && mv {PARKED}/$p.yaml {MANIFESTS}/$p.yaml; done
echo started
"""


def _wait_healthy_script(timeout_s: int) -> str:
    return f"""
end=$(( $(date +%s) + {timeout_s} ))
until kubectl --kubeconfig {ADMIN_CONF} get --raw=/readyz --request-timeout=5s 2>/dev/null | grep -qx ok; do
  [ "$(date +%s)" -lt "$end" ] || {{ echo "API server not ready within {timeout_s}s" >&2; exit 1; }}
  sleep 2
done
echo healthy
"""


def restore(
    inv: Inventory,
    connect: ConnectOptions,
    *,
    source: Path,
    yes: bool,
    timeout_s: int = 600,
    progress: Callable[[str], None] = lambda _m: None,
) -> RestoreReport:
    """Replace the cluster's etcd state with the snapshot on every control plane. Refused before any change
    when the file, its checksum, a control plane or etcdctl is not right, or without `yes`.

    A bad file is refused before any lock or connection; then the locks `up` takes are held for the rest (the
    cluster's here, every reachable host's): a concurrent run is LockHeld (exit 2) before anything changes."""
    snap = verify_snapshot_file(Path(source), inv.cluster.name)
    with maintenance_lock(inv, connect, "kprov etcd restore"):
        cps = list(inv.control_planes)
        members = probe_members(cps, connect)
        if not yes:
            when = snap.metadata.get("time", "an unknown time")
            raise InputError(
                f"restoring {snap.path.name} replaces the whole cluster state with the one of {when}: "
                "everything written after it is lost",
                hint="rerun with --yes to restore",
            )
        t0 = time.monotonic()
        token = f"kprov-{inv.cluster.name}-{secrets.token_hex(4)}"
        aside = f".kprov-before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members.values())
        remote = f"{REMOTE_DIR}/restore-{snap.sha256[:16]}.db"

        def upload(ssh: SSHHost) -> None:
            checked(
                ssh,
                ssh.run(["sh", "-c", f"umask 077 && mkdir -p {REMOTE_DIR} && rm -f {remote}"], timeout=60),
                "preparing the upload",
            )
            with open(snap.path, "rb") as fh:
                ssh.put_stream(remote, fh)
            res = checked(ssh, ssh.run(["sha256sum", remote], timeout=120), "checksum of the uploaded snapshot")
            if res.stdout.split()[:1] != [snap.sha256]:
                raise KprovError(
                    f"{ssh.host.name}: the uploaded snapshot does not match its checksum",
                    hint="rerun the restore (nothing was stopped yet)",
                )

        def all_cps(what: str, fn: Callable[[SSHHost], object]) -> None:
            progress(what)
            bad = {n: r for n, r in on_hosts(cps, connect, fn).items() if isinstance(r, KprovError)}
            if bad:
                name, err = next(iter(bad.items()))
                raise KprovError(
                    f"{name}: {err.message} (restore step: {what})",
                    hint="fix it and rerun `kprov etcd restore` with the same file: every step is "
                    "repeatable; parked manifests are in " + PARKED,
                    detail=err.detail,
                )

        all_cps("uploading the snapshot to every control plane", lambda ssh: upload(ssh))
        all_cps(
            "stopping the control planes (static pods parked)",
            lambda ssh: checked(ssh, ssh.script(_stop_script(240), timeout=300), "stopping the control plane"),
        )
        all_cps(
            "restoring every etcd member with a new cluster token",
            lambda ssh: checked(
                ssh,
                ssh.script(_restore_script(members[ssh.host.name], remote, initial_cluster, token, aside), timeout=600),
                "etcdctl snapshot restore",
            ),
        )
        all_cps(
            "starting the control planes",
            lambda ssh: checked(ssh, ssh.script(_start_script(), timeout=60), "starting the control plane"),
        )
        progress("waiting for a healthy API server")
        with session(cps[0], connect) as ssh:
            checked(
                ssh, ssh.script(_wait_healthy_script(timeout_s), timeout=timeout_s + 60), "waiting for the API server"
            )
        # kubelets and controllers may hold state newer than the snapshot: restart every kubelet
        progress("restarting kubelet on every node")
        on_hosts(inv.hosts, connect, lambda ssh: ssh.run(["systemctl", "restart", "kubelet"], timeout=120))
        on_hosts(cps, connect, lambda ssh: ssh.run(["rm", "-f", remote], timeout=60))
        return RestoreReport(
            snap.path, tuple(m.name for m in members.values()), token, round(time.monotonic() - t0, 1), aside
        )
