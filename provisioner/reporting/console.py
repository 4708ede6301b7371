"""Human progress for run commands: live on a terminal, a heartbeat in logs, and a recap with wall times.

On a terminal a rich live panel shows, per host, the role running now, the last task it finished and
the role's elapsed time, and a progress bar (bytes, rate) while a file (the bundle) is uploaded to it. Without a terminal (CI logs) nothing is redrawn: changed/failed lines as they
come, and a heartbeat line at most every HEARTBEAT_S seconds naming what still runs on which hosts (with the
bytes and rate of an upload in progress), so a log is never silent for long; lines are never hard-wrapped. Identical diffs of one task on many hosts are
printed once, with the list of hosts. NO_COLOR is honoured (rich reads it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from provisioner.engine.events import Event, RunReport, Status
from provisioner.reporting.sinks import LONG_STEP_MS, ConsoleSink, _escape

#: longest silence in non-terminal output
HEARTBEAT_S = 10.0


def make_console(stderr: bool = False) -> Console:
    """A console that never hard-wraps when it is not a terminal (log lines stay whole)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, soft_wrap=True, width=max(probe.width, 200), highlight=False)


def _hosts(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    more = f" +{len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def group_diffs(events: Iterable[Event]) -> list[tuple[str, str, list[str]]]:
    """(task, diff, hosts) with each distinct diff of a task once, hosts in the order they reported it."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for ev in events:
        if ev.diff:
            grouped.setdefault((ev.task, ev.diff), []).append(ev.host)
    return [(task, diff, hosts) for (task, diff), hosts in grouped.items()]


@dataclass(frozen=True)
class UploadProgress:
    """An upload in progress on one host, as the engine reports it (engine/transfer.py)."""

    task: str
    done: int
    total: int
    #: bytes already there when it (re)started (a resumed upload), and when
    first: int
    started: float
    at: float

    @property
    def rate(self) -> float:
        """Bytes per second since it started (0 until there is a measure)."""
        return (self.done - self.first) / (self.at - self.started) if self.at > self.started else 0.0

    def describe(self) -> str:
        """`uploading 120.0/562.0 MiB at 41.2 MiB/s` (`uploaded 562.0 MiB, verifying` when complete)."""
        if self.done >= self.total:
            return f"uploaded {_size(self.total)}, verifying"
        rate = f" at {_size(self.rate)}/s" if self.rate else ""
        return f"uploading {_size(self.done, self.total)}{rate}"


def _size(n: float, total: float | None = None) -> str:
    scale = total if total is not None else n
    unit, div = next(
        (u, d) for u, d in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)) if scale >= d or d == 1
    )
    fmt = (lambda v: f"{v / div:.1f}") if div > 1 else (lambda v: f"{v:.0f}")
    return f"{fmt(n)}/{fmt(total)} {unit}" if total is not None else f"{fmt(n)} {unit}"


class ProgressConsole(ConsoleSink):
    """ConsoleSink with live progress (terminal) or heartbeats (logs), grouped diffs and timed recap."""

    def __init__(
        self,
        console: Console | None = None,
        verbose: int = 0,
        show_diff: bool = False,
        heartbeat_s: float = HEARTBEAT_S,
        live: bool | None = None,
    ) -> None:
        console = console or make_console()
        super().__init__(console=console, verbose=verbose, show_diff=show_diff)
        self.heartbeat_s = heartbeat_s
        self.live_enabled = console.is_terminal if live is None else live
        self._role: str | None = None
        self._role_started = 0.0
        self._running: dict[str, str] = {}  # host -> last finished task ("" = none yet)
        self._done: set[str] = set()
        self._diffs: list[Event] = []
        self._uploads: dict[str, UploadProgress] = {}  # host -> its upload in progress
        self._current: dict[str, tuple[str, float]] = {}  # host -> (the task running now, since when)
        self._last_output = time.monotonic()
        #: host -> [first play it was in started, its last event]: the host's wall time in the run
        self._host_span: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._live: Live | None = None
        self._thread: threading.Thread | None = None

    # -- the sink protocol ----------------------------------------------------------------------
    def play_start(self, role: str, hosts: list[str]) -> None:
        with self._lock:
            self._role, self._role_started = role, time.monotonic()
            self._running = dict.fromkeys(hosts, "")
            self._done = set()
            for h in hosts:
                self._host_span.setdefault(h, [self._role_started, self._role_started])
        super().play_start(role, hosts)
        self._touch()
        self._start_ticker()

    def emit(self, ev: Event) -> None:
        with self._lock:
            now = time.monotonic()
            self._host_span.setdefault(ev.host, [now - ev.duration_ms / 1000, now])[1] = now
            if ev.host in self._running:
                self._running[ev.host] = ev.task
            self._uploads.pop(ev.host, None)
            self._current.pop(ev.host, None)
            if ev.status in (Status.FAILED, Status.UNREACHABLE):
                self._done.add(ev.host)
            if ev.diff and (self.show_diff or self.verbose):
                self._diffs.append(ev)
        # diffs are printed grouped at the end of the play
        plain = Event(ev.host, ev.role, ev.task, ev.status, ev.changed, ev.duration_ms, ev.msg, "", ev.stderr_tail)
        super().emit(plain)
        if ev.status not in (Status.OK, Status.SKIPPED) or self.verbose or ev.duration_ms >= LONG_STEP_MS:
            self._touch()

    def task_start(self, host: str, task: str) -> None:
        """A task starts on `host` (the engine calls it for tasks that run on their own, not batched ones)."""
        with self._lock:
            self._current[host] = (task, time.monotonic())

    def transfer(self, host: str, task: str, done: int, total: int) -> None:
        """Byte progress of an upload to `host` (the engine calls it after each chunk sent)."""
        now = time.monotonic()
        with self._lock:
            up = self._uploads.get(host)
            if up is None or up.task != task or done < up.done:
                up = UploadProgress(task, done, total, first=done, started=now, at=now)
            self._uploads[host] = replace(up, done=done, total=total, at=now)

    def play_end(self, role: str, duration_s: float) -> None:
        with self._lock:
            self._uploads = {}
            self._current = {}
            diffs, self._diffs = self._diffs, []
            self._running = {}
            self._role = None
        for task, diff, hosts in group_diffs(diffs):
            self.console.print(
                f"  [dim]diff of {_escape(task)} on {len(hosts)} host(s): {_escape(_hosts(hosts, 20))}[/dim]",
                soft_wrap=True,
            )
            for line in diff.rstrip().splitlines():
                color = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
                self.console.print(f"      [{color}]{_escape(line)}[/{color}]", soft_wrap=True)
        if duration_s >= 5:
            self.console.print(f"  [dim]{_escape(role)} took {duration_s:.1f}s[/dim]")
        self._touch()

    def recap(self, report: RunReport, title: str = "RECAP") -> None:
        self._stop_ticker()
        table = Table(title=title, title_justify="left", show_edge=False)
        for col in ("host", "ok", "changed", "failed", "skipped", "unreachable", "time"):
            table.add_column(col, justify="left" if col == "host" else "right")
        for host, r in sorted(report.hosts.items()):
            table.add_row(
                host,
                str(r.ok),
                _count(r.changed, "yellow"),
                _count(r.failed, "red"),
                str(r.skipped),
                _count(r.unreachable, "magenta"),
                self._wall(host),
            )
        self.console.print(table)
        if report.role_times:
            times = "  ".join(f"{role} {secs:.1f}s" for role, secs in report.role_times.items())
            self.console.print(f"[dim]wall time per role: {times}[/dim]", soft_wrap=True)
        end = report.finished or time.monotonic()
        self.console.print(f"[dim]total wall time: {end - report.started:.1f}s[/dim]")
        for host, r in sorted(report.hosts.items()):
            if r.first_error:
                self.console.print(f"[red]{host}: {_escape(r.first_error)}[/red]", soft_wrap=True)
        if report.stopped:
            self.console.print(f"[bold red]{_escape(report.stopped)}[/bold red]", soft_wrap=True, highlight=False)

    def _wall(self, host: str) -> str:
        span = self._host_span.get(host)
        return f"{span[1] - span[0]:.1f}s" if span else "-"

    # -- progress -------------------------------------------------------------------------------
    def _touch(self) -> None:
        self._last_output = time.monotonic()

    def _start_ticker(self) -> None:
        if self._thread is not None or self._live is not None:  # one ticker for the whole run
            return
        if self.live_enabled:
            self._live = Live(console=self.console, refresh_per_second=4, transient=True, get_renderable=self.panel)
            self._live.start()
            return
        self._thread = threading.Thread(target=self._heartbeat_loop, name="kprov-heartbeat", daemon=True)
        self._thread.start()

    def _stop_ticker(self) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(1.0):
            line = None
            with self._lock:
                quiet = time.monotonic() - self._last_output
                if self._role is not None and quiet >= self.heartbeat_s:
                    line = self.heartbeat_line()
            if line:
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
                self._touch()

    def heartbeat_line(self) -> str:
        """`... still running: ROLE on h1 (after TASK), h2 (starting) - 23s`"""
        hosts = [h for h in self._running if h not in self._done]
        detail = ", ".join(f"{h} ({self._doing(h)})" for h in hosts[:8])
        more = f" +{len(hosts) - 8} more" if len(hosts) > 8 else ""
        elapsed = time.monotonic() - self._role_started
        return f"... still running: {self._role} on {len(hosts)} host(s): {detail}{more} - {elapsed:.0f}s"

    def _doing(self, host: str) -> str:
        up = self._uploads.get(host)
        if up is not None:
            return up.describe()
        current = self._current.get(host)
        if current is not None:
            return f"running {current[0]} for {time.monotonic() - current[1]:.0f}s"
        task = self._running.get(host, "")
        return f"after {task}" if task else "starting"

    def panel(self) -> Group:
        # no self._lock here: rich calls this while console.print holds its own lock (from emit, under
        # self._lock); dict() copies atomically under the GIL
        role, running, started = self._role, dict(self._running), self._role_started
        uploads, current = dict(self._uploads), dict(self._current)
        if role is None:
            return Group()
        table = Table.grid(padding=(0, 2))
        elapsed = time.monotonic() - started
        for host, task in list(running.items())[:30]:
            up, now = uploads.get(host), current.get(host)
            doing = (
                Text(up.task)
                if up
                else Text(f"{now[0]} ({time.monotonic() - now[1]:.0f}s)")
                if now
                else Text(task or "starting", style="dim")
            )
            cells: list[RenderableType] = [
                Text(host, style="bold"),
                Text(role, style="cyan"),
                doing,
                Text(f"{elapsed:.0f}s", style="dim"),
            ]
            if up is not None:
                cells += [
                    ProgressBar(total=max(up.total, 1), completed=up.done, width=30),
                    Text(up.describe(), style="dim"),
                ]
            table.add_row(*cells)
        more = Text(f"... {len(running) - 30} more hosts", style="dim") if len(running) > 30 else Text("")
        return Group(table, more)


def _count(n: int, color: str) -> str:
    return f"[{color}]{n}[/{color}]" if n else "0"
