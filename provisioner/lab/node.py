"""One lab node: its overlay root, identity, systemd-nspawn process, and its stop/cleanup."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from provisioner.errors import LabError
from provisioner.lab import cgroups, fsutil, keys, network, proc
from provisioner.lab.host import kernel_release, run, which
from provisioner.lab.state import NodeRuntime

log = logging.getLogger(__name__)

_CGEXEC = Path(__file__).with_name("_cgexec.py")
CREATED_MARK = ".kprov-created"
# Built-in kernel modules that roles modprobe. The kernel has no loadable modules and no
# /lib/modules, so modprobe fails even for built-ins until modules.builtin lists them (+ depmod).
FAKE_MODULES = [
    "overlay",
    "br_netfilter",
    "bridge",
    "veth",
    "nf_conntrack",
    "nf_nat",
    "ip_tables",
    "ip6_tables",
    "iptable_filter",
    "iptable_nat",
    "iptable_mangle",
    "ip6table_filter",
    "ip6table_nat",
    "x_tables",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_addrtype",
    "xt_mark",
    "xt_comment",
    "xt_multiport",
    "nf_tables",
    "nft_compat",
    "vxlan",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_sh",
    "ipip",
]
STOP_TIMEOUT = 30.0  # clean poweroff; then the node's init is SIGKILLed (tears down its PID namespace)


@dataclass(frozen=True)
class NodeSpec:
    """Static facts about a node, derived from the lab state."""

    lab: str
    name: str
    index: int  # 1-based
    address: ipaddress.IPv4Address
    dir: Path

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def runtime_file(self) -> Path:
        return self.dir / "runtime.json"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def veth(self) -> str:
        return network.veth_name(self.name)


@dataclass(frozen=True)
class LabNet:
    """Per-lab facts every node needs at creation and start."""

    lab: str
    subnet: ipaddress.IPv4Network
    bridge: str
    image: Path
    public_key: str
    known_hosts: Path
    proxy_url: str


def read_runtime(spec: NodeSpec) -> NodeRuntime | None:
    try:
        return NodeRuntime.from_json(spec.runtime_file.read_text())
    except (FileNotFoundError, ValueError, KeyError):
        return None


def is_running(spec: NodeSpec) -> bool:
    rt = read_runtime(spec)
    return rt is not None and proc.alive(rt.nspawn)


def nspawn_pids(spec: NodeSpec) -> list[int]:
    """systemd-nspawn processes booting this node's rootfs (found even when runtime.json is lost)."""
    flag = f"--directory={spec.rootfs}"
    return proc.find(lambda argv: "systemd-nspawn" in argv[0] and flag in argv)


def running_machines(nodes_dir: Path) -> list[str]:
    """Node names of nspawn processes booting a rootfs below nodes_dir (state files may be gone)."""
    prefix = f"--directory={nodes_dir}/"
    names = set()
    for pid in proc.find(lambda argv: "systemd-nspawn" in argv[0] and any(a.startswith(prefix) for a in argv)):
        for arg in proc.cmdline(pid):
            if arg.startswith(prefix):
                names.add(arg[len(prefix) :].split("/")[0])
    return sorted(names)


def hosts_file(specs: list[NodeSpec]) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{s.address} {s.name}" for s in specs]
    return "\n".join(lines) + "\n"


def mount_root(spec: NodeSpec, net: LabNet) -> None:
    for sub in ("upper", "work", "rootfs", "containerd"):
        (spec.dir / sub).mkdir(parents=True, exist_ok=True)
    if not fsutil.is_mountpoint(spec.rootfs):
        opts = f"lowerdir={net.image},upperdir={spec.dir / 'upper'},workdir={spec.dir / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(spec.rootfs)])


