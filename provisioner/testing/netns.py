"""Network-namespace SSH hosts: many cheap real sshd hosts on one machine (tests and benchmarks).

Each host is a network namespace on a private bridge with its own sshd, hostname and private
/tmp. They share the machine's filesystem otherwise, so roles that write to /etc belong on the
nspawn lab instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetnsHost:
    name: str
    address: str
    pid: int


class NetnsFleet:
    """Create/destroy N sshd hosts in network namespaces on bridge `bridge` (a /24 subnet prefix)."""

    def __init__(self, prefix: str = "kpn", subnet: str = "10.239.0", workdir: Path | None = None) -> None:
        self.prefix = prefix
        self.subnet = subnet
        self.bridge = f"{prefix}br0"
        self.workdir = workdir or Path(f"/var/tmp/kprov-netns-{prefix}")
        self.key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.hosts: list[NetnsHost] = []

    def _sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), check=check, capture_output=True, text=True)

    def up(self, count: int) -> list[NetnsHost]:
        self.down()
        self.workdir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True)
        self._sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        (self.workdir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        self._sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        self._sh("ip", "link", "set", self.bridge, "up")
        known = []
        for i in range(count):
            name = f"{self.prefix}-{i + 1}"
            addr = f"{self.subnet}.{10 + i}"
            hdir = self.workdir / name
            hdir.mkdir()
            self._sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hdir / "host_key"))
            (hdir / "sshd_config").write_text(
                f"Port 22\nListenAddress {addr}\nHostKey {hdir / 'host_key'}\n"
                f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\nPidFile {hdir / 'sshd.pid'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
                # the distribution's MaxSessions/MaxStartups defaults, as users' hosts have
                "Subsystem sftp internal-sftp\nLogLevel ERROR\n")
            ns = name
            self._sh("ip", "netns", "add", ns)
            self._sh("ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._sh("ip", "link", "set", f"{name}h", "master", self.bridge, "up")
            self._sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            self._sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self._sh("ip", "-n", ns, "link", "set", "lo", "up")
            (hdir / "bashrc").write_text("")
            bashrc = (f"mount --bind {hdir / 'bashrc'} /root/.bashrc && " if Path("/root/.bashrc").is_file() else "")
            inner = (f"mount --make-rprivate / && mount -t tmpfs tmpfs /tmp && {bashrc}hostname {name} && "
                     f"exec /usr/sbin/sshd -D -e -f {hdir / 'sshd_config'}")
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "sh", "-c", inner],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=open(hdir / "sshd.log", "wb"), start_new_session=True)
            (hdir / "pid").write_text(str(proc.pid))
            pub = (hdir / "host_key.pub").read_text().split()
            known.append(f"{addr} {pub[0]} {pub[1]}")
            self.hosts.append(NetnsHost(name, addr, proc.pid))
        self.known_hosts.write_text("\n".join(known) + "\n")
        self._wait_ready()
        return list(self.hosts)

    def _wait_ready(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        pending = list(self.hosts)
        while pending and time.monotonic() < end:
            still = []
            for h in pending:
                try:
                    with socket.create_connection((h.address, 22), timeout=0.5) as s:
                        s.settimeout(1)
                        if not s.recv(4).startswith(b"SSH"):
                            still.append(h)
                except OSError:
                    still.append(h)
            pending = still
            if pending:
                time.sleep(0.1)
        if pending:
            raise RuntimeError(f"sshd not ready on {[h.name for h in pending]}")

    def inventory(self, path: Path, *, cluster: str = "nstest", extra_hosts: list[dict] | None = None,
                  **host_overrides: object) -> Path:
        hosts = [{"name": h.name, "address": h.address,
                  "roles": ["control_plane"] if i == 0 else ["worker"], **host_overrides}
                 for i, h in enumerate(self.hosts)]
        doc = {
            "cluster": {"name": cluster, "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12"},
            "defaults": {"user": "root", "ssh_key": str(self.key), "known_hosts": str(self.known_hosts)},
            "hosts": hosts + (extra_hosts or []),
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def kill(self, name: str) -> None:
        """Stop one host's sshd (simulates a host going away)."""
        for h in self.hosts:
            if h.name == name:
                try:
                    os.killpg(h.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def down(self) -> None:
        if self.workdir.is_dir():
            for pidfile in self.workdir.glob("*/pid"):
                try:
                    os.killpg(int(pidfile.read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError, PermissionError):
                    pass
        out = self._sh("ip", "netns", "list", check=False).stdout
        for line in out.splitlines():
            ns = line.split()[0] if line.split() else ""
            if ns.startswith(f"{self.prefix}-"):
                # sshd session processes leave the listener's process group: kill all that live in the netns
                for pid in self._sh("ip", "netns", "pids", ns, check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                self._sh("ip", "netns", "del", ns, check=False)
                self._sh("ip", "link", "del", f"{ns}h", check=False)
        self._sh("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.hosts = []
