"""Engine test helpers: run test roles with the real Runner on the netns sshd hosts, look at the hosts from outside."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.engine.events import Event, RunReport, Status
from provisioner.engine.roles import Play
from provisioner.engine.runner import Runner, RunOptions
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.reporting.sinks import TeeSink
from provisioner.transport.ssh import ConnectOptions, SSHHost
from tests.fixtures.netns_fleet import NetnsFleet

ROLES = Path(__file__).parent / "roles"
TEMPLATES = Path(__file__).parent / "templates"
_counter = itertools.count()


class ListSink:
    """Collects events (thread-safe) like the console/JSON sinks would receive them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.plays: list[str] = []
        self._lock = threading.Lock()

    def play_start(self, role: str, hosts: list[str]) -> None:
        self.plays.append(role)

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def play_end(self, role: str, duration_s: float) -> None:
        pass


class CountingSSH(SSHHost):
    """The real SSH transport, counting command round trips per host."""

    counts: dict[str, int] = {}
    _lock = threading.Lock()

    def connect(self) -> None:
        with self._lock:
            CountingSSH.counts[f"connect:{self.host.name}"] = CountingSSH.counts.get(f"connect:{self.host.name}", 0) + 1
        super().connect()

    def exec(self, command: str, **kw: Any):  # type: ignore[override]
        with self._lock:
            CountingSSH.counts[self.host.name] = CountingSSH.counts.get(self.host.name, 0) + 1
        return super().exec(command, **kw)


@dataclass
class Outcome:
    report: RunReport
    sink: ListSink
    exec_counts: dict[str, int] = field(default_factory=dict)

    def events(self, host: str | None = None, task: str | None = None) -> list[Event]:
        return [e for e in self.sink.events if (host is None or e.host == host) and (task is None or e.task == task)]

    def status(self, host: str, task: str) -> Status:
        evs = self.events(host, task)
        assert len(evs) == 1, f"{host} / {task}: {evs}"
        return evs[0].status

    def changed(self, host: str | None = None) -> int:
        return sum(1 for e in self.events(host) if e.changed)

    @property
    def exit_status(self) -> int:
        return int(self.report.exit_status())


