"""Run roles on hosts: facts in one round trip per host, decisions locally, changes as one script each.

Strategy (documented in docs/engine.md): plays run in order with a barrier between plays (a role may
depend on the previous one on other hosts, e.g. join after init). Within a play every host runs
the role's task list independently on its own worker thread, so fast hosts never wait for slow ones.
A host that fails or becomes unreachable is marked and skipped for the rest of the run.
"""

from __future__ import annotations

import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence
import secrets as _secrets
import threading

from provisioner.engine.events import Event, NullSink, RunReport, Sink, Status
from provisioner.engine.roles import PROJECT_ROOT, ROLES_DIR, TEMPLATES_DIR, Play, Role, Task, load_role
from provisioner.engine.templating import Renderer, make_env, resolve_vars
from provisioner.engine.lock import owner_record
from provisioner.errors import HostConnectionError, HostKeyError, InputError, KprovError, LockHeld, RoleError
from provisioner.inventory.loader import host_vars_layers
from provisioner.inventory.model import Host, Inventory
from provisioner.modules.base import Change, FactQuery, NoChange, Skip, get_module
from provisioner.modules.files import write_local_file
from provisioner.secrets import Redactor
from provisioner.transport.ssh import CommandResult, ConnectOptions, SSHHost

log = logging.getLogger(__name__)

#: a fact batch is read-only queries: minutes mean the host is in trouble
FACT_TIMEOUT_S = 300


class Transport(Protocol):
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def exec(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None,
             become: bool | None = None) -> CommandResult: ...
    def script(self, script: str, **kw: Any) -> CommandResult: ...
    def put_stream(self, remote_path: str, fh: Any, *, offset: int = 0) -> int: ...
    def hold_lock(self, owner: str) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    check: bool = False
    forks: int = 128
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    limit: tuple[str, ...] | None = None
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    connect: ConnectOptions = field(default_factory=ConnectOptions)


class _HostState:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.transport: Transport | None = None
        self.vars: dict[str, Any] = {}
        self.dead: Status | None = None
        self.facts: dict[str, tuple[str, Any]] = {}   # script -> (resource, parsed)
        self.lock = threading.RLock()


@dataclass
class _Queued:
    task: Task
    t0: float
    module: Any
    args: Mapping[str, Any] | None
    status: Status
    msg: str
    decision: Change | None = None


@dataclass
class _Batch:
    items: list[_Queued] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    notified_early: set[str] = field(default_factory=set)

    @property
    def changes(self) -> list[_Queued]:
        return [q for q in self.items if q.decision is not None]


class TaskError(KprovError):
    """A task failed on a host (internal to the engine; becomes a FAILED event)."""


def _marker() -> str:
    return "__KPROV_" + _secrets.token_hex(6)


def framed(marker: str, i: int, body: str, stderr: str = "/dev/null", after: str = "") -> str:
    """Section i of a batch script: its output between markers, then its exit status.

    stdin is /dev/null: a section must never read the rest of the batch script from our stdin."""
    return (f"echo '{marker} {i} BEGIN'\n( {body}\n) </dev/null 2>{stderr}\nrc=$?\necho \"\"\n"
            f"echo \"{marker} {i} END $rc\"{after}")


def section(out: str, marker: str, i: int) -> tuple[int, str] | None:
    """(exit status, output) of section i of a framed batch; None when the output stops before it."""
    begin, end_tag = f"{marker} {i} BEGIN\n", f"\n{marker} {i} END "
    start = out.find(begin)
    end = out.find(end_tag, start)
    if start < 0 or end < 0:
        return None
    body = out[start + len(begin):end]
    body = body[:-1] if body.endswith("\n") else body   # the echo "" we added
    rc_line = out[end + len(end_tag):].split("\n", 1)[0]
    return (int(rc_line) if rc_line.strip().isdigit() else 1), body


def batch_script(queries: Sequence[FactQuery], marker: str) -> str:
    return "\n".join(framed(marker, i, fq.script) for i, fq in enumerate(queries)) + "\n"


