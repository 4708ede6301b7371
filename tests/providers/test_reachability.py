"""Waiting for SSH: a real banner on a loopback port counts, a silent or closed port does not."""

from __future__ import annotations

import socket
import threading

import pytest

from provisioner.errors import HostConnectionError
from provisioner.providers.reachability import Endpoint, ssh_banner, wait_for_ssh


@pytest.fixture
def listener():
    """A loopback TCP server that greets with `greeting` (bytes) or says nothing (None)."""
    servers = []

    def start(greeting: bytes | None) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        servers.append(sock)

        def serve() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                with conn:
                    try:
                        if greeting:
                            conn.sendall(greeting)
                        conn.recv(1)  # hold the connection until the client closes it
                    except OSError:
                        pass

        threading.Thread(target=serve, daemon=True).start()
        return sock.getsockname()[1]

    yield start
    for sock in servers:
        sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "greeting, answers",
    [
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", True),
        (b"HTTP/1.1 400 Bad Request\r\n", False),
        (None, False),  # accepts TCP but never speaks: not sshd yet
    ],
)
def test_ssh_banner(listener, greeting, answers):
    assert ssh_banner(Endpoint("h", "127.0.0.1", listener(greeting)), timeout=0.3) is answers


def test_closed_port_is_not_ssh():
    assert ssh_banner(Endpoint("h", "127.0.0.1", closed_port()), timeout=0.3) is False


def test_wait_returns_once_every_host_answers(listener):
    up = Endpoint("up", "127.0.0.1", listener(b"SSH-2.0-x\r\n"))
    calls = {"late": 0}

    def probe(ep: Endpoint) -> bool:  # "late" answers on its third poll
        if ep.name == "late":
            calls["late"] += 1
            return calls["late"] >= 3
        return ssh_banner(ep, timeout=0.3)

    wait_for_ssh([up, Endpoint("late", "127.0.0.1", 1)], timeout=5, poll=0.01, probe=probe)
    assert calls["late"] == 3


def test_wait_names_the_hosts_that_never_answered(listener):
    up = Endpoint("up", "127.0.0.1", listener(b"SSH-2.0-x\r\n"))
    down = Endpoint("down", "127.0.0.1", closed_port())
    with pytest.raises(HostConnectionError) as info:
        wait_for_ssh([up, down], timeout=0.2, poll=0.05)
    assert str(info.value) == f"SSH not reachable after 0s: down (127.0.0.1:{down.port})"
    assert "ec2.ssh_cidr" in info.value.hint