@dataclass
class Fleet:
    """The netns hosts plus helpers to run roles on them and to observe them from outside.

    The hosts' real names carry a per-session prefix; inventories name them kpe-1..kpe-4 (aliases)."""

    netns: Any
    tmp: Path

    def host(self, alias: str) -> Any:
        return self.netns.hosts[int(alias.rsplit("-", 1)[1]) - 1]

    def hostname(self, alias: str) -> str:
        """The host's real hostname (what `hostname` prints on it)."""
        return self.host(alias).name

    @property
    def names(self) -> list[str]:
        """The hosts most tests use: two are enough to show per-host behaviour and keep the suite fast."""
        return self.all_names[:2]

    @property
    def all_names(self) -> list[str]:
        return [f"kpe-{i + 1}" for i in range(len(self.netns.hosts))]

    def inventory_path(
        self, mutate: Callable[[dict], None] | None = None, extra_hosts: list[dict] | None = None, **overrides: Any
    ) -> Path:
        """The fleet's inventory file; `mutate(doc)` edits the YAML document before it is written."""
        path = self.netns.inventory(self.tmp / f"inv-{next(_counter)}.yaml", extra_hosts=extra_hosts, **overrides)
        doc = yaml.safe_load(path.read_text())
        alias = {h.name: f"kpe-{i + 1}" for i, h in enumerate(self.netns.hosts)}
        for h in doc["hosts"]:
            h["name"] = alias.get(h["name"], h["name"])
        if mutate is not None:
            mutate(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def inventory(
        self, mutate: Callable[[dict], None] | None = None, extra_hosts: list[dict] | None = None, **overrides: Any
    ) -> Inventory:
        return load_inventory(self.inventory_path(mutate, extra_hosts, **overrides))

    def run(
        self,
        roles: list[str] | str,
        inv: Inventory | None = None,
        *,
        hosts: str | None = None,
        count: bool = False,
        connect: ConnectOptions | None = None,
        also: tuple = (),
        **opts: Any,
    ) -> Outcome:
        """Run test roles with the real Runner; `also` = more sinks (console, JSON) fed the same events."""
        inv = inv or self.inventory()
        sink = ListSink()
        options = RunOptions(connect=connect or ConnectOptions(connect_timeout=5, connect_retries=0), **opts)
        connector = None
        if count:
            CountingSSH.counts = {}
            connector = lambda h: CountingSSH(h, options.connect)  # noqa: E731
        runner = Runner(
            inv,
            options,
            TeeSink(sink, *also) if also else sink,
            roles_dir=ROLES,
            templates_dir=TEMPLATES,
            connector=connector,
        )
        try:
            hosts = hosts or ",".join(self.names)
            plays = [Play(role=r, hosts=hosts) for r in ([roles] if isinstance(roles, str) else roles)]
            report = runner.run(plays)
        finally:
            runner.close()
        for extra in also:
            extra.recap(report)
        counts = {k: v for k, v in CountingSSH.counts.items() if not k.startswith("connect:")}
        return Outcome(report, sink, counts if count else {})

    def pid(self, name: str) -> int:
        return self.host(name).pid

    def sh(self, name: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside host `name`'s namespaces (its own /tmp), not through kprov."""
        return subprocess.run(
            ["nsenter", "-t", str(self.pid(name)), "-m", "-u", "-n", "--", "sh", "-c", script],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def put(self, name: str, path: str, data: bytes) -> None:
        """Write bytes to a file on host `name` (its own /tmp), not through kprov."""
        subprocess.run(
            ["nsenter", "-t", str(self.pid(name)), "-m", "-u", "-n", "--", "sh", "-c", 'cat > "$0"', path],
            input=data,
            check=True,
            timeout=60,
        )

    def read(self, name: str, path: str) -> str | None:
        p = self.sh(name, f"cat -- '{path}'", check=False)
        return p.stdout if p.returncode == 0 else None

    def exists(self, name: str, path: str) -> bool:
        return self.sh(name, f"test -e '{path}' || test -L '{path}'", check=False).returncode == 0

    def stat(self, name: str, path: str) -> str:
        return self.sh(name, f"stat -c '%F|%a' -- '{path}'").stdout.strip()


def _session_prefix(letters: str) -> str:
    """Per-process names: several test sessions (people share this machine) must not tear down each other's hosts."""
    return f"{letters}{os.getpid() % 100000}"


def _free_subnet(start: int) -> str:
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for k in range(200):
        candidate = f"10.239.{20 + (start + k) % 200}"
        if f" {candidate}." not in used:
            return candidate
    raise RuntimeError("no free 10.239.x.0/24 subnet for the netns fleet")


def _reap(prefix: str) -> None:
    """Kill whatever still lives in our namespaces (sshd session processes setsid() away from the
    listener's process group and survive NetnsFleet.down(), keeping the netns and its veth alive)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for ns in [n for n in names if n.startswith(f"{prefix}-")]:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        dev = line.split(":")[1].strip().split("@")[0]
        if dev.startswith(f"{prefix}-") and dev.endswith("h"):
            subprocess.run(["ip", "link", "del", dev], capture_output=True)


def _reap_dead_sessions(letters: str) -> None:
    """Remove fleets left behind by killed test sessions (their PID is in the prefix)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for prefix in {n.split("-")[0] for n in names if re.fullmatch(rf"{letters}\d+-\d+", n)}:
        pid = int(prefix[len(letters) :])
        if pid != os.getpid() % 100000 and not Path(f"/proc/{pid}").exists():
            _reap(prefix)
            NetnsFleet(prefix=prefix).down()


def _hide_operator_bashrc(netns: NetnsFleet) -> None:
    """bash sources ~/.bashrc for commands run by sshd; the hosts share this machine's /root, whose
    .bashrc may be slow (pyenv init: ~150 ms per command). Hide it in each host's own mount namespace
    so a host costs what a fresh Debian host costs."""
    for h in netns.hosts:
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(h.pid),
                "-m",
                "--",
                "sh",
                "-c",
                "[ ! -e /root/.bashrc ] || mount --bind /dev/null /root/.bashrc",
            ],
            check=True,
            timeout=30,
        )


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> Fleet:
    """Four real sshd hosts (the `netns_fleet` machinery) under this suite's own prefix and subnet,
    so that other suites using `netns_fleet` at the same time do not tear ours down."""
    from tests.fixtures.netns import _netns_unavailable

    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    _reap_dead_sessions("ke")
    prefix = _session_prefix("ke")
    netns = NetnsFleet(prefix=prefix, subnet=_free_subnet(os.getpid()))
    _reap(prefix)
    try:
        netns.up(4)
        _hide_operator_bashrc(netns)
        yield Fleet(netns, tmp_path_factory.mktemp("fleet"))
    finally:
        _reap(prefix)
        netns.down()


@pytest.fixture
def workdir(fleet: Fleet, request) -> str:
    """A fresh directory under /tmp on every host for this test (cleaned up before use)."""
    safe = "".join(c if c.isalnum() else "_" for c in request.node.name)[:80]
    path = f"/tmp/kt/{safe}"
    for name in fleet.all_names:
        fleet.sh(name, f"rm -rf '{path}' && mkdir -p /tmp/kt")
    return path
