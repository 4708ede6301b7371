"""Results and events: values the engine emits and reporters consume."""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol


class Status(str, enum.Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNREACHABLE = "unreachable"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Event:
    host: str
    role: str
    task: str
    status: Status
    changed: bool
    duration_ms: int
    msg: str = ""
    diff: str = ""
    stderr_tail: str = ""

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "host": self.host,
            "role": self.role,
            "task": self.task,
            "status": self.status.value,
            "changed": self.changed,
            "duration_ms": self.duration_ms,
            "msg": self.msg,
        }
        if self.diff:
            out["diff"] = self.diff
        if self.stderr_tail:
            out["stderr_tail"] = self.stderr_tail
        return out


class Sink(Protocol):
    def play_start(self, role: str, hosts: list[str]) -> None: ...
    def emit(self, event: Event) -> None: ...
    def play_end(self, role: str, duration_s: float) -> None: ...


class NullSink:
    def play_start(self, role: str, hosts: list[str]) -> None:
        pass

    def emit(self, event: Event) -> None:
        pass

    def play_end(self, role: str, duration_s: float) -> None:
        pass


@dataclass
class HostRecap:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    first_error: str = ""


@dataclass
class RunReport:
    """Per-host counters, per-role wall time, and the failure of each failed host."""

    hosts: dict[str, HostRecap] = field(default_factory=dict)
    role_times: dict[str, float] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    #: why the run ended before its last play ("": it did not), e.g. every host of a play unreachable
    stopped: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, ev: Event) -> None:
        with self._lock:
            self.events.append(ev)
            r = self.hosts.setdefault(ev.host, HostRecap())
            setattr(r, ev.status.value, getattr(r, ev.status.value) + 1)
            if ev.status in (Status.FAILED, Status.UNREACHABLE) and not r.first_error:
                r.first_error = f"{ev.role} | {ev.task}: {ev.msg}"

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.hosts.values())

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, r in self.hosts.items() if r.failed]

    @property
    def unreachable_hosts(self) -> list[str]:
        return [h for h, r in self.hosts.items() if r.unreachable]

    def exit_status(self) -> int:
        from provisioner.errors import ExitStatus

        if self.unreachable_hosts:
            return ExitStatus.UNREACHABLE
        if self.failed_hosts:
            return ExitStatus.TASK_FAILED
        return ExitStatus.SUCCESS
