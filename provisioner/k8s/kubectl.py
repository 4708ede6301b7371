"""Run kubectl: locally with the fetched kubeconfig, or on the first control plane over SSH."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from provisioner.inventory.model import Host
from provisioner.transport.ssh import CommandResult, ConnectOptions, SSHHost


class Kubectl:
    """kubectl with one fixed kubeconfig. Local when possible (the operator's view), else via SSH."""

    def __init__(
        self, kubeconfig: Path, control_plane: Host, connect: ConnectOptions | None = None, prefer_local: bool = True
    ) -> None:
        self.kubeconfig = kubeconfig
        self.local = prefer_local and shutil.which("kubectl") is not None and kubeconfig.is_file()
        self._cp = control_plane
        self._connect = connect or ConnectOptions()
        self._ssh: SSHHost | None = None

    @property
    def where(self) -> str:
        return f"local kubectl --kubeconfig {self.kubeconfig}" if self.local else f"kubectl on {self._cp.name}"

    def run(self, args: Sequence[str], stdin: str | None = None, timeout: float = 300) -> CommandResult:
        t0 = time.monotonic()
        if self.local:
            try:
                proc = subprocess.run(
                    ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                    input=stdin,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                return CommandResult(124, "", f"kubectl {' '.join(args[:3])} timed out after {timeout}s", 0)
            return CommandResult(proc.returncode, proc.stdout, proc.stderr, int((time.monotonic() - t0) * 1000))
        if self._ssh is None:
            self._ssh = SSHHost(self._cp, self._connect)
            self._ssh.connect()
        return self._ssh.run(
            ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", *args],
            stdin=stdin.encode() if stdin is not None else None,
            timeout=timeout,
        )

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None


def api_ready(ssh: SSHHost, server: str, kubeconfig: str = "/etc/kubernetes/admin.conf") -> bool:
    """One API server's /readyz (its etcd included), asked on a control plane with its kubeconfig: True when
    it answers ok within 10 s. `server` names that API server (admin.conf may point at a load balancer)."""
    res = ssh.run(
        ["kubectl", "--kubeconfig", kubeconfig, "--server", server, "get", "--raw=/readyz", "--request-timeout=10s"],
        timeout=30,
    )
    return res.rc == 0 and res.stdout.strip() == "ok"
