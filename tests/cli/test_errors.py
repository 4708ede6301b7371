"""No traceback without --traceback, and Ctrl-C twice exits at once (issue 15, Output people can follow).

The "SSH servers" here are real loopback sockets that misbehave the way broken hosts do: one sends a
non-SSH banner, one closes at once, one never says anything. paramiko logs a whole traceback for each
(`Exception (client): Error reading SSH protocol banner`); kprov must show one line per host instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
import yaml
from paramiko.ssh_exception import NoValidConnectionsError

from provisioner.errors import KprovError
from provisioner.inventory.model import Host
from provisioner.transport.reasons import connect_failure
from provisioner.transport.ssh import ConnectOptions, SSHHost
from tests.cli.helpers import KPROV, REPO, kprov, run

NOISE = ("Traceback", "Exception (client)", "Exception ignored", "paramiko.")


class FakeHost:
    """A TCP listener on 127.0.0.1 that treats each connection with `behave(conn)`."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self._conns: list[socket.socket] = []
        self._behave = behave
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted.set()
            self._behave(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()


def _garbage(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 20)
    conn.close()


def _close(conn: socket.socket) -> None:
    conn.close()


def _silent(conn: socket.socket) -> None:
    pass


def inventory(tmp_path: Path, port: int) -> Path:
    key = tmp_path / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "known_hosts").touch()
    doc = {
        "cluster": {"name": "fake", "kubernetes_version": "1.20.2", "cni": "bridge"},
        "defaults": {"user": "root", "port": port, "ssh_key": str(key), "known_hosts": str(tmp_path / "known_hosts")},
        "hosts": [{"name": "h1", "address": "127.0.0.1", "roles": ["control_plane"]}],
    }
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def fake_host() -> Iterator[Callable[[Callable[[socket.socket], None]], FakeHost]]:
    made: list[FakeHost] = []

    def make(behave: Callable[[socket.socket], None]) -> FakeHost:
        made.append(FakeHost(behave))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.mark.parametrize("behave", [_garbage, _close, _silent], ids=["non-ssh banner", "closed at once", "silent"])
def test_ssh_failures_are_one_line_without_traceback(tmp_path: Path, fake_host, behave) -> None:
    host = fake_host(behave)
    res = kprov("plan", "-i", str(inventory(tmp_path, host.port)), "--connect-timeout", "1")
    assert host.accepted.is_set()
    assert res.returncode != 0
    assert "h1" in res.stdout + res.stderr
    for noise in NOISE:
        assert noise not in res.stderr, res.stderr


def test_verbose_shows_the_ssh_library_log(tmp_path: Path, fake_host) -> None:
    host = fake_host(_garbage)
    res = kprov("plan", "-i", str(inventory(tmp_path, host.port)), "--connect-timeout", "1", "-v")
    assert res.returncode != 0
    assert "paramiko" in res.stderr


def _tgkill(pid: int, tid: int, signum: int) -> None:
    """Send `signum` to one thread of process `pid` (as the kernel may deliver a Ctrl-C to any thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def _worker_thread(pid: int) -> int:
    """A thread of `pid` that is not its main thread."""
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert tids, "kprov runs no worker thread"
    return tids[-1]


@pytest.mark.parametrize("target", ["process", "worker thread"])
def test_second_ctrl_c_exits_at_once(tmp_path: Path, fake_host, target: str) -> None:
    """Each Ctrl-C is noticed at once, also when the kernel hands it to a worker thread while the main
    thread waits for that worker: the first says it is stopping, the second exits."""
    host = fake_host(_silent)  # the connection waits for a banner that never comes (60 s)
    proc = subprocess.Popen(
        [str(KPROV), "plan", "-i", str(inventory(tmp_path, host.port)), "--connect-timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ctrl_c() -> None:
        if target == "process":
            proc.send_signal(signal.SIGINT)
        else:
            _tgkill(proc.pid, _worker_thread(proc.pid), signal.SIGINT)

    try:
        assert host.accepted.wait(60), "kprov never connected"
        ctrl_c()
        fd = proc.stderr.fileno()  # type: ignore[union-attr]
        first = b""
        while b"interrupted" not in first:
            # a guard, not a speed assertion: unnoticed, the Ctrl-C would wait for the 60 s banner timeout
            noticed, _, _ = select.select([fd], [], [], 30)
            assert noticed, f"the first Ctrl-C went unnoticed: {first!r}"
            chunk = os.read(fd, 4096)
            assert chunk, f"kprov exited after one Ctrl-C: {first!r}"
            first += chunk
        assert first.strip().startswith(b"interrupted: stopping"), first
        ctrl_c()
        proc.wait(timeout=30)  # a guard against hanging, not a speed assertion
        rest = first.decode() + proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    for noise in NOISE:
        assert noise not in rest, rest


SHIELDED = """
import signal, sys, threading
from provisioner.cli import main

main._install_ctrl_c()
seen = threading.Semaphore(0)
signal.signal(signal.SIGINT, lambda signum, frame: seen.release())  # e.g. ci-smoke's teardown shield
worker = threading.Thread(target=threading.Event().wait, daemon=True)
worker.start()
for _ in range(3):
    signal.pthread_kill(worker.ident, signal.SIGINT)  # the kernel's choice: a worker thread
    # the main thread waits on a lock: only a signal sent to it wakes it (a guard, not a speed assertion)
    if not seen.acquire(timeout=30):
        sys.exit("the shield's handler did not run")
