"""Wait until freshly created machines answer on their SSH port (an SSH banner, not just a SYN-ACK)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provisioner.errors import HostConnectionError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    name: str
    address: str
    port: int = 22


def ssh_banner(endpoint: Endpoint, timeout: float = 5.0) -> bool:
    """True if something at the endpoint speaks SSH (sends an `SSH-` banner)."""
    try:
        with socket.create_connection((endpoint.address, endpoint.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_ssh(
    endpoints: Sequence[Endpoint],
    *,
    timeout: float,
    poll: float = 5.0,
    probe: Callable[[Endpoint], bool] = ssh_banner,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Poll every endpoint until all answer, or raise HostConnectionError naming the silent ones."""
    pending = list(endpoints)
    deadline = clock() + timeout
    while pending:
        pending = [ep for ep in pending if not probe(ep)]
        if not pending:
            return
        if clock() >= deadline:
            names = ", ".join(f"{ep.name} ({ep.address}:{ep.port})" for ep in pending)
            raise HostConnectionError(
                f"SSH not reachable after {timeout:.0f}s: {names}",
                hint="check that ec2.ssh_cidr contains this machine's public address, "
                "or rerun with a longer --timeout (or --no-wait-ssh)",
            )
        log.info("waiting for SSH on %d host(s)", len(pending))
        time.sleep(min(poll, max(0.0, deadline - clock())))
