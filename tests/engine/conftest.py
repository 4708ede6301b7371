"""Engine test helpers: run test roles with the real Runner on the netns sshd hosts, look at the hosts from outside."""

from __future__ import annotations

import itertools
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from provisioner.engine.events import Event, RunReport, Status
from provisioner.engine.roles import Play
from provisioner.engine.runner import Runner, RunOptions
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.reporting.sinks import TeeSink
from provisioner.testing.netns import NetnsFleet
from provisioner.transport.ssh import ConnectOptions, SSHHost

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
    """The netns hosts plus helpers to run roles on them and to observe them from outside."""

    netns: Any
    tmp: Path

    @property
    def names(self) -> list[str]:
        """The hosts most tests use: two are enough to show per-host behaviour and keep the suite fast."""
        return [h.name for h in self.netns.hosts][:2]

    @property
    def all_names(self) -> list[str]:
        return [h.name for h in self.netns.hosts]

    def inventory_path(self, mutate: Callable[[dict], None] | None = None, extra_hosts: list[dict] | None = None,
                       **overrides: Any) -> Path:
        """The fleet's inventory file; `mutate(doc)` edits the YAML document before it is written."""
        path = self.netns.inventory(self.tmp / f"inv-{next(_counter)}.yaml", extra_hosts=extra_hosts, **overrides)
        if mutate is not None:
            doc = yaml.safe_load(path.read_text())
            mutate(doc)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def inventory(self, mutate: Callable[[dict], None] | None = None, extra_hosts: list[dict] | None = None,
                  **overrides: Any) -> Inventory:
        return load_inventory(self.inventory_path(mutate, extra_hosts, **overrides))

    def run(self, roles: list[str] | str, inv: Inventory | None = None, *, hosts: str | None = None,
            count: bool = False, connect: ConnectOptions | None = None, also: tuple = (), **opts: Any) -> Outcome:
        """Run test roles with the real Runner; `also` = more sinks (console, JSON) fed the same events."""
        inv = inv or self.inventory()
        sink = ListSink()
        options = RunOptions(connect=connect or ConnectOptions(connect_timeout=5, connect_retries=0), **opts)
        connector = None
        if count:
            CountingSSH.counts = {}
            connector = lambda h: CountingSSH(h, options.connect)  # noqa: E731
        runner = Runner(inv, options, TeeSink(sink, *also) if also else sink, roles_dir=ROLES, templates_dir=TEMPLATES, connector=connector)
        try:
            hosts = hosts or ",".join(self.names)
            plays = [Play(role=r, hosts=hosts) for r in ([roles] if isinstance(roles, str) else roles)]
            report = runner.run(plays)
        finally:
            runner.close()
        for extra in also:
            extra.recap(report)
        return Outcome(report, sink, dict(CountingSSH.counts) if count else {})

    def pid(self, name: str) -> int:
        return next(h.pid for h in self.netns.hosts if h.name == name)

    def sh(self, name: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside host `name`'s namespaces (its own /tmp), not through kprov."""
        return subprocess.run(["nsenter", "-t", str(self.pid(name)), "-m", "-u", "-n", "--", "sh", "-c", script],
                              capture_output=True, text=True, check=check, timeout=30)

    def put(self, name: str, path: str, data: bytes) -> None:
        """Write bytes to a file on host `name` (its own /tmp), not through kprov."""
        subprocess.run(["nsenter", "-t", str(self.pid(name)), "-m", "-u", "-n", "--", "sh", "-c", 'cat > "$0"', path],
                       input=data, check=True, timeout=60)

    def read(self, name: str, path: str) -> str | None:
        p = self.sh(name, f"cat -- '{path}'", check=False)
        return p.stdout if p.returncode == 0 else None

    def exists(self, name: str, path: str) -> bool:
        return self.sh(name, f"test -e '{path}' || test -L '{path}'", check=False).returncode == 0

    def stat(self, name: str, path: str) -> str:
        return self.sh(name, f"stat -c '%F|%a' -- '{path}'").stdout.strip()


PREFIX, SUBNET = "kpe", "10.239.4"


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


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> Fleet:
    """Four real sshd hosts (the `netns_fleet` machinery) under this suite's own prefix and subnet,
    so that other suites using `netns_fleet` at the same time do not tear ours down."""
    from tests.fixtures.netns import _netns_unavailable

    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    netns = NetnsFleet(prefix=PREFIX, subnet=SUBNET)
    _reap(PREFIX)
    try:
        netns.up(4)
        yield Fleet(netns, tmp_path_factory.mktemp("fleet"))
    finally:
        _reap(PREFIX)
        netns.down()


@pytest.fixture
def workdir(fleet: Fleet, request) -> str:
    """A fresh directory under /tmp on every host for this test (cleaned up before use)."""
    safe = "".join(c if c.isalnum() else "_" for c in request.node.name)[:80]
    path = f"/tmp/kt/{safe}"
    for name in fleet.all_names:
        fleet.sh(name, f"rm -rf '{path}' && mkdir -p /tmp/kt")
    return path
