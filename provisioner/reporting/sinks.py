"""Event sinks: live console progress + recap (rich), and JSON lines for machines."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from typing import IO

from rich.console import Console
from rich.table import Table

from provisioner.engine.events import Event, RunReport, Status
from provisioner.errors import InputError

#: the --log-file holds every task's message and host names: readable by its owner only
LOG_FILE_MODE = 0o600
#: a task that took this long is shown with its wall time (and shown at all, even when ok)
LONG_STEP_MS = 5000

_STYLE = {
    Status.OK: "green",
    Status.CHANGED: "yellow",
    Status.FAILED: "bold red",
    Status.SKIPPED: "cyan",
    Status.UNREACHABLE: "bold magenta",
}


class ConsoleSink:
    """Human output. On a TTY: one line per changed/failed task plus a role header; `-v` shows all."""

    def __init__(self, console: Console | None = None, verbose: int = 0, show_diff: bool = False) -> None:
        self.console = console or Console(stderr=False, highlight=False)
        self.verbose = verbose
        self.show_diff = show_diff
        self._lock = threading.Lock()

    def play_start(self, role: str, hosts: list[str]) -> None:
        if not hosts:  # a play for hosts this inventory has none of (join on a 1-node cluster): nothing to show
            return
        with self._lock:
            self.console.print(f"[bold]ROLE {role}[/bold] [dim]on {len(hosts)} host(s)[/dim]")

    def emit(self, ev: Event) -> None:
        # a long step (kubeadm init, a join, image imports, a wait) always shows its wall time, even when ok
        long = ev.duration_ms >= LONG_STEP_MS and ev.status is not Status.SKIPPED
        if ev.status in (Status.OK, Status.SKIPPED) and self.verbose == 0 and not long:
            return
        with self._lock:
            style = _STYLE[ev.status]
            line = f"  [{style}]{ev.status.value:<11}[/{style}] {_escape(ev.host):<16} {_escape(ev.task)}"
            if ev.msg:
                msg = ev.msg if self.verbose else _one_line(ev.msg)
                line += f" [dim]- {_escape(msg)}[/dim]"
            if long:
                line += f" [dim]({ev.duration_ms / 1000:.1f}s)[/dim]"
            self.console.print(line, markup=True, highlight=False, soft_wrap=True)
            if ev.stderr_tail and ev.status is Status.FAILED:
                for tail_line in ev.stderr_tail.splitlines()[-20:]:
                    self.console.print(f"      | {tail_line}", markup=False, highlight=False)
            if ev.diff and (self.show_diff or self.verbose):
                for diff_line in ev.diff.rstrip().splitlines():
                    color = "green" if diff_line.startswith("+") else "red" if diff_line.startswith("-") else "dim"
                    self.console.print(f"      [{color}]{_escape(diff_line)}[/{color}]")

    def play_end(self, role: str, duration_s: float) -> None:
        pass

    def recap(self, report: RunReport, title: str = "RECAP") -> None:
        table = Table(title=title, title_justify="left", show_edge=False)
        for col in ("host", "ok", "changed", "failed", "skipped", "unreachable"):
            table.add_column(col, justify="left" if col == "host" else "right")
        for host, r in sorted(report.hosts.items()):
            table.add_row(
                host,
                str(r.ok),
                _c(r.changed, "yellow"),
                _c(r.failed, "red"),
                str(r.skipped),
                _c(r.unreachable, "magenta"),
            )
        self.console.print(table)
        if report.role_times:
            times = "  ".join(f"{role} {secs:.1f}s" for role, secs in report.role_times.items())
            self.console.print(f"[dim]wall time per role: {times}[/dim]")
        for host, r in sorted(report.hosts.items()):
            if r.first_error:
                self.console.print(f"[red]{host}: {_escape(r.first_error)}[/red]")
        if report.stopped:
            self.console.print(f"[bold red]{_escape(report.stopped)}[/bold red]", soft_wrap=True, highlight=False)


def _c(n: int, color: str) -> str:
    return f"[{color}]{n}[/{color}]" if n else "0"


def _one_line(msg: str) -> str:
    """A task's message on its line: a multi-line one (a command's script) shows its first line and a count."""
    lines = [x for x in msg.strip().splitlines() if x.strip()]
    if len(lines) <= 1:
        return msg.strip()
    return f"{lines[0]} ... (+{len(lines) - 1} lines, -v shows them)"


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


class JsonSink:
    """One JSON object per line on stdout: host, role, task, status, changed, duration_ms, msg."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def play_start(self, role: str, hosts: list[str]) -> None:
        pass

    def emit(self, ev: Event) -> None:
        with self._lock:
            self.stream.write(json.dumps(ev.as_json()) + "\n")
            self.stream.flush()

    def play_end(self, role: str, duration_s: float) -> None:
        pass

    def recap(self, report: RunReport, title: str = "RECAP") -> None:
        with self._lock:
            for host, r in sorted(report.hosts.items()):
                self.stream.write(
                    json.dumps(
                        {
                            "recap": host,
                            "host": host,
                            "ok": r.ok,
                            "changed": r.changed,
                            "failed": r.failed,
                            "skipped": r.skipped,
                            "unreachable": r.unreachable,
                        }
                    )
                    + "\n"
                )
            if report.stopped:
                self.stream.write(json.dumps({"stopped": report.stopped}) + "\n")
            self.stream.flush()


class TeeSink:
    """Send events to several sinks (console + a JSON log file)."""

    def __init__(self, *sinks: object) -> None:
        self.sinks = sinks

    def play_start(self, role: str, hosts: list[str]) -> None:
        for s in self.sinks:
            s.play_start(role, hosts)  # type: ignore[attr-defined]

    def emit(self, ev: Event) -> None:
        for s in self.sinks:
            s.emit(ev)  # type: ignore[attr-defined]

    def play_end(self, role: str, duration_s: float) -> None:
        for s in self.sinks:
            s.play_end(role, duration_s)  # type: ignore[attr-defined]

    def task_start(self, host: str, task: str) -> None:
        """A task starts on a host, to the sinks that show what runs now."""
        for s in self.sinks:
            on_start = getattr(s, "task_start", None)
            if on_start is not None:
                on_start(host, task)

    def transfer(self, host: str, task: str, done: int, total: int) -> None:
        """Upload progress, to the sinks that show it."""
        for s in self.sinks:
            on_bytes = getattr(s, "transfer", None)
            if on_bytes is not None:
                on_bytes(host, task, done, total)

    def recap(self, report: RunReport, title: str = "RECAP") -> None:
        for s in self.sinks:
            s.recap(report, title)  # type: ignore[attr-defined]


def open_log_file(path: str) -> IO[str]:
    """Open `--log-file` for appending, private to its owner.

    A new file is created 0600 (never world-readable, whatever the umask). An existing regular file is
    tightened to 0600 on the open descriptor (so a rename race cannot redirect the chmod): its earlier
    lines are as sensitive as the new ones. A FIFO or device (e.g. /dev/stderr) is written as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, LOG_FILE_MODE)
    except OSError as exc:
        raise InputError(f"--log-file {path}: {exc.strerror}", hint="give a writable file path") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != LOG_FILE_MODE:
            os.fchmod(fd, LOG_FILE_MODE)
    except OSError as exc:
        os.close(fd)
        raise InputError(
            f"--log-file {path}: cannot make it private (0600): {exc.strerror}",
            hint="use a file you own, e.g. in your home directory",
        ) from None
    return os.fdopen(fd, "a", encoding="utf-8")
