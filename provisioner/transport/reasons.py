"""Why an SSH connection failed, in one line a person can act on (issue 15).

paramiko's own messages name its internals ("[Errno None] Unable to connect to port 22 on 10.0.0.5",
"Error reading SSH protocol banner", "No existing session"); these say what happened on the network.
Authentication failures and changed host keys have their own errors in ssh.py.
"""

from __future__ import annotations

import errno
import socket

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError


def connect_failure(exc: BaseException, port: int, timeout: float) -> str:
    """One line for a failed connection attempt: refused, timed out, no route, no SSH banner, ..."""
    if isinstance(exc, NoValidConnectionsError):
        inner = list(exc.errors.values())
        if inner:  # one per address family tried: the first says it (all are alike in practice)
            return connect_failure(inner[0], port, timeout)
    if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED):
        return f"connection refused (nothing listens on port {port}: is sshd running?)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"connection timed out after {timeout:g}s (host down, or the network drops the packets)"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to host (wrong address, or the host or its network is down)"
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if text.startswith("Indecipherable protocol version"):
            return f"not an SSH server on port {port} (it answered with something else)"
        if "banner" in text or text == "No existing session":
            # closed (EOF) or reset by the peer before a banner: both are a server that hung up
            if isinstance(exc.__context__, (EOFError, ConnectionError)) or "Connection reset" in text:
                return (
                    "the connection was closed before an SSH banner arrived (not an SSH server, or sshd "
                    "refusing connections: MaxStartups, a firewall, fail2ban)"
                )
            return f"banner timeout: no SSH banner within {timeout:g}s (not an SSH server, or sshd too busy to answer)"
    return str(exc) or type(exc).__name__
