"""The one executor: applies decided items on a host and reports every task the same way.

A task is decided (module.check over facts) into a `Decided` item. Items whose outcome nothing else
reads are queued and applied together in one round trip (each change in its own framed section,
stopping at the first failure); every other task is a batch of one, applied on its own. Either way
the executor drops the facts a change touched, settles the outcome (failed_when / changed_when,
register data), notifies handlers, emits the event, and records a failure against the host.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from provisioner.engine.events import Event, RunReport, Sink, Status
from provisioner.engine.facts import TaskError, framed, marker, section
from provisioner.engine.hosts import HostState
from provisioner.engine.roles import Task
from provisioner.engine.templating import Renderer
from provisioner.engine.transfer import ProgressIO
from provisioner.errors import HostConnectionError, KprovError
from provisioner.modules.base import Change, Effect, Module
from provisioner.secrets import Redactor
from provisioner.transport.ssh import CommandResult


def registered(**values: Any) -> dict[str, Any]:
    """A task's registered result: every key present, as later tasks expect (`x.rc`, `x.stdout`, ...)."""
    return {
        "changed": False,
        "failed": False,
        "skipped": False,
        "rc": 0,
        "stdout": "",
        "stderr": "",
        "stdout_lines": [],
        **values,
    }


@dataclass(frozen=True)
class Decided:
    """A task decided on one host: the status to report when there is nothing to apply, or a change."""

    task: Task
    t0: float
    status: Status
    msg: str
    change: Effect | None = None
    module: Module | None = None
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def touches(self) -> set[str]:
        """Fact resources applying this item may alter."""
        return self.module.touches(self.args) if self.module is not None and self.change is not None else set()


@dataclass
class Batch:
    """A host's decided items waiting for their round trip, in task order."""

    items: list[Decided] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    notified_early: set[str] = field(default_factory=set)

    @property
    def has_changes(self) -> bool:
        return any(i.change is not None for i in self.items)

    def add(self, item: Decided) -> None:
        self.items.append(item)
        self.touched |= item.touches


class _SharedIO:
    """A target's transport whose scripts are shared with identical asks at the same moment."""

    def __init__(self, executor: Executor, target: HostState) -> None:
        self._executor, self._target = executor, target

    def script(self, script: str, *, timeout: float | None = None) -> CommandResult:
        return self._executor.shared_script(self._target, script, timeout)

    def put_stream(self, remote_path: str, fh: Any, *, offset: int = 0) -> int:
        assert self._target.transport is not None
        return self._target.transport.put_stream(remote_path, fh, offset=offset)


