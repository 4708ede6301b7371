"""Run roles on hosts: facts in one round trip per host, decisions locally, changes applied by one executor.

Strategy (documented in docs/engine.md): plays run in order with a barrier between plays (a role may
depend on the previous one on other hosts, e.g. join after init). Within a play every host runs
the role's task list independently on its own worker thread, so fast hosts never wait for slow ones.
A host that fails or becomes unreachable is marked and skipped for the rest of the run.

Here: plays, connections, locks, and deciding tasks (when, loop, until, delegate_to, run_once, check
mode). Host selection and per-host state: hosts.py; variables: vars.py; the fact cache: facts.py;
applying decided items and reporting them: executor.py.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.engine.events import NullSink, RunReport, Sink, Status
from provisioner.engine.executor import Batch, Decided, Executor, registered
from provisioner.engine.facts import TaskError
from provisioner.engine.hosts import HostState, Transport, select_hosts
from provisioner.engine.lock import owner_record
from provisioner.engine.roles import ROLES_DIR, TEMPLATES_DIR, Play, Role, Task, load_role
from provisioner.engine.templating import Renderer, make_env
from provisioner.engine.vars import merge_host_vars
from provisioner.errors import HostConnectionError, HostKeyError, KprovError, LockHeld, RoleError
from provisioner.inventory.model import Host, Inventory
from provisioner.modules.base import Effect, FactQuery, Module, NoChange, SetVars, Skip, get_module
from provisioner.secrets import Redactor
from provisioner.transport.ssh import ConnectOptions, SSHHost

log = logging.getLogger(__name__)

#: what one task on one host came to: status, registered data, message, diff
Outcome = tuple[Status, dict[str, Any], str, str]


@dataclass(frozen=True)
class RunOptions:
    check: bool = False
    forks: int = 128
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    limit: tuple[str, ...] | None = None
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    connect: ConnectOptions = field(default_factory=ConnectOptions)


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
        self.executor = Executor(self.env, self.sink, self.report, self.redactor, options.extra_vars)
        #: cluster-wide computed variables (between role defaults and inventory vars)
        self.base_vars = dict(base_vars or {})
        self.states = {h.name: HostState(h) for h in inventory.hosts}
        self._roles: dict[str, Role] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, options.forks), thread_name_prefix="kprov")
        #: who we are, for a run that finds a host locked (engine/lock.py)
        self._owner = owner_record(f"kprov run on cluster {inventory.cluster.name}")
        self._locked: list[LockHeld] = []
        #: run_once results: (the host that ran it, its outcome)
        self._once: dict[str, tuple[str, Outcome]] = {}
        self._once_locks: dict[str, threading.Lock] = {}
        self._once_lock = threading.Lock()

    # -- hosts ------------------------------------------------------------------------------
    def select(self, pattern: str) -> list[Host]:
        """Host pattern (see hosts.select_hosts), narrowed by --limit."""
        return select_hosts(self.inventory, pattern, self.options.limit)

    def _live(self, hosts: Sequence[Host]) -> list[HostState]:
        return [self.states[h.name] for h in hosts if self.states[h.name].dead is None]

    def connect(self, hosts: Sequence[Host]) -> None:
        """Open connections in parallel; unreachable hosts are marked, the rest go on."""
        todo = [s for s in self._live(hosts) if s.transport is None]
        list(self._pool.map(self._connect_one, todo))

    def _connect_one(self, st: HostState) -> None:
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
                self.executor.mark(st, Status.FAILED, "connect", "ssh host key", exc.message, t0, exc.hint or "")
            except KprovError as exc:
                self.executor.mark(st, Status.UNREACHABLE, "connect", "ssh connect", exc.message, t0, exc.hint or "")
            except Exception as exc:
                self.executor.mark(st, Status.UNREACHABLE, "connect", "ssh connect", f"{type(exc).__name__}: {exc}", t0)

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
                if self.report.stopped:
                    break
        finally:
            self.report.finished = time.monotonic()
        return self.report

    def run_play(self, play: Play) -> None:
        role = self.role(play.role)
        hosts = self.select(play.hosts)
        self.connect(hosts)
        live = self._live(hosts)
        out = [self.states[h.name] for h in hosts]
        if hosts and not live and any(st.dead is Status.UNREACHABLE for st in out):
            # nothing can run on any of them, nor after them: say so once instead of printing empty roles
            names = ", ".join(st.host.name for st in out[:8]) + (f" +{len(out) - 8} more" if len(out) > 8 else "")
            what = "unreachable" if all(st.dead is Status.UNREACHABLE for st in out) else "unreachable or failed"
            self.report.stopped = (
                f"stopped before {role.name}: every host of that play is {what} ({names}); "
                "the remaining plays were not run"
            )
            return
        self.sink.play_start(role.name, [s.host.name for s in live])
        limited = {h.name for h in self.select(play.limited_hosts)} if play.limited_hosts else set()

        def only(st: HostState) -> str | None:
            return play.limited_tag if st.host.name in limited else None

        t0 = time.monotonic()
        if play.serial:
            for st in live:
                self._run_role_on_host(role, st, only(st))
        else:
            list(self._pool.map(lambda st: self._run_role_on_host(role, st, only(st)), live))
        took = time.monotonic() - t0
        self.report.role_times[role.name] = self.report.role_times.get(role.name, 0.0) + took
        self.sink.play_end(role.name, took)

    # -- variables and facts ------------------------------------------------------------------
    def host_vars(self, st: HostState, role: Role) -> dict[str, Any]:
        return merge_host_vars(
            self.env,
            self.inventory,
            st.host,
            role_name=role.name,
            role_defaults=role.defaults,
            base_vars=self.base_vars,
            extra_vars=self.options.extra_vars,
            run_vars=st.vars,
            all_run_vars={n: s.vars for n, s in self.states.items()},
            check=self.options.check,
            dead=frozenset(n for n, s in self.states.items() if s.dead is not None),
        )

    def gather(self, st: HostState, queries: Sequence[FactQuery]) -> dict[str, Any]:
        with st.lock:
            assert st.transport is not None
            return st.facts.gather(st.transport, queries)

    def _prefetch(self, st: HostState, role: Role, only_tag: str | None) -> None:
        """Gather the facts of every task we can already render: one round trip for the whole role."""
        queries: list[FactQuery] = []
        variables = self.host_vars(st, role)
        for task in role.tasks:
            if task.loop is not None or task.delegate_to or not self._selected(task, only_tag):
                continue
            try:
                r = Renderer(self.env, variables, task.where)
                if task.when is not None and not r.evaluate(task.when):
                    continue
                module = get_module(task.module, task.where)
                queries.extend(module.facts(module.validate(module.prepare(task.args, r), task.where)))
            except Exception:
                continue
        if queries:
            self.gather(st, queries)

    # -- a role on a host ---------------------------------------------------------------------
    def _selected(self, task: Task, only_tag: str | None = None) -> bool:
        """The run's --tags/--skip-tags, and the play's tag for its limited hosts (`only_tag`)."""
        if only_tag is not None and only_tag not in task.tags:
            return False
        if self.options.tags and not (task.tags & self.options.tags):
            return False
        return not (self.options.skip_tags and task.tags & self.options.skip_tags)

    def _run_role_on_host(self, role: Role, st: HostState, only_tag: str | None = None) -> None:
        """The role's tasks on one host, then the handlers they notified; with `only_tag`, only the tasks
        carrying that tag (the play's limited hosts)."""
        if st.dead is not None:
            return
        notified: set[str] = set()
        on_start = getattr(self.sink, "task_start", None)  # optional: sinks that show what runs now
        if on_start is not None:
            on_start(st.host.name, f"{role.name} | gathering facts")
        try:
            self._prefetch(st, role, only_tag)
        except HostConnectionError as exc:
            self.executor.mark(
                st, Status.UNREACHABLE, role.name, "gather facts", exc.message, time.monotonic(), exc.hint or ""
            )
            return
        except KprovError:
            pass
        batch = Batch()
        for task in role.tasks:
            if st.dead is not None:
                return
            if not self._selected(task, only_tag):
                continue
            if self._batchable(task) and self._decide_into_batch(role, st, task, batch):
                continue
            notified.update(self.executor.flush(st, batch))
            if st.dead is not None:
                return
            changed = self._run_task(role, st, task)
            if changed:
                notified.update(task.notify)
        notified.update(self.executor.flush(st, batch))
        for handler in role.handlers:
            if st.dead is not None:
                return
            if handler.name in notified:
                self._run_task(role, st, handler)

    # -- batching: consecutive independent changes in one round trip --------------------------
    def _batchable(self, task: Task) -> bool:
        """Tasks whose outcome nothing else in the role reads: decided now, applied with their neighbours."""
        return (
            not self.options.check
            and task.loop is None
            and task.register is None
            and task.until is None
            and task.changed_when is None
            and task.failed_when is None
            and not task.retries
            and task.delegate_to is None
            and not task.ignore_errors
            and not task.no_log
            and task.timeout is None
            and not task.run_once
            and get_module(task.module, task.where).batchable
        )

    def _decide_into_batch(self, role: Role, st: HostState, task: Task, batch: Batch) -> bool:
        """Decide a task from (cached) facts and queue its outcome. False: run it the normal way."""
        t0 = time.monotonic()
        try:
            r = Renderer(self.env, self.host_vars(st, role), task.where)
            if task.when is not None and not r.evaluate(task.when):
                batch.add(Decided(task, t0, Status.SKIPPED, "condition false"))
                return True
            module = get_module(task.module, task.where)
            args = module.validate(module.prepare(task.args, r), task.where)
            queries = module.facts(args)
            resources = {q.resource for q in queries}
            if batch.has_changes and (
                "*" in batch.touched or resources & batch.touched or any(r.startswith("unless:") for r in resources)
            ):
                notified = self.executor.flush(st, batch)  # its facts depend on a queued change: apply those first
                batch.notified_early.update(notified)
                if st.dead is not None:
                    return True
            decision = module.check(args, self.gather(st, queries))
        except KprovError:
            return False  # let the normal path report it with its full context
        if isinstance(decision, Effect):
            if not decision.batchable:  # uploads, local writes, changes that report ok: on their own
                return False
            batch.add(Decided(task, t0, Status.CHANGED, decision.msg, decision, module, args))
        elif isinstance(decision, SetVars):
            return False
        elif isinstance(decision, Skip):
            batch.add(Decided(task, t0, Status.SKIPPED, decision.msg))
        else:
            batch.add(Decided(task, t0, Status.OK, decision.msg))
        return True

    # -- one task, the normal way (a batch of one) ----------------------------------------------
    def _run_task(self, role: Role, st: HostState, task: Task) -> bool:
        """Run one task (all loop items) on one host. Returns True when something changed."""
        t0 = time.monotonic()
        on_start = getattr(self.sink, "task_start", None)  # optional: sinks that show the task running now
        if on_start is not None:
            on_start(st.host.name, task.name)
        variables = self.host_vars(st, role)
        r = Renderer(self.env, variables, task.where)
        try:
            if task.loop is None and task.when is not None and not r.evaluate(task.when):
                self.executor.register(st, task, registered(skipped=True))
                self.executor.emit(st, task, Status.SKIPPED, t0, "condition false")
                return False
            if task.loop is not None:
                items = r.render(task.loop)
                if not isinstance(items, list):
                    raise RoleError(
                        f"{task.where}: loop must render to a list, got {type(items).__name__}",
                        hint='loop: "{{ my_list }}" or a YAML list',
                    )
            else:
                items = [None]
            results, any_changed, msgs, diffs = [], False, [], []
            statuses = []
            for item in items:
                if task.loop is not None:
                    variables[task.loop_var] = item
                    r = Renderer(self.env, variables, task.where)
                    if task.when is not None and not r.evaluate(task.when):  # `when` holds per item
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
                reg = {
                    "changed": any_changed,
                    "skipped": all(s is Status.SKIPPED for s in statuses),
                    "failed": False,
                    "results": results,
                }
            else:
                reg = results[0]
            self.executor.register(st, task, reg)
            if any_changed:
                final = Status.CHANGED
            elif statuses and all(s is Status.SKIPPED for s in statuses):
                final = Status.SKIPPED
            else:
                final = Status.OK
            self.executor.emit(
                st, task, final, t0, "; ".join(msgs[:3]) + (" ..." if len(msgs) > 3 else ""), "\n".join(diffs)
            )
            return any_changed
        except HostConnectionError as exc:
            self.executor.mark(st, Status.UNREACHABLE, task.role, task.name, exc.message, t0, exc.hint or "")
        except KprovError as exc:
            self.executor.task_failed(st, task, t0, exc)
        except Exception as exc:
            log.debug("internal error on %s: %s", st.host.name, traceback.format_exc())
            st.dead = Status.FAILED
            self.executor.emit(st, task, Status.FAILED, t0, f"internal error: {type(exc).__name__}: {exc}")
        return False

    def _target(self, st: HostState, task: Task, r: Renderer) -> HostState:
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

    def _run_single(self, st: HostState, task: Task, r: Renderer, variables: dict[str, Any]) -> Outcome:
        module = get_module(task.module, task.where)
        args = module.validate(module.prepare(task.args, r), task.where)
        target = self._target(st, task, r)
        if task.run_once:
            return self._run_once(st, target, task, module, args, variables)
        return self._run_delegable(st, target, task, module, args, variables)

    def _run_once(
        self,
        st: HostState,
        target: HostState,
        task: Task,
        module: Module,
        args: Mapping[str, Any],
        variables: dict[str, Any],
    ) -> Outcome:
        """`run_once`: the first host runs the task, the others get its result (e.g. one bootstrap
        token for every node joining in this run, instead of one token per node)."""
        key = f"{task.where}@{target.host.name}"
        with self._once_lock:
            lock = self._once_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._once:
                runner_host, (status, data, msg, diff) = self._once[key]
                shared = f"result of {runner_host}" + (f": {msg}" if msg else "")
                return (Status.OK if status is Status.CHANGED else status), dict(data), shared, ""
            outcome = self._run_delegable(st, target, task, module, args, variables)
            self._once[key] = (st.host.name, outcome)
            return outcome

    def _run_delegable(
        self,
        st: HostState,
        target: HostState,
        task: Task,
        module: Module,
        args: Mapping[str, Any],
        variables: dict[str, Any],
    ) -> Outcome:
        if target is st:
            return self._run_on(st, target, task, module, args, variables)
        try:
            return self._run_on(st, target, task, module, args, variables)
        except HostConnectionError as exc:
            # the delegate's connection failed, not ours: that host is unreachable, this task failed
            self.executor.mark(
                target,
                Status.UNREACHABLE,
                task.role,
                f"{task.name} (delegated by {st.host.name})",
                exc.message,
                time.monotonic(),
                exc.hint or "",
            )
            raise TaskError(
                f"delegate host {target.host.name} became unreachable: {exc.message}", hint=exc.hint
            ) from None

    def _run_on(
        self,
        st: HostState,
        target: HostState,
        task: Task,
        module: Module,
        args: Mapping[str, Any],
        variables: dict[str, Any],
    ) -> Outcome:
        attempts = 1 + max(0, task.retries)
        runs_in_check = task.check_mode == "run" or module.runs_in_check
        for attempt in range(attempts):
            facts = self.gather(target, module.facts(args))
            decision = module.check(args, facts)
            if isinstance(decision, NoChange):
                if isinstance(decision, SetVars):
                    st.vars.update(decision.vars)
                return Status.OK, registered(msg=decision.msg, **decision.register_data()), decision.msg, ""
            if isinstance(decision, Skip):
                return Status.SKIPPED, registered(skipped=True, msg=decision.msg), decision.msg, ""
            if self.options.check and not runs_in_check and task.changed_when is False:
                # the task declares it never changes anything (e.g. daemon-reload): nothing to plan
                return Status.OK, registered(check_mode=True, msg=decision.msg), "", ""
            if self.options.check and not runs_in_check and not decision.reports_changed and task.changed_when is None:
                # a wait changes nothing by itself (what it waits for is planned by the tasks that bring it up):
                # a plan of a converged cluster reports 0 changed
                return Status.OK, registered(check_mode=True, msg=decision.msg), f"would {decision.msg}", ""
            if self.options.check and not runs_in_check:
                data = registered(changed=True, check_mode=True, msg=decision.msg)
                return Status.CHANGED, data, f"would {decision.msg}", decision.diff
            change = decision
            item = Decided(task, time.monotonic(), Status.CHANGED, change.msg, change, module, args)
            if self.options.check:
                try:
                    status, data = self._apply(target, item, variables, shared=target is not st)
                except TaskError as exc:
                    # a read-only query that cannot answer before apply (e.g. `containerd --version` on a
                    # fresh host): the plan goes on; later tasks see a failed, skipped result
                    data = registered(failed=True, skipped=True, check_mode=True, msg=exc.message)
                    return Status.SKIPPED, data, f"cannot be evaluated before apply: {exc.message}", ""
                break
            # a read-only query delegated to another host: identical asks at the same moment share one run
            status, data = self._apply(target, item, variables, shared=target is not st and runs_in_check)
            if task.until is None or attempt + 1 >= attempts:
                break
            if self._until_holds(task, data, variables):
                break
            time.sleep(task.delay)
        if task.until is not None and not self._until_holds(task, data, variables):
            raise TaskError(
                f"{task.name}: condition {task.until!r} not met after {attempts} attempts",
                hint="see the host's output above",
                detail=data.get("stderr") or data.get("stdout"),
            )
        if status is Status.CHANGED:
            return status, data, change.msg, change.diff
        return status, data, data.get("msg", change.msg), ""

    def _apply(
        self, target: HostState, item: Decided, variables: dict[str, Any], shared: bool = False
    ) -> tuple[Status, dict[str, Any]]:
        """A batch of one: the executor applies the change on the target and settles its outcome."""
        (res,) = self.executor.apply(target, [item], timeout=item.task.timeout, shared=shared)
        return self.executor.settle(item, res, variables)

    def _until_holds(self, task: Task, data: dict[str, Any], variables: dict[str, Any]) -> bool:
        local = {**variables, "result": data}
        if task.register:
            local[task.register] = data
        return Renderer(self.env, local, task.where).evaluate(task.until)
