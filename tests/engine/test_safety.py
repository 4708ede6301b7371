"""Bounded waits and bounded channels, on real sshd hosts with the distribution's default settings.

- sshd allows 10 sessions per connection (MaxSessions): many hosts delegating to one host at once
  queue on kprov's side instead of being refused, and a refusal is never blamed on the delegating host;
- every remote step has a time limit, and a step that ends early (timeout, kprov killed or
  interrupted, session cut) leaves no process behind on the host.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from provisioner.engine.events import Status
from provisioner.errors import CommandTimedOut, HostConnectionError
from provisioner.transport.ssh import ConnectOptions, SSHHost
from tests.engine.conftest import Fleet

H1 = "kpe-1"

pytestmark = pytest.mark.netns


def _token() -> str:
    """A sleep length no other process on this machine uses: how we find our process on the host."""
    return str(random.randint(40000, 49999))


def _sleepers(token: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"^sleep {token}$"], capture_output=True, text=True).stdout
    return out.split()


def _wait_gone(token: str, within: float = 20.0) -> list[str]:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not _sleepers(token):
            return []
        time.sleep(0.2)
    return _sleepers(token)


def _wait_started(token: str, within: float = 20.0) -> None:
    end = time.monotonic() + within
    while not _sleepers(token):
        assert time.monotonic() < end, "the remote command never started"
        time.sleep(0.1)


@pytest.fixture()
def ssh(fleet: Fleet):
    inv = fleet.inventory()
    host = SSHHost(inv.host(H1), ConnectOptions(connect_timeout=5, connect_retries=0))
    host.connect()
    yield host
    host.close()


def test_more_concurrent_commands_than_max_sessions_all_succeed(ssh):
    """30 commands at once on one connection (sshd allows 10): they queue, none is refused."""
    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(lambda i: ssh.script(f"sleep 0.5; echo {i}"), range(30)))
    assert [r.rc for r in results] == [0] * 30
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(30)]


def test_a_hanging_step_fails_within_its_limit_and_leaves_no_process(fleet, workdir):
    token = _token()
    out = fleet.run("sleepy", hosts=H1, extra_vars={"dir": workdir, "token": token})
    (ev,) = out.events(H1)
    assert ev.status is Status.FAILED and "timed out after 2s" in ev.msg
    assert _wait_gone(token) == []


def test_script_timeout_kills_the_whole_process_group(ssh):
    token = _token()
    with pytest.raises(CommandTimedOut, match="timed out after 2s"):
        ssh.script(f"sh -c 'sleep {token}' & sleep {token}; wait", timeout=2)
    assert _wait_gone(token) == []


def test_a_cut_session_fails_at_once_and_leaves_no_process(fleet, ssh):
    """The host's sshd session process dies mid-command: the step fails, nothing keeps running."""
    token = _token()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ssh.script(f"sleep {token}", timeout=120)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    _wait_started(token)
    # the session's sshd is the parent of the guard's shell, the grandparent of our sleep
    sleep_pid = _sleepers(token)[0]
    chain = [sleep_pid]
    for _ in range(4):
        chain.append(
            subprocess.run(["ps", "-o", "ppid=", "-p", chain[-1]], capture_output=True, text=True).stdout.strip()
        )
    comms = {
        p: subprocess.run(["ps", "-o", "args=", "-p", p], capture_output=True, text=True).stdout.strip()
        for p in chain
        if p
    }
    session = next(p for p, c in comms.items() if c.startswith("sshd:"))
    os.kill(int(session), signal.SIGKILL)
    t.join(timeout=60)
    assert not t.is_alive(), "the step kept waiting on a dead session"
    assert errors and isinstance(errors[0], HostConnectionError), errors
    assert _wait_gone(token) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_kprov_going_away_mid_command_leaves_no_process(fleet, sig):
    """kprov interrupted (Ctrl-C) or killed while a command runs: the host stops the command."""
    token = _token()
    inv_path = fleet.inventory_path()
    code = textwrap.dedent(f"""
        from provisioner.inventory.loader import load_inventory
        from provisioner.transport.ssh import ConnectOptions, SSHHost
        h = SSHHost(load_inventory({str(inv_path)!r}).host({H1!r}), ConnectOptions(connect_timeout=5))
        h.connect()
        h.script("sleep {token}", timeout=600)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_started(token)
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert _wait_gone(token) == []


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """13 sshd hosts with the distribution's default sshd settings (MaxSessions 10)."""
    from tests.engine.conftest import _free_subnet, _reap, _reap_dead_sessions, _session_prefix
    from tests.fixtures.netns import _netns_unavailable
    from tests.fixtures.netns_fleet import NetnsFleet

    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    _reap_dead_sessions("kc")
    prefix = _session_prefix("kc")
    netns = NetnsFleet(prefix=prefix, subnet=_free_subnet(os.getpid() + 50))
    _reap(prefix)
    try:
        netns.up(13)
        yield Fleet(netns, tmp_path_factory.mktemp("crowd"))
    finally:
        _reap(prefix)
        netns.down()


def test_thirteen_hosts_delegating_to_one_host_at_once(crowd):
    out = crowd.run("delegating", hosts=",".join(crowd.all_names), extra_vars={"target": "kpe-1"})
    assert out.exit_status == 0, [(e.host, e.status, e.msg) for e in out.sink.events if e.status is not Status.OK]
    assert {e.host for e in out.events(task="delegating | the answer came back")} == set(crowd.all_names)


def test_a_dead_delegate_is_reported_against_itself(fleet, workdir):
    ghost = {"name": "ghost", "address": "127.0.0.1", "port": 1, "roles": ["worker"]}
    inv = fleet.inventory(extra_hosts=[ghost])
    out = fleet.run("delegating", inv, hosts=H1, extra_vars={"target": "ghost"})
    (ev,) = out.events(H1)
    assert ev.status is Status.FAILED and "delegate host ghost is unreachable" in ev.msg
    assert [e.status for e in out.events("ghost")] == [Status.UNREACHABLE]


def test_user_ssh_config_is_not_read(fleet, tmp_path, monkeypatch):
    """A ProxyJump (or any rewrite) in ~/.ssh/config never changes how kprov reaches a host: the
    inventory is the whole truth, and a jump host is a `bastion:` verified like any host."""
    inv = fleet.inventory()
    host = inv.host(H1)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        f"Host {host.address}\n  ProxyJump root@127.0.0.1:1\n  Port 2\n  User nobody\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    ssh = SSHHost(host, ConnectOptions(connect_timeout=5, connect_retries=0))
    try:
        ssh.connect()
        assert ssh.script("echo direct").stdout.strip() == "direct"
    finally:
        ssh.close()


def test_run_once_runs_on_one_host_and_shares_its_result(crowd):
    crowd.netns.hosts  # noqa: B018 - the crowd is up
    target = "kpe-1"
    workdir = f"/tmp/once-{_token()}"
    crowd.sh(target, f"mkdir -p {workdir}")
    out = crowd.run("once", hosts=",".join(crowd.all_names), extra_vars={"target": target, "dir": workdir})
    assert out.exit_status == 0, [(e.host, e.msg) for e in out.sink.events if e.status is Status.FAILED]
    minted = crowd.read(target, f"{workdir}/minted").splitlines()
    assert len(minted) == 1  # minted once for 13 hosts
    got = {crowd.read(target, f"{workdir}/got-{n}") for n in crowd.all_names}
    assert got == {minted[0]}  # and every host got that one result
    first = out.events(task="once | mint something on the first host, once for everybody")
    assert sum(e.changed for e in first) == 1 and minted[0] not in " ".join(e.msg for e in first)


def test_identical_read_only_asks_to_one_host_share_one_run(crowd):
    target = "kpe-1"
    workdir = f"/tmp/asking-{_token()}"
    crowd.sh(target, f"mkdir -p {workdir}")
    out = crowd.run("asking", hosts=",".join(crowd.all_names), extra_vars={"target": target, "dir": workdir})
    assert out.exit_status == 0, [(e.host, e.msg) for e in out.sink.events if e.status is Status.FAILED]
    runs = len(crowd.read(target, f"{workdir}/asked").splitlines())
    # 13 asks arriving together ran far fewer times than 13 (once, unless a host arrived after the first
    # answer: then it asks again, which is what a retry must do)
    assert 1 <= runs <= 4, runs