class Executor:
    """Applies decided items and reports outcomes: events, cache invalidation, handlers, failures."""

    def __init__(
        self, env: jinja2.Environment, sink: Sink, report: RunReport, redactor: Redactor, extra_vars: Mapping[str, Any]
    ) -> None:
        self.env = env
        self.sink = sink
        self.report = report
        self.redactor = redactor
        self.extra_vars = extra_vars
        self._shared: dict[tuple[str, str], tuple[threading.Event, list[Any]]] = {}
        self._shared_lock = threading.Lock()

    # -- applying ---------------------------------------------------------------------------------
    def apply(
        self, target: HostState, items: Sequence[Decided], *, timeout: float | None = None, shared: bool = False
    ) -> list[CommandResult | None]:
        """Apply the items' changes on `target`, in order; one result per item (None: did not run).

        One change applies itself (a batch of one: its own timeout; with `shared`, identical read-only
        asks to the same host at the same moment share one run). Several changes must be batchable
        scripts: they go in one script, each in its own section with output and errors together,
        stopping at the first failure. Transport errors propagate."""
        assert target.transport is not None
        changes = [(i, i.change) for i in items if i.change is not None]
        results: dict[int, CommandResult] = {}
        if len(changes) == 1:
            ((item, change),) = changes
            io: Any = _SharedIO(self, target) if shared else target.transport
            on_bytes = getattr(self.sink, "transfer", None)  # optional: sinks that show upload progress
            if on_bytes is not None:
                io = ProgressIO(io, functools.partial(on_bytes, target.host.name, item.task.name))
            results[id(item)] = change.apply(io, timeout=timeout)
        elif changes:
            scripts = [c for _, c in changes if isinstance(c, Change) and c.batchable]
            assert len(scripts) == len(changes), "only batchable scripts share a round trip"
            mark = marker()
            parts = [
                framed(mark, i, f"set -e\n{c.script}", stderr="&1", after="\n[ $rc -eq 0 ] || exit 0")
                for i, c in enumerate(scripts)
            ]
            res = target.transport.script("\n".join(parts) + "\n")
            for i, (item, _) in enumerate(changes):
                found = section(res.stdout, mark, i)
                if found is None:
                    break
                results[id(item)] = CommandResult(found[0], found[1], "", 0)
        with target.lock:
            for item, _ in changes:
                target.facts.invalidate(item.touches)
        return [results.get(id(i)) for i in items]

    def shared_script(self, target: HostState, script: str, timeout: float | None) -> CommandResult:
        """A read-only command many hosts delegate to one target at the same moment (`kubectl get
        nodes` from every node) runs once; the asks that arrive while it runs share its answer."""
        assert target.transport is not None
        key = (target.host.name, script)
        with self._shared_lock:
            found = self._shared.get(key)
            leader = found is None
            entry = found or (threading.Event(), [])
            if leader:
                self._shared[key] = entry
        done, box = entry
        if not leader:
            done.wait()
            if isinstance(box[0], BaseException):
                raise box[0]
            return box[0]
        try:
            box.append(target.transport.script(script, timeout=timeout))
        except BaseException as exc:
            box.append(exc)
            raise
        finally:
            with self._shared_lock:
                del self._shared[key]  # later asks (retries) get a fresh answer
            done.set()
        return box[0]

    def settle(
        self, item: Decided, res: CommandResult | None, variables: Mapping[str, Any]
    ) -> tuple[Status, dict[str, Any]]:
        """The outcome of an applied change: its registered data and status; TaskError when it failed."""
        task, change = item.task, item.change
        assert change is not None
        first_line = change.msg.splitlines()[0][:200] if change.msg else ""
        if res is None:
            raise TaskError(f"{first_line} did not run: the host closed the session")
        data = registered(
            changed=change.reports_changed,
            failed=res.rc != 0,
            rc=res.rc,
            stdout=res.stdout.rstrip("\n"),
            stderr=res.stderr.rstrip("\n"),
            stdout_lines=res.stdout.splitlines(),
            msg=change.msg,
        )
        if item.module is not None and isinstance(change, Change):
            # what the script printed, as the module reads it (uploads and local writes add nothing)
            data.update(item.module.result_data(item.args, change, res.rc, res.stdout, res.stderr))
        if task.no_log and task.register:
            self.remember_secrets(data)
        rr = None
        if task.failed_when is not None or task.changed_when is not None:
            local = {**variables, "result": data}  # `data` itself: changed_when sees the settled `failed`
            if task.register:
                local[task.register] = data
            rr = Renderer(self.env, local, task.where)
        failed = rr.evaluate(task.failed_when) if rr and task.failed_when is not None else res.rc != 0
        data["failed"] = failed
        if failed:
            raise TaskError(f"{first_line} failed (rc={res.rc})", hint=None, detail=res.stderr_tail())
        changed = rr.evaluate(task.changed_when) if rr and task.changed_when is not None else change.reports_changed
        data["changed"] = changed
        return (Status.CHANGED if changed else Status.OK), data

    # -- a host's batch -----------------------------------------------------------------------------
    def flush(self, st: HostState, batch: Batch) -> set[str]:
        """Apply the queued changes in one round trip, then report every queued task in order.

        Returns the handlers the changed tasks notified (also those of an earlier, early flush)."""
        notified, batch.notified_early = set(batch.notified_early), set()
        items, batch.items, batch.touched = batch.items, [], set()
        changes = [i for i in items if i.change is not None]
        results: list[CommandResult | None] = [None] * len(items)
        if changes:
            on_start = getattr(self.sink, "task_start", None)  # optional: sinks that show what runs now
            if on_start is not None:
                more = f" and {len(changes) - 1} more change(s)" if len(changes) > 1 else ""
                on_start(st.host.name, changes[0].task.name + more)
            try:
                results = self.apply(st, items)
            except HostConnectionError as exc:
                self.mark(
                    st,
                    Status.UNREACHABLE,
                    changes[0].task.role,
                    changes[0].task.name,
                    exc.message,
                    changes[0].t0,
                    exc.hint or "",
                )
                return notified
            except KprovError as exc:
                self.task_failed(st, changes[0].task, changes[0].t0, exc)
                return notified
        for item, res in zip(items, results):
            if st.dead is not None:
                break
            if item.change is None:
                self.emit(st, item.task, item.status, item.t0, item.msg)
                continue
            try:
                status, _ = self.settle(item, res, {})
            except TaskError as exc:
                self.task_failed(st, item.task, item.t0, exc)
                continue
            if status is Status.CHANGED:
                notified.update(item.task.notify)
            self.emit(st, item.task, status, item.t0, item.change.msg, item.change.diff)
        return notified

    # -- reporting ----------------------------------------------------------------------------------
    def task_failed(self, st: HostState, task: Task, t0: float, exc: KprovError) -> None:
        """A task failed on a host: the host is out for the rest of the run, unless the task ignores errors."""
        tail = exc.detail or ""
        msg = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        if task.ignore_errors:
            self.register(st, task, registered(failed=True, msg=msg, rc=getattr(exc, "rc", 1), stderr=tail))
            self.emit(st, task, Status.OK, t0, f"ignored failure: {msg}", stderr_tail=tail)
            return
        st.dead = Status.FAILED
        self.emit(st, task, Status.FAILED, t0, msg, stderr_tail=tail)

    def emit(
        self, st: HostState, task: Task, status: Status, t0: float, msg: str = "", diff: str = "", stderr_tail: str = ""
    ) -> None:
        if task.no_log and not self.extra_vars.get("kprov_unsafe_show_no_log"):
            # may hold secrets kprov cannot recognise; `-e kprov_unsafe_show_no_log=true` shows it
            hidden = "output hidden (no_log; -e kprov_unsafe_show_no_log=true shows it)"
            msg = f"{status.value}: {hidden}" if msg else msg
            diff, stderr_tail = "", (hidden if stderr_tail else "")
        self._record(
            Event(
                host=st.host.name,
                role=task.role,
                task=task.name,
                status=status,
                changed=status is Status.CHANGED,
                duration_ms=int((time.monotonic() - t0) * 1000),
                msg=self.redactor.scrub(msg),
                diff=self.redactor.scrub(diff),
                stderr_tail=self.redactor.scrub(stderr_tail),
            )
        )

    def mark(self, st: HostState, status: Status, role: str, task: str, msg: str, t0: float, hint: str = "") -> None:
        """The host is out (unreachable, or failed before any task, e.g. its host key): one event says why."""
        st.dead = status
        full = f"{msg} (hint: {hint})" if hint else msg
        self._record(
            Event(
                host=st.host.name,
                role=role,
                task=task,
                status=status,
                changed=False,
                duration_ms=int((time.monotonic() - t0) * 1000),
                msg=self.redactor.scrub(full),
            )
        )

    def _record(self, ev: Event) -> None:
        self.report.record(ev)
        self.sink.emit(ev)

    def register(self, st: HostState, task: Task, data: Mapping[str, Any]) -> None:
        if task.register:
            if task.no_log:
                self.remember_secrets(data)
            st.vars[task.register] = dict(data)

    def remember_secrets(self, data: Mapping[str, Any]) -> None:
        """The output of a no_log task is secret wherever it shows up later (whole, or a line of it)."""
        for key in ("stdout", "stderr"):
            text = str(data.get(key) or "")
            self.redactor.add(text)
            for line in text.splitlines():
                self.redactor.add(line.strip())