def parse_batch(out: str, queries: Sequence[FactQuery], marker: str, stderr: str = "") -> list[Any]:
    results: list[Any] = []
    for i, fq in enumerate(queries):
        found = section(out, marker, i)
        if found is None:
            tail = "\n".join((stderr.strip() or out.strip()).splitlines()[-10:])
            raise TaskError(f"fact gathering output was cut short (query {fq.name}: {fq.script[:120]!r})",
                            hint="the host closed the session early; check its shell and disk space",
                            detail=tail or None)
        rc, body = found
        results.append(fq.parse(body, rc))
    return results


class Runner:
    """Runs plays over an inventory and reports events to a sink."""

    def __init__(
        self,
        inventory: Inventory,
        options: RunOptions = RunOptions(),
        sink: Sink | None = None,
        *,
        redactor: Redactor | None = None,
        roles_dir: Path = ROLES_DIR,
        templates_dir: Path = TEMPLATES_DIR,
        connector: Callable[[Host], Transport] | None = None,
        base_vars: Mapping[str, Any] | None = None,
    ) -> None:
        self.inventory = inventory
        self.options = options
        self.sink = sink or NullSink()
        self.redactor = redactor or Redactor()
        self.roles_dir = roles_dir
        self.env = make_env(templates_dir)
        self.connector = connector or (lambda h: SSHHost(h, options.connect, self.redactor))
        self.report = RunReport()
        #: cluster-wide computed variables (between role defaults and inventory vars)
        self.base_vars = dict(base_vars or {})
        self.states = {h.name: _HostState(h) for h in inventory.hosts}
        self._roles: dict[str, Role] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, options.forks), thread_name_prefix="kprov")
        #: who we are, for a run that finds a host locked (engine/lock.py)
        self._owner = owner_record(f"kprov run on cluster {inventory.cluster.name}")
        self._locked: list[LockHeld] = []
        #: run_once results, and read-only delegated commands in flight (shared by identical asks)
        self._once: dict[str, tuple[str, tuple[Status, dict[str, Any], str, str]]] = {}
        self._once_locks: dict[str, threading.Lock] = {}
        self._shared: dict[tuple[str, str], tuple[threading.Event, list[Any]]] = {}
        self._shared_lock = threading.Lock()

    # -- hosts ------------------------------------------------------------------------------
    def select(self, pattern: str) -> list[Host]:
        """Host pattern: `all`, group names, host names, `group[0]`, `group[1:]`, comma-separated union."""
        groups = self.inventory.group_members()
        chosen: list[str] = []
        for part in (p.strip() for p in pattern.split(",")):
            if not part:
                continue
            name, _, sl = part.partition("[")
            if name in groups:
                members = groups[name]
            elif name in self.states:
                members = [name]
            else:
                raise InputError(f"host pattern {part!r} matches no group or host",
                                 hint=f"groups: {', '.join(sorted(groups))}")
            if sl:
                idx = sl.rstrip("]")
                if ":" in idx:
                    a, _, b = idx.partition(":")
                    members = members[int(a) if a else None:int(b) if b else None]
                else:
                    members = members[int(idx):int(idx) + 1]
            chosen.extend(m for m in members if m not in chosen)
        if self.options.limit is not None:
            chosen = [c for c in chosen if c in self.options.limit]
        return [self.states[c].host for c in chosen]

    def _live(self, hosts: Sequence[Host]) -> list[_HostState]:
        return [self.states[h.name] for h in hosts if self.states[h.name].dead is None]

    def connect(self, hosts: Sequence[Host]) -> None:
        """Open connections in parallel; unreachable hosts are marked, the rest go on."""
        todo = [s for s in self._live(hosts) if s.transport is None]
        list(self._pool.map(self._connect_one, todo))

    def _connect_one(self, st: _HostState) -> None:
        """Connect one host (once, whichever thread asks first); failure marks it unreachable."""
        with st.lock:
            if st.transport is not None or st.dead is not None:
                return
            t0 = time.monotonic()
            transport = self.connector(st.host)
            try:
                transport.connect()
                if not self.options.check:
                    try:
                        transport.hold_lock(self._owner)
                    except LockHeld as exc:
                        transport.close()
                        self._locked.append(exc)
                        st.dead = Status.FAILED
                        return
                st.transport = transport
            except HostKeyError as exc:
                # reachable, but not the host we know (or not known yet): a trust failure, not a network one
                self._mark(st, Status.FAILED, "connect", "ssh host key", exc.message, t0, exc.hint or "")
            except KprovError as exc:
                self._mark(st, Status.UNREACHABLE, "connect", "ssh connect", exc.message, t0, exc.hint or "")
            except Exception as exc:  # noqa: BLE001 - one host's oddity must not stop the others
                self._mark(st, Status.UNREACHABLE, "connect", "ssh connect", f"{type(exc).__name__}: {exc}", t0)

    def close(self) -> None:
        for st in self.states.values():
            if st.transport is not None:
                st.transport.close()
                st.transport = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- plays ------------------------------------------------------------------------------
    def role(self, name: str) -> Role:
        if name not in self._roles:
            self._roles[name] = load_role(name, self.roles_dir)
        return self._roles[name]

    def run(self, plays: Sequence[Play]) -> RunReport:
        for play in plays:  # load every role first: a broken role is bad input before any host is touched
            self.role(play.role)
        try:
            if not self.options.check:
                # every host the plays change is locked before the first change: a concurrent run
                # (from another machine) is found before anything is touched
                self.connect([h for play in plays for h in self.select(play.hosts)])
                if self._locked:
                    raise self._locked[0]
            for play in plays:
                self.run_play(play)
        finally:
            self.report.finished = time.monotonic()
        return self.report

    def run_play(self, play: Play) -> None:
        role = self.role(play.role)
        hosts = self.select(play.hosts)
        self.connect(hosts)
        live = self._live(hosts)
        self.sink.play_start(role.name, [s.host.name for s in live])
        t0 = time.monotonic()
        if play.serial:
            for st in live:
                self._run_role_on_host(role, st)
        else:
            list(self._pool.map(lambda st: self._run_role_on_host(role, st), live))
        took = time.monotonic() - t0
        self.report.role_times[role.name] = self.report.role_times.get(role.name, 0.0) + took
        self.sink.play_end(role.name, took)

    # -- variables --------------------------------------------------------------------------
    def host_vars(self, st: _HostState, role: Role) -> dict[str, Any]:
        inv = self.inventory
        merged: dict[str, Any] = dict(role.defaults)
        merged.update(self.base_vars)
        for layer in host_vars_layers(inv, st.host):
            merged.update(layer)
        merged.update(self.options.extra_vars)
        templated = set(merged)
        merged.update({k: v for k, v in st.vars.items() if k not in self.options.extra_vars})
        merged.update({
            "inventory_hostname": st.host.name,
            "host": st.host.public_view(),
            "cluster": inv.cluster.public_view(),
            "hosts": [h.public_view() for h in inv.hosts],
            "groups": inv.group_members(),
            "hostvars": {n: {**s.host.public_view(), **s.vars} for n, s in self.states.items()},
            "check_mode": self.options.check,
            "role_name": role.name,
            "operator_home": str(Path.home()),
            "project_dir": str(PROJECT_ROOT),
        })
        return resolve_vars(self.env, merged, templated - set(st.vars))

    # -- facts ------------------------------------------------------------------------------
    def gather(self, st: _HostState, queries: Sequence[FactQuery]) -> dict[str, Any]:
        with st.lock:
            missing = list({fq.script: fq for fq in queries if fq.script not in st.facts}.values())
            if missing:
                assert st.transport is not None
                marker = _marker()
                res = st.transport.script(batch_script(missing, marker), timeout=FACT_TIMEOUT_S)
                if res.rc != 0 and marker not in res.stdout:
                    raise TaskError(f"fact gathering failed (rc={res.rc})", hint="check the host's shell",
                                    detail=res.stderr_tail())
                for fq, value in zip(missing, parse_batch(res.stdout, missing, marker, res.stderr)):
                    st.facts[fq.script] = (fq.resource, value)
            return {fq.name: st.facts[fq.script][1] for fq in queries}

    def invalidate(self, st: _HostState, touched: set[str]) -> None:
        with st.lock:
            if "*" in touched:
                st.facts.clear()
            elif touched:
                # `unless` probes are arbitrary commands: any change may alter their answer
                for script in [s for s, (res, _) in st.facts.items() if res in touched or res.startswith("unless:")]:
                    del st.facts[script]

    def _prefetch(self, st: _HostState, role: Role) -> None:
        """Gather the facts of every task we can already render: one round trip for the whole role."""
        queries: list[FactQuery] = []
        variables = self.host_vars(st, role)
        for task in role.tasks:
            if task.loop is not None or task.delegate_to or not self._selected(task):
                continue
            try:
                r = Renderer(self.env, variables, task.where)
                if task.when is not None and not r.evaluate(task.when):
                    continue
                args = self._prepare_args(task, r)
                module = get_module(task.module, task.where)
                queries.extend(module.facts(module.validate(args, task.where)))
            except Exception:  # noqa: BLE001 - depends on results not known yet; fetched when reached
                continue
        if queries:
            self.gather(st, queries)

    # -- tasks ------------------------------------------------------------------------------
    def _selected(self, task: Task) -> bool:
        if self.options.tags and not (task.tags & self.options.tags):
            return False
        if self.options.skip_tags and task.tags & self.options.skip_tags:
            return False
        return True

    def _run_role_on_host(self, role: Role, st: _HostState) -> None:
        if st.dead is not None:
            return
        notified: set[str] = set()
        try:
            self._prefetch(st, role)
        except HostConnectionError as exc:
            self._mark(st, Status.UNREACHABLE, role.name, "gather facts", exc.message, time.monotonic(), exc.hint or "")
            return
        except KprovError:
            pass
        batch = _Batch()
        for task in role.tasks:
            if st.dead is not None:
                return
            if not self._selected(task):
                continue
            if self._batchable(task) and self._decide_into_batch(role, st, task, batch):
                continue
            notified.update(self._flush(st, batch))
            if st.dead is not None:
                return
            changed = self._run_task(role, st, task)
            if changed:
                notified.update(task.notify)
        notified.update(self._flush(st, batch))
        for handler in role.handlers:
            if st.dead is not None:
                return
            if handler.name in notified:
                self._run_task(role, st, handler)

    # -- batching: consecutive independent changes in one round trip --------------------------
    _UNBATCHABLE_MODULES = frozenset({"fetch", "upload", "set_fact", "assert", "wait_for"})

    def _batchable(self, task: Task) -> bool:
        """Tasks whose outcome nothing else in the role reads: decided now, applied with their neighbours."""
        return (not self.options.check and task.loop is None and task.register is None and task.until is None
                and task.changed_when is None and task.failed_when is None and not task.retries
                and task.delegate_to is None and not task.ignore_errors and not task.no_log
                and task.timeout is None and not task.run_once and task.module not in self._UNBATCHABLE_MODULES)

    def _decide_into_batch(self, role: Role, st: _HostState, task: Task, batch: "_Batch") -> bool:
        """Decide a task from (cached) facts and queue its outcome. False: run it the normal way."""
        t0 = time.monotonic()
        try:
            r = Renderer(self.env, self.host_vars(st, role), task.where)
            if task.when is not None and not r.evaluate(task.when):
                batch.items.append(_Queued(task, t0, None, None, Status.SKIPPED, "condition false"))
                return True
            module = get_module(task.module, task.where)
            args = module.validate(self._prepare_args(task, r), task.where)
            queries = module.facts(args)
            resources = {q.resource for q in queries}
            if batch.changes and ("*" in batch.touched or resources & batch.touched
                                  or any(r.startswith("unless:") for r in resources)):
                notified = self._flush(st, batch)    # its facts depend on a queued change: apply those first
                batch.notified_early.update(notified)
                if st.dead is not None:
                    return True
            decision = module.check(args, self.gather(st, queries))
        except KprovError:
            return False   # let the normal path report it with its full context
        if isinstance(decision, Change):
            if decision.data:          # local writes, uploads, reports_changed: the normal path
                return False
            batch.items.append(_Queued(task, t0, module, args, Status.CHANGED, decision.msg, decision))
            batch.touched |= module.touches(args) | ({"*"} if module.broad else set())
        elif isinstance(decision, Skip):
            batch.items.append(_Queued(task, t0, None, None, Status.SKIPPED, decision.msg))
        else:
            batch.items.append(_Queued(task, t0, None, None, Status.OK, decision.msg))
        return True

    def _flush(self, st: _HostState, batch: "_Batch") -> set[str]:
        """Apply the queued changes in one script, then report every queued task in order."""
        notified, batch.notified_early = set(batch.notified_early), set()
        items, batch.items, batch.touched = batch.items, [], set()
        changes = [q for q in items if q.decision is not None]
        results: dict[int, tuple[int, str]] = {}
        if changes:
            assert st.transport is not None
            marker = _marker()
            # each change in its own section, output and errors together; stop at the first failure
            parts = [framed(marker, i, f"set -e\n{q.decision.script}", stderr="&1",
                            after="\n[ $rc -eq 0 ] || exit 0") for i, q in enumerate(changes)]
            try:
                res = st.transport.script("\n".join(parts) + "\n")
            except HostConnectionError as exc:
                self._mark(st, Status.UNREACHABLE, changes[0].task.role, changes[0].task.name, exc.message,
                           changes[0].t0, exc.hint or "")
                return notified
            except KprovError as exc:
                st.dead = Status.FAILED
                self._emit(st, changes[0].task, Status.FAILED, changes[0].t0, exc.message, stderr_tail=exc.detail or "")
                return notified
            for i, q in enumerate(changes):
                found = section(res.stdout, marker, i)
                if found is None:
                    break
                results[id(q)] = found
        for q in items:
            if st.dead is not None:
                break
            if q.decision is None:
                self._emit(st, q.task, q.status, q.t0, q.msg)
                continue
            rc, out = results.get(id(q), (None, ""))
            self.invalidate(st, q.module.touches(q.args) | ({"*"} if q.module.broad else set()))
            if rc == 0:
                notified.update(q.task.notify)
                self._emit(st, q.task, Status.CHANGED, q.t0, q.msg, q.decision.diff)
                continue
            st.dead = Status.FAILED
            tail = "\n".join(out.strip().splitlines()[-20:]) if rc is not None else ""
            why = f"failed (rc={rc})" if rc is not None else "did not run: the host closed the session"
            self._emit(st, q.task, Status.FAILED, q.t0, f"{q.decision.msg.splitlines()[0][:200]} {why}",
                       stderr_tail=tail)
        return notified

    def _prepare_args(self, task: Task, r: Renderer) -> dict[str, Any]:
        if task.module == "assert":
            that = task.args.get("that")
            exprs = that if isinstance(that, list) else [that]
            return {"that": exprs, "msg": r.render(task.args.get("msg", "assertion failed")),
                    "results": [(str(e), r.evaluate(e)) for e in exprs]}
        args = r.render(dict(task.args))
        if task.module == "template":
            args["content"] = r.render_file(str(args.get("src")))
        return args

    def _emit(self, st: _HostState, task: Task, status: Status, t0: float, msg: str = "", diff: str = "",
              stderr_tail: str = "") -> None:
        if task.no_log and not self.options.extra_vars.get("kprov_unsafe_show_no_log"):
            # may hold secrets kprov cannot recognise; `-e kprov_unsafe_show_no_log=true` shows it
            hidden = "output hidden (no_log; -e kprov_unsafe_show_no_log=true shows it)"
            msg = f"{status.value}: {hidden}" if msg else msg
            diff, stderr_tail = "", (hidden if stderr_tail else "")
        ev = Event(host=st.host.name, role=task.role, task=task.name, status=status,
                   changed=status is Status.CHANGED, duration_ms=int((time.monotonic() - t0) * 1000),
                   msg=self.redactor.scrub(msg), diff=self.redactor.scrub(diff),
                   stderr_tail=self.redactor.scrub(stderr_tail))
        self.report.record(ev)
        self.sink.emit(ev)

    def _mark(self, st: _HostState, status: Status, role: str, task: str, msg: str, t0: float,
              hint: str = "") -> None:
        st.dead = status
        full = f"{msg} (hint: {hint})" if hint else msg
        ev = Event(host=st.host.name, role=role, task=task, status=status, changed=False,
                   duration_ms=int((time.monotonic() - t0) * 1000), msg=self.redactor.scrub(full))
        self.report.record(ev)
        self.sink.emit(ev)

    def _run_task(self, role: Role, st: _HostState, task: Task) -> bool:
        """Run one task (all loop items) on one host. Returns True when something changed."""
        t0 = time.monotonic()
        variables = self.host_vars(st, role)
        r = Renderer(self.env, variables, task.where)
        try:
            if task.loop is None and task.when is not None and not r.evaluate(task.when):
                self._register(st, task, {"changed": False, "skipped": True, "failed": False, "rc": 0,
                                          "stdout": "", "stderr": "", "stdout_lines": []})
                self._emit(st, task, Status.SKIPPED, t0, "condition false")
                return False
            if task.loop is not None:
                items = r.render(task.loop)
                if not isinstance(items, list):
                    raise RoleError(f"{task.where}: loop must render to a list, got {type(items).__name__}",
                                    hint="loop: \"{{ my_list }}\" or a YAML list")
            else:
                items = [None]
            results, any_changed, msgs, diffs = [], False, [], []
            statuses = []
            for item in items:
                if task.loop is not None:
                    variables[task.loop_var] = item
                    r = Renderer(self.env, variables, task.where)
                    if task.when is not None and not r.evaluate(task.when):   # `when` holds per item
                        results.append({"changed": False, "skipped": True, "failed": False, "item": item})
                        statuses.append(Status.SKIPPED)
                        continue
                status, data, msg, diff = self._run_single(st, task, r, variables)
                results.append(data)
                statuses.append(status)
                any_changed |= status is Status.CHANGED
                if msg:
                    msgs.append(msg)
                if diff:
                    diffs.append(diff)
            if task.loop is not None:
                reg = {"changed": any_changed, "skipped": all(s is Status.SKIPPED for s in statuses),
                       "failed": False, "results": results}
            else:
                reg = results[0]
            self._register(st, task, reg)
            if any_changed:
                final = Status.CHANGED
            elif statuses and all(s is Status.SKIPPED for s in statuses):
                final = Status.SKIPPED
            else:
                final = Status.OK
            self._emit(st, task, final, t0, "; ".join(msgs[:3]) + (" ..." if len(msgs) > 3 else ""),
                       "\n".join(diffs))
            return any_changed
        except HostConnectionError as exc:
            self._mark(st, Status.UNREACHABLE, task.role, task.name, exc.message, t0, exc.hint or "")
        except KprovError as exc:
            tail = exc.detail or ""
            msg = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            if task.ignore_errors:
                self._register(st, task, {"changed": False, "failed": True, "msg": msg, "rc": getattr(exc, "rc", 1),
                                          "stdout": "", "stderr": tail, "stdout_lines": []})
                self._emit(st, task, Status.OK, t0, f"ignored failure: {msg}", stderr_tail=tail)
                return False
            st.dead = Status.FAILED
            self._emit(st, task, Status.FAILED, t0, msg, stderr_tail=tail)
        except Exception as exc:  # noqa: BLE001 - a bug must fail this host, not the run
            log.debug("internal error on %s: %s", st.host.name, traceback.format_exc())
            st.dead = Status.FAILED
            self._emit(st, task, Status.FAILED, t0, f"internal error: {type(exc).__name__}: {exc}")
        return False

    def _register(self, st: _HostState, task: Task, data: Mapping[str, Any]) -> None:
        if task.register:
            if task.no_log:
                self._remember_secrets(data)
            st.vars[task.register] = dict(data)

    def _remember_secrets(self, data: Mapping[str, Any]) -> None:
        """The output of a no_log task is secret wherever it shows up later (whole, or a line of it)."""
        for key in ("stdout", "stderr"):
            text = str(data.get(key) or "")
            self.redactor.add(text)
            for line in text.splitlines():
                self.redactor.add(line.strip())

    def _target(self, st: _HostState, task: Task, r: Renderer) -> _HostState:
        if not task.delegate_to:
            return st
        name = r.render(task.delegate_to)
        target = self.states.get(str(name))
        if target is None:
            raise RoleError(f"{task.where}: delegate_to {name!r} is not an inventory host", hint="fix delegate_to")
        if target.dead is not None:
            raise TaskError(f"delegate host {name} is {target.dead.value}", hint="fix that host first")
        if target.transport is None:
            # in this worker thread: a nested map on the shared pool could wait for itself
            self._connect_one(target)
            if target.transport is None:
                raise TaskError(f"delegate host {name} is unreachable", hint="check that host")
        return target

    def _run_single(self, st: _HostState, task: Task, r: Renderer,
                    variables: dict[str, Any]) -> tuple[Status, dict[str, Any], str, str]:
        module = get_module(task.module, task.where)
        args = module.validate(self._prepare_args(task, r), task.where)
        target = self._target(st, task, r)
        if task.run_once:
            return self._run_once(st, target, task, module, args, variables)
        if target is st:
            return self._run_on(st, target, task, module, args, variables)
        try:
            return self._run_on(st, target, task, module, args, variables)
        except HostConnectionError as exc:
            # the delegate's connection failed, not ours: that host is unreachable, this task failed
            self._mark(target, Status.UNREACHABLE, task.role, f"{task.name} (delegated by {st.host.name})",
                       exc.message, time.monotonic(), exc.hint or "")
            raise TaskError(f"delegate host {target.host.name} became unreachable: {exc.message}",
                            hint=exc.hint) from None

    def _run_once(self, st: _HostState, target: _HostState, task: Task, module: Any, args: Mapping[str, Any],
                  variables: dict[str, Any]) -> tuple[Status, dict[str, Any], str, str]:
        """`run_once`: the first host runs the task, the others get its result (e.g. one bootstrap
        token for every node joining in this run, instead of one token per node)."""
        key = f"{task.where}@{target.host.name}"
        with self._shared_lock:
            lock = self._once_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._once:
                runner_host, (status, data, msg, diff) = self._once[key]
                shared = f"result of {runner_host}" + (f": {msg}" if msg else "")
                return (Status.OK if status is Status.CHANGED else status), dict(data), shared, ""
            if target is st:
                outcome = self._run_on(st, target, task, module, args, variables)
            else:
                try:
                    outcome = self._run_on(st, target, task, module, args, variables)
                except HostConnectionError as exc:
                    self._mark(target, Status.UNREACHABLE, task.role, f"{task.name} (delegated by {st.host.name})",
                               exc.message, time.monotonic(), exc.hint or "")
                    raise TaskError(f"delegate host {target.host.name} became unreachable: {exc.message}",
                                    hint=exc.hint) from None
            self._once[key] = (st.host.name, outcome)
            return outcome

    def _shared_script(self, target: _HostState, script: str, timeout: float | None) -> CommandResult:
        """A read-only command many hosts delegate to one target at the same moment (`kubectl get
        nodes` from every node) runs once; the asks that arrive while it runs share its answer."""
        assert target.transport is not None
        key = (target.host.name, script)
        with self._shared_lock:
            entry = self._shared.get(key)
            leader = entry is None
            if leader:
                entry = (threading.Event(), [])
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
                del self._shared[key]   # later asks (retries) get a fresh answer
            done.set()
        return box[0]

    def _run_on(self, st: _HostState, target: _HostState, task: Task, module: Any, args: Mapping[str, Any],
                variables: dict[str, Any]) -> tuple[Status, dict[str, Any], str, str]:
        attempts = 1 + max(0, task.retries)
        for attempt in range(attempts):
            facts = self.gather(target, module.facts(args))
            decision = module.check(args, facts)
            base = {"changed": False, "failed": False, "skipped": False, "rc": 0, "stdout": "", "stderr": "",
                    "stdout_lines": []}
            if isinstance(decision, NoChange):
                data = {**base, "msg": decision.msg, **decision.data}
                if "set_fact" in decision.data:
                    st.vars.update(decision.data["set_fact"])
                return Status.OK, data, decision.msg, ""
            if isinstance(decision, Skip):
                return Status.SKIPPED, {**base, "skipped": True, "msg": decision.msg}, decision.msg, ""
            assert isinstance(decision, Change)
            # wait_for is read-only but waits for what earlier changes would have brought up: not in plan
            runs_in_check = (task.check_mode == "run" or module.read_only) and task.module != "wait_for"
            if self.options.check and not runs_in_check and task.changed_when is False:
                # the task declares it never changes anything (e.g. daemon-reload): nothing to plan
                return Status.OK, {**base, "check_mode": True, "msg": decision.msg}, "", ""
            if self.options.check and not runs_in_check:
                data = {**base, "changed": True, "check_mode": True, "msg": decision.msg}
                return Status.CHANGED, data, f"would {decision.msg}", decision.diff
            if self.options.check:
                try:
                    status, data = self._apply(target, task, module, args, decision, variables,
                                               shared=target is not st)
                except TaskError as exc:
                    # a read-only query that cannot answer before apply (e.g. `containerd --version` on a
                    # fresh host): the plan goes on; later tasks see a failed, skipped result
                    data = {**base, "failed": True, "skipped": True, "check_mode": True, "msg": exc.message}
                    return Status.SKIPPED, data, f"cannot be evaluated before apply: {exc.message}", ""
                break
            # a read-only query delegated to another host: identical asks at the same moment share one run
            status, data = self._apply(target, task, module, args, decision, variables,
                                       shared=target is not st and runs_in_check)
            if task.until is None or attempt + 1 >= attempts:
                break
            variables = {**variables, "result": data}
            if task.register:
                variables[task.register] = data
            if Renderer(self.env, variables, task.where).evaluate(task.until):
                break
            time.sleep(task.delay)
        if task.until is not None:
            variables = {**variables, "result": data}
            if task.register:
                variables[task.register] = data
            if not Renderer(self.env, variables, task.where).evaluate(task.until):
                raise TaskError(f"{task.name}: condition {task.until!r} not met after {attempts} attempts",
                                hint="see the host's output above", detail=data.get("stderr") or data.get("stdout"))
        return status, data, decision.msg if status is Status.CHANGED else data.get("msg", decision.msg), \
            decision.diff if status is Status.CHANGED else ""

    def _apply(self, target: _HostState, task: Task, module: Any, args: Mapping[str, Any], change: Change,
               variables: dict[str, Any], shared: bool = False) -> tuple[Status, dict[str, Any]]:
        assert target.transport is not None
        reports_changed = change.data.get("reports_changed", True)
        if "local_write" in change.data:
            lw = change.data["local_write"]
            write_local_file(lw["path"], lw["content"], lw["mode"])
            res = CommandResult(0, "", "", 0)
        elif "upload" in change.data:
            res = self._upload(target, change.data["upload"])
        else:
            # one compound command, parsed whole before it runs, with stdin from /dev/null: nothing in
            # the change (ctr, kubeadm, ...) can swallow the rest of the script we send on stdin
            script = "{\nset -e\n" + change.script + "\n} </dev/null\n"
            if shared:
                res = self._shared_script(target, script, task.timeout)
            else:
                res = target.transport.script(script, timeout=task.timeout)
        self.invalidate(target, module.touches(args))
        data: dict[str, Any] = {"changed": reports_changed, "failed": res.rc != 0, "skipped": False,
                                "rc": res.rc, "stdout": res.stdout.rstrip("\n"), "stderr": res.stderr.rstrip("\n"),
                                "stdout_lines": res.stdout.splitlines(), "msg": change.msg}
        data.update(module.result_data(args, change, res.rc, res.stdout, res.stderr))
        if task.no_log and task.register:
            self._remember_secrets(data)
        local = {**variables, "result": data}
        if task.register:
            local[task.register] = data
        rr = Renderer(self.env, local, task.where)
        failed = rr.evaluate(task.failed_when) if task.failed_when is not None else res.rc != 0
        data["failed"] = failed
        if failed:
            raise TaskError(f"{change.msg.splitlines()[0][:200]} failed (rc={res.rc})",
                            hint=None, detail=res.stderr_tail())
        changed = rr.evaluate(task.changed_when) if task.changed_when is not None else reports_changed
        data["changed"] = changed
        return (Status.CHANGED if changed else Status.OK), data

    def _upload(self, target: _HostState, spec: Mapping[str, Any]) -> CommandResult:
        from provisioner.modules.base import q

        assert target.transport is not None
        dest, part = spec["dest"], spec["dest"] + ".part"
        prep = target.transport.script(f"set -e\nmkdir -p -- \"$(dirname -- {q(dest)})\"\n"
                                       + ("" if spec["offset"] else f"rm -f -- {q(part)}\n"))
        if prep.rc != 0:
            return prep
        t0 = time.monotonic()
        with open(spec["src"], "rb") as fh:
            target.transport.put_stream(part, fh, offset=spec["offset"])
        verify = target.transport.script(
            f"set -e\nsum=$(sha256sum < {q(part)} | cut -c1-64)\n"
            f"if [ \"$sum\" != {q(spec['sha256'])} ]; then rm -f -- {q(part)}; "
            f"echo \"checksum mismatch after upload: $sum\" >&2; exit 1; fi\n"
            f"chmod {q(spec['mode'])} {q(part)}\nmv -f -- {q(part)} {q(dest)}\n"
            f"echo \"$sum\" > {q(dest + '.sha256')}\n")
        return CommandResult(verify.rc, verify.stdout, verify.stderr, int((time.monotonic() - t0) * 1000))