def create(spec: NodeSpec, net: LabNet, all_specs: list[NodeSpec]) -> str:
    """Mount the overlay root and (first time) write the node's identity; returns its host key line."""
    mount_root(spec, net)
    r = spec.rootfs
    host_pub = r / "etc/ssh/ssh_host_ed25519_key.pub"
    if not (spec.dir / CREATED_MARK).exists():
        fsutil.write_text(r / "etc/hostname", f"{spec.name}\n")
        fsutil.write_text(r / "etc/machine-id", uuid.uuid4().hex + "\n", mode=0o444)
        pair = keys.generate(f"root@{spec.name}")
        keys.write(pair, r / "etc/ssh/ssh_host_ed25519_key")
        gw = network.gateway(net.subnet)
        fsutil.write_text(
            r / "etc/systemd/network/80-container-host0.network",
            "[Match]\nVirtualization=container\nName=host0\n\n[Network]\n"
            f"Address={spec.address}/{net.subnet.prefixlen}\n"
            # the default route matters: kubeadm/kubelet pick the node IP from it. The host does
            # not forward (and guard rules drop forwarding), so it leads nowhere beyond the bridge.
            f"Gateway={gw}\nDNS={gw}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        )
        # no DNS server listens on the bridge: queries fail fast; node names are in /etc/hosts
        fsutil.write_text(r / "etc/resolv.conf", f"nameserver {gw}\n")
        fsutil.write_text(r / "etc/apt/apt.conf.d/01kprov-proxy", f'Acquire::http::Proxy "{net.proxy_url}";\n')
        (r / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
        fsutil.write_text(r / "root/.ssh/authorized_keys", net.public_key + "\n", mode=0o600)
        (spec.dir / CREATED_MARK).write_text("")
    fsutil.write_if_changed(r / "etc/hosts", hosts_file(all_specs))
    _fake_modules(spec)
    key_type, key_b64 = host_pub.read_text().split()[:2]
    return f"{key_type} {key_b64}"


def _fake_modules(spec: NodeSpec) -> None:
    kver = kernel_release()
    moddir = spec.rootfs / "lib/modules" / kver
    if (moddir / "modules.dep").exists():
        return  # checked every start: a host reboot may bring another kernel release
    moddir.mkdir(parents=True, exist_ok=True)
    (moddir / "modules.builtin").write_text("".join(f"kernel/fake/{m}.ko\n" for m in FAKE_MODULES))
    (moddir / "modules.order").write_text("")
    # the host has no depmod; the image's kmod has
    run(["chroot", str(spec.rootfs), "depmod", kver])


def nspawn_argv(spec: NodeSpec, net: LabNet) -> list[str]:
    argv = [
        which("systemd-nspawn") or "systemd-nspawn",
        "--boot",
        f"--directory={spec.rootfs}",
        f"--machine={spec.name}",
        f"--hostname={spec.name}",
        # no machined/systemd on the host: don't register, stay in the cgroups we set up
        "--register=no",
        "--keep-unit",
        f"--network-bridge={net.bridge}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        # containerd/runc/kubelet need all capabilities, session keyrings and bpf (device filters)
        "--capability=all",
        "--system-call-filter=@keyring bpf",
        # overlayfs cannot be the upper layer of another overlay: containerd's snapshots live on
        # a plain host directory
        f"--bind={spec.dir / 'containerd'}:/var/lib/containerd",
        "--console=read-only",
    ]
    if Path("/dev/kmsg").exists():
        argv.append("--bind=/dev/kmsg")  # kubelet's OOM watcher reads it
    return argv


def start(spec: NodeSpec, net: LabNet) -> NodeRuntime:
    """Boot the node (its overlay must be mounted and created). Does not wait for SSH."""
    # leftovers of a node that was killed from outside, in the cgroups it is about to get
    cleanup(spec, unmount=False, known_cgroups=cgroups.node_dirs(net.lab, spec.name))
    network.delete_link(spec.veth)  # else: "Failed to add new veth interfaces: File exists"
    dirs = cgroups.create_node_cgroups(net.lab, spec.name)
    env = dict(os.environ)
    # legacy (v1) cgroups: the unified hierarchy has no controllers on this kind of host
    env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "0"
    argv = [
        sys.executable,
        "-I",
        "-S",
        str(_CGEXEC),
        *(str(d / "cgroup.procs") for d in dirs),
        "--",
        *nspawn_argv(spec, net),
    ]
    started_at = time.time()
    with open(spec.console_log, "wb") as console:
        popen = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True
        )
    proc.remember(popen)
    # the helper execs nspawn in place: same PID and same kernel start time, so no need to wait
    ident = proc.ident(popen.pid)
    if ident is None or popen.poll() is not None:
        raise LabError(
            f"{spec.name}: systemd-nspawn exited at once", detail=console_tail(spec), hint=f"see {spec.console_log}"
        )
    rt = NodeRuntime(ident, started_at, None, tuple(str(d) for d in dirs))
    fsutil.write_text(spec.runtime_file, rt.to_json())
    log.info("%s: started (nspawn pid %d)", spec.name, ident.pid)
    return rt


def console_tail(spec: NodeSpec) -> str:
    try:
        return spec.console_log.read_text(errors="replace")[-1500:]
    except OSError:
        return ""


def stop_many(specs: list[NodeSpec], timeout: float = STOP_TIMEOUT) -> None:
    """Clean poweroff of all given nodes at once, with the G7/G8 fallbacks, then cleanup."""
    pending: dict[str, tuple[proc.ProcId, proc.ProcId | None]] = {}
    for spec in specs:
        rt = read_runtime(spec)
        candidates = [rt.nspawn] if rt and proc.alive(rt.nspawn) else []
        candidates += [i for i in (proc.ident(p) for p in nspawn_pids(spec)) if i and i not in candidates]
        for nspawn in candidates:
            # remember the node's init now: after nspawn is gone it is the one to kill
            kids = proc.children(nspawn.pid)
            init = proc.ident(kids[0]) if kids else None
            # SIGTERM to nspawn -b = clean poweroff of the node
            proc.kill(nspawn.pid, signal.SIGTERM)
            pending[f"{spec.name}/{nspawn.pid}"] = (nspawn, init)
    left = proc.wait_gone([n for n, _ in pending.values()], timeout)
    for nspawn, init in pending.values():
        if nspawn not in left:
            continue
        # never SIGKILL only nspawn: the node's systemd would live on as an orphan. Killing the
        # node's init tears down its whole PID namespace; nspawn then exits by itself.
        log.warning("node with nspawn pid %d: no clean stop after %.0fs, killing its init", nspawn.pid, timeout)
        if init is not None and proc.alive(init):
            proc.kill(init.pid, signal.SIGKILL)
        if proc.wait_gone([nspawn], 5):
            proc.kill(nspawn.pid, signal.SIGKILL)
            proc.wait_gone([nspawn], 2)
    lab_dirs = cgroups.find_lab_dirs(specs[0].lab) if specs else []  # one scan for all nodes
    for spec in specs:
        cleanup(spec, known_cgroups=[d / spec.name for d in lab_dirs])


def cleanup(spec: NodeSpec, *, unmount: bool = True, known_cgroups: list[Path] | None = None) -> None:
    """Remove what a stopped (or killed) node leaves on the host: processes in its cgroups, its
    cgroups, the host veth, mounts below its rootfs (the overlay is re-mounted at start).

    known_cgroups: candidate cgroup dirs besides the recorded ones; None = scan the hierarchies.
    """
    rt = read_runtime(spec)
    if rt is not None and proc.alive(rt.nspawn):
        raise LabError(f"{spec.name} is still running (nspawn pid {rt.nspawn.pid})")
    dirs = {Path(d) for d in (rt.cgroups if rt else ())}
    if known_cgroups is None:
        known_cgroups = [d / spec.name for d in cgroups.find_lab_dirs(spec.lab)]
    dirs.update(d for d in known_cgroups if d.is_dir())
    dirs_l = sorted(dirs)
    # an orphaned node init (nspawn SIGKILLed from outside) survives in the node's cgroups
    cgroups.kill_all(dirs_l)
    cgroups.remove(dirs_l)
    network.wait_link_gone(spec.veth, timeout=5 if rt else 0)
    if unmount and spec.dir.exists():
        fsutil.unmount_all(spec.rootfs)
    spec.runtime_file.unlink(missing_ok=True)


def record_boot(spec: NodeSpec, seconds: float) -> None:
    rt = read_runtime(spec)
    if rt is not None:
        fsutil.write_text(spec.runtime_file, replace(rt, boot_seconds=round(seconds, 2)).to_json())