print("survived")
"""


def test_ctrl_c_under_another_handler_is_not_counted() -> None:
    """While a command shields itself with its own SIGINT handler (ci-smoke's teardown must not be cut
    short), Ctrl-Cs go to that handler, even from a worker thread, and never exit the process."""
    res = run([sys.executable, "-c", SHIELDED], cwd=REPO, timeout=120)
    assert (res.returncode, res.stdout.strip()) == (0, "survived"), res.stderr


class FullBacklog:
    """A listener that never accepts, its accept queue already full: a new connection's SYN is dropped and
    the connect times out (as with a host behind a firewall that drops packets)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.queued = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def close(self) -> None:
        self.queued.close()
        self.sock.close()


def _refused_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound, never listened on, released: nothing listens there
    return port


def _connect(address: str, port: int, *, key: Path | None = None, known_hosts: Path | None = None) -> str:
    """Connect with kprov's transport (no retries) and return the one-line error it raises."""
    host = Host(
        name="h1",
        address=address,
        port=port,
        user="root",
        node_ip="10.9.9.1",
        ssh_key=str(key) if key else None,
        known_hosts=str(known_hosts) if known_hosts else None,
    )
    ssh = SSHHost(host, ConnectOptions(connect_timeout=2, connect_retries=0))
    try:
        with pytest.raises(KprovError) as err:
            ssh.connect()
    finally:
        ssh.close()
    assert "\n" not in err.value.message
    return err.value.message


@pytest.mark.parametrize(
    "case, reason",
    [
        ("refused", "connection refused (nothing listens on port {port}: is sshd running?)"),
        ("timeout", "connection timed out after 2s (host down, or the network drops the packets)"),
        ("closed at once", "the connection was closed before an SSH banner arrived"),
        ("non-ssh banner", "the connection was closed before an SSH banner arrived"),
        ("silent", "banner timeout: no SSH banner within 2s"),
    ],
)
def test_ssh_failures_name_their_reason(fake_host, case: str, reason: str) -> None:
    backlog = None
    if case == "refused":
        port = _refused_port()
    elif case == "timeout":
        backlog = FullBacklog()
        port = backlog.port
    else:
        port = fake_host({"closed at once": _close, "non-ssh banner": _garbage, "silent": _silent}[case]).port
    try:
        message = _connect("127.0.0.1", port)
    finally:
        if backlog is not None:
            backlog.close()
    assert message.startswith(f"h1: cannot connect to root@127.0.0.1:{port}: {reason.format(port=port)}"), message


@pytest.mark.netns
@pytest.mark.parametrize(
    "case, reason",
    [
        ("authentication failed", "h1: SSH authentication failed for root@"),
        ("host key changed", "h1: host key for {address} CHANGED"),
        ("host key unknown", "{address}: host key not known"),
    ],
)
def test_ssh_refusals_of_a_real_sshd_name_their_reason(
    netns_fleet, tmp_path: Path, monkeypatch, case: str, reason: str
) -> None:
    monkeypatch.setenv("KPROV_HOME", str(tmp_path / "home"))  # no kprov-wide known_hosts
    host = netns_fleet.hosts[0]
    key = netns_fleet.key
    known = tmp_path / "known_hosts"
    known.write_text(netns_fleet.known_hosts.read_text())
    if case == "authentication failed":
        key = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    elif case == "host key changed":
        other = tmp_path / "other_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        known.write_text(f"{host.address} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    else:
        known.write_text("")
    message = _connect(host.address, 22, key=key, known_hosts=known)
    assert message.startswith(reason.format(address=host.address)), message


def _raised(exc: BaseException, during: BaseException | None = None) -> BaseException:
    """`exc` as paramiko raises it: while handling `during` (its __context__)."""
    try:
        try:
            if during is not None:
                raise during
        finally:
            raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "exc, reason",
    [
        # the shapes paramiko gives for the same network events (seen under load: a reset instead of an EOF)
        (
            _raised(
                paramiko.SSHException("Error reading SSH protocol banner[Errno 104] Connection reset by peer"),
                ConnectionResetError(104, "Connection reset by peer"),
            ),
            "the connection was closed before an SSH banner",
        ),
        (
            _raised(paramiko.SSHException("Error reading SSH protocol banner"), EOFError()),
            "the connection was closed before an SSH banner",
        ),
        (
            _raised(paramiko.SSHException("Error reading SSH protocol banner"), TimeoutError()),
            "banner timeout: no SSH banner within 2s",
        ),
        (_raised(paramiko.SSHException("No existing session")), "banner timeout: no SSH banner within 2s"),
        (_raised(paramiko.SSHException('Indecipherable protocol version "HTTP/1.1"')), "not an SSH server on port 22"),
        (
            NoValidConnectionsError({("10.0.0.5", 22): ConnectionRefusedError(111, "Connection refused")}),
            "connection refused (nothing listens on port 22",
        ),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "no route to host"),
        (TimeoutError("timed out"), "connection timed out after 2s"),
        (paramiko.SSHException("something new"), "something new"),
    ],
)
def test_connect_failure_reasons(exc: BaseException, reason: str) -> None:
    assert connect_failure(exc, 22, 2).startswith(reason)
