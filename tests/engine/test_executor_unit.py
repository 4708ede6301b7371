"""In-process engine tests (no root, no SSH, seconds): module decisions from captured facts, and the
executor driven through a scripted fake transport.

The fake transport is allowed here only: it checks engine logic (ordering, batching, handlers,
failures, unreachable hosts). What the shell does on a real host is tested against real sshd in the
other files of this directory.
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.engine.events import Event, Status
from provisioner.engine.executor import Decided, Executor
from provisioner.engine.hosts import HostState, select_hosts
from provisioner.engine.roles import Play, Task
from provisioner.engine.runner import Runner, RunOptions
from provisioner.engine.templating import make_env
from provisioner.errors import HostConnectionError, InputError, RoleError
from provisioner.facts.parsers import FileState, parse_file_state
from provisioner.inventory.loader import load_inventory
from provisioner.modules.base import (
    REGISTRY,
    Change,
    Effect,
    LocalWrite,
    NoChange,
    SetVars,
    Skip,
    Upload,
    get_module,
)
from provisioner.secrets import Redactor
from provisioner.transport.ssh import CommandResult

CAPTURED = Path(__file__).parents[1] / "facts" / "captured"
SMALL_SHA = "4a1e67f2fe1d1cc7b31d0ca2ec441da4778203a036a77da10344c85e24ff0f92"


def captured_file(name: str) -> FileState:
    """A FileState parsed from `stat` output captured on a real Debian node (tests/facts/capture.py)."""
    return parse_file_state((CAPTURED / f"{name}.out").read_text(), int((CAPTURED / f"{name}.rc").read_text()))


# == module decisions: args + captured facts -> typed decision ======================================


class _Args:
    """Renders nothing: arguments are given already rendered; `assert` results are given as booleans."""

    def render(self, value: Any) -> Any:
        return value

    def evaluate(self, expr: Any) -> bool:
        return bool(expr)

    def render_file(self, name: str) -> str:
        return f"rendered {name}\n"


def decide(module: str, args: dict[str, Any], facts: dict[str, Any]):
    m = get_module(module, "t")
    return m.check(m.validate(m.prepare(args, _Args()), "t"), facts)


DECISIONS = [
    # module, args, facts, decision type, words in msg, fields the decision must have
    (
        "file",
        {"path": "/etc/x", "content": "hello\nworld\n", "mode": "0640"},
        {"file": captured_file("file_small")},
        NoChange,
        "/etc/x up to date",
        {},
    ),
    (
        "file",
        {"path": "/etc/x", "content": "hello\nworld\n", "mode": "0644"},
        {"file": captured_file("file_small")},
        Change,
        "mode 640 -> 644",
        {"script": "chmod 644 -- /etc/x"},
    ),
    (
        "file",
        {"path": "/etc/x", "content": "new\n"},
        {"file": captured_file("file_small")},
        Change,
        "update /etc/x",
        {"reports_changed": True},
    ),
    (
        "file",
        {"path": "/etc/x", "content": "new\n"},
        {"file": captured_file("file_absent")},
        Change,
        "create /etc/x",
        {},
    ),
    (
        "file",
        {"path": "/etc/x", "state": "absent"},
        {"file": captured_file("file_absent")},
        NoChange,
        "already absent",
        {},
    ),
    (
        "file",
        {"path": "/etc/x", "state": "absent"},
        {"file": captured_file("file_small")},
        Change,
        "remove /etc/x",
        {"script": "rm -rf -- /etc/x"},
    ),
    (
        "file",
        {"path": "/d", "state": "directory"},
        {"file": captured_file("file_dir")},
        NoChange,
        "directory /d present",
        {},
    ),
    ("file", {"path": "/l", "state": "link", "src": "/t"}, {"link": "/t"}, NoChange, "/l -> /t", {}),
    ("file", {"path": "/l", "state": "link", "src": "/t"}, {"link": "<not-a-link>"}, Change, "link /l -> /t", {}),
    (
        "template",
        {"src": "a.j2", "dest": "/etc/a"},
        {"file": captured_file("file_absent")},
        Change,
        "create /etc/a",
        {},
    ),
    (
        "line",
        {"path": "/etc/x", "line": "world"},
        {"file": captured_file("file_small")},
        NoChange,
        "already as wanted",
        {},
    ),
    ("line", {"path": "/etc/x", "line": "more"}, {"file": captured_file("file_small")}, Change, "edit /etc/x", {}),
    (
        "line",
        {"path": "/etc/x", "regexp": "^wor", "line": "planet"},
        {"file": captured_file("file_small")},
        Change,
        "edit /etc/x",
        {},
    ),
    (
        "line",
        {"path": "/etc/x", "line": "a", "create": False},
        {"file": captured_file("file_absent")},
        Change,
        "edit /etc/x",
        {"script": "exit 1"},
    ),
    ("command", {"argv": ["kubeadm", "init"]}, {}, Change, "run: kubeadm init", {"reports_changed": True}),
    ("command", {"shell": "x", "creates": "/etc/k"}, {"creates": True}, Skip, "/etc/k exists", {}),
    ("command", {"shell": "x", "removes": "/etc/k"}, {"removes": False}, Skip, "/etc/k does not exist", {}),
    ("command", {"shell": "x", "unless": "true"}, {"unless": True}, NoChange, "unless-check passed", {}),
    ("wait_for", {"port": 6443}, {}, Change, "wait for 127.0.0.1:6443", {"reports_changed": False}),
    ("assert", {"that": [True, True]}, {}, NoChange, "all assertions passed", {}),
    ("set_fact", {"vars": {"a": 1}}, {}, SetVars, "set a", {"vars": {"a": 1}}),
    (
        "fetch",
        {"src": "/etc/k.conf", "dest": "/nonexistent-kprov-dir/k.conf"},
        {"file": captured_file("file_small")},
        LocalWrite,
        "fetch /etc/k.conf",
        {"content": b"hello\nworld\n", "mode": "600"},
    ),
    (
        "fetch",
        {"src": "/etc/k.conf", "dest": "/nonexistent-kprov-dir/k.conf"},
        {"file": captured_file("file_absent")},
        Change,
        "fetch /etc/k.conf",
        {"script": "exit 1"},
    ),
    (
        "upload",
        {"src": __file__, "dest": "/opt/b.tar", "sha256": "ab" * 32},
        {"remote": ("none", "0")},
        Upload,
        "upload test_executor_unit.py",
        {"offset": 0, "dest": "/opt/b.tar"},
    ),
    (
        "upload",
        {"src": __file__, "dest": "/opt/b.tar", "sha256": "ab" * 32},
        {"remote": ("none", "10")},
        Upload,
        "resuming at 10 bytes",
        {"offset": 10},
    ),
    (
        "upload",
        {"src": __file__, "dest": "/opt/b.tar", "sha256": "ab" * 32},
        {"remote": ("ab" * 32, "0")},
        NoChange,
        "present (sha256 abababababab)",
        {},
    ),
    (
        "bundle_pull",
        {"dest": "/opt/b", "files": [], "peer": "cp", "why_not": "no seed"},
        {"present": False},
        Change,
        "upload directly: no seed",
        {"reports_changed": False},
    ),
    ("bundle_pull", {"dest": "/opt/b", "files": [], "peer": "cp"}, {"present": True}, NoChange, "present", {}),
    ("bundle_serve", {"root": "/r", "bind": "10.0.0.1"}, {}, NoChange, "no other node needs the bundle", {}),
]


@pytest.mark.parametrize(
    "module, args, facts, kind, words, fields", [pytest.param(*c, id=f"{c[0]}-{i}") for i, c in enumerate(DECISIONS)]
)
def test_module_decision_from_captured_facts(module, args, facts, kind, words, fields):
    got = decide(module, args, facts)
    assert type(got) is kind, got
    assert words in got.msg
    for name, want in fields.items():
        value = getattr(got, name)
        assert (want in value) if name == "script" else (value == want), (name, value)


def test_every_effect_applies_itself_and_only_plain_scripts_batch():
    changes = [
        Change("m", "true"),
        Change("m", "true", reports_changed=False),
        Upload("m", src="s", dest="d", sha256="x", mode="644"),
        LocalWrite("m", "/p", b""),
    ]
    assert all(isinstance(c, Effect) for c in changes)
    assert [c.batchable for c in changes] == [True, False, False, False]


def test_assert_fails_the_host_with_its_message():
    with pytest.raises(RoleError) as err:
        decide("assert", {"that": [True, False], "msg": "too small"}, {})
    assert err.value.message == "too small" and "failed check: False" in (err.value.hint or "")


def test_modules_declare_what_the_engine_needs():
    """What the engine used to know by module name now sits on the modules."""
    not_batched = {n for n, m in REGISTRY.items() if not m.batchable}
    runs_in_check = {n for n, m in REGISTRY.items() if m.runs_in_check}
    assert not_batched == {"fetch", "upload", "set_fact", "assert", "wait_for", "host_facts", "preflight_check"}
    assert runs_in_check == {"assert", "set_fact", "host_facts", "preflight_check"}


# == the executor through a scripted fake transport ==================================================

_SECTION = re.compile(
    r"echo '(?P<m>__KPROV_[0-9a-f]+) (?P<i>\d+) BEGIN'\n\( (?P<body>.*?)\n\) </dev/null 2>(?P<err>\S+)"
    r"\nrc=\$\?\necho \"\"\necho \"(?P=m) (?P=i) END \$rc\"(?P<stop>\n\[ \$rc -eq 0 \] \|\| exit 0)?",
    re.S,
)


@dataclass
class FakeHost:
    """A scripted host. It understands the engine's framing, the file module's fact query and atomic
    write, and a tiny command language, one per line: `touch P` (P exists afterwards), `say TEXT`
    (stdout), `warn TEXT` (stderr), `fail N`, `count` (prints how often it ran), `drop` (the connection
    is lost). Fact queries `[ -e P ]` and `unless` probes are answered from its files."""

    name: str
    reachable: bool = True
    files: dict[str, bytes] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)  # every script, in order: one per round trip
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, body: str) -> tuple[int, str, str]:
        """(rc, stdout, stderr) of a body of the command language."""
        out: list[str] = []
        err: list[str] = []
        lines = iter(body.splitlines())
        for line in lines:
            line = line.strip()
            word, _, rest = line.partition(" ")
            if m := re.fullmatch(r"\[ -e (\S+) \] && echo yes \|\| echo no", line):
                out.append("yes" if m.group(1).strip("'") in self.files else "no")
            elif m := re.match(r"if \[ -e (\S+) \] \|\| \[ -L \S+ \]; then s=\$\(stat", line):
                path = m.group(1).strip("'")
                data = self.files.get(path)
                out.append(
                    "ABSENT"
                    if data is None
                    else f"regular file|644|root|root|{len(data)}\n\n{base64.b64encode(data).decode()}"
                )
            elif line.startswith("base64 -d > \"$tmp\" <<'KPROV_EOF'"):
                encoded = "".join(iter(lambda: next(lines), "KPROV_EOF"))
                written = base64.b64decode(encoded)
            elif m := re.fullmatch(r'mv -f -- "\$tmp" (\S+)', line):
                self.files[m.group(1).strip("'")] = written
            elif m := re.fullmatch(r"\{ (.*)", line):
                rc, _, _ = self.run(m.group(1))  # an `unless` probe: its exit status only
                out.append("yes" if rc == 0 else "no")
            elif word == "touch":
                self.files[rest] = b""
            elif word == "say":
                out.append(rest)
            elif word == "warn":
                err.append(rest)
            elif word == "count":
                self.counter += 1
                out.append(str(self.counter))
            elif word == "fail":
                return int(rest), "\n".join(out) + "\n", "\n".join(err) + "\n"
            elif word == "drop":
                raise HostConnectionError(f"{self.name}: connection lost", hint="check the host and rerun")
        return 0, "\n".join(out) + ("\n" if out else ""), "\n".join(err) + ("\n" if err else "")

    def script(self, script: str) -> CommandResult:
        with self.lock:
            self.sent.append(script)
            sections = list(_SECTION.finditer(script))
            if not sections:  # one change on its own: "{\nset -e\n<script>\n} </dev/null\n"
                inner = re.fullmatch(r"\{\nset -e\n(.*)\n\} </dev/null\n", script, re.S)
                rc, out, err = self.run(_strip_wrapping(inner.group(1) if inner else script))
                return CommandResult(rc, out, err, 1)
            text = []
            for s in sections:
                rc, out, err = self.run(_strip_wrapping(s.group("body").removeprefix("set -e\n")))
                merged = out + (err if s.group("err") == "&1" else "")
                text.append(f"{s.group('m')} {s.group('i')} BEGIN\n{merged}\n{s.group('m')} {s.group('i')} END {rc}\n")
                if rc != 0 and s.group("stop"):
                    break
            return CommandResult(0, "".join(text), "", 1)


def _strip_wrapping(body: str) -> str:
    """The command module's `{\\n...\\n} </dev/null`; an `unless` probe keeps its own braces."""
    m = re.fullmatch(r"\{\n(.*)\n\} </dev/null", body.strip(), re.S)
    return m.group(1) if m else body


class FakeTransport:
    """The engine's Transport protocol over a FakeHost."""

    def __init__(self, host: FakeHost) -> None:
        self.fake = host

    def connect(self) -> None:
        if not self.fake.reachable:
            raise HostConnectionError(f"cannot connect to {self.fake.name}", hint="check the address")

    def close(self) -> None:
        pass

    def hold_lock(self, owner: str) -> None:
        pass

    def exec(self, command: str, **kw: Any) -> CommandResult:
        raise AssertionError("the engine sends scripts, never bare commands")

    def script(self, script: str, *, timeout: float | None = None, become: bool | None = None) -> CommandResult:
        return self.fake.script(script)

    def put_stream(self, remote_path: str, fh: Any, *, offset: int = 0) -> int:
        data = fh.read()
        self.fake.files[remote_path] = data
        return len(data)


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def play_start(self, role: str, hosts: list[str]) -> None:
        pass

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def play_end(self, role: str, duration_s: float) -> None:
        pass


@dataclass
class Run:
    sink: ListSink
    hosts: dict[str, FakeHost]
    report: Any

    def of(self, host: str) -> list[tuple[str, str]]:
        """(task, status) of a host's events in the order they were reported."""
        return [(e.task, e.status.value) for e in self.sink.events if e.host == host]

    def event(self, host: str, task: str) -> Event:
        (ev,) = [e for e in self.sink.events if e.host == host and e.task == task]
        return ev

    def round_trips(self, host: str) -> int:
        return len(self.hosts[host].sent)


@pytest.fixture
def engine(tmp_path):
    """Run roles written as YAML on fake hosts `a`, `b`, `c`; returns a Run."""
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(
        yaml.safe_dump(
            {
                "cluster": {"name": "unit", "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12"},
                "defaults": {"user": "root"},
                "hosts": [
                    {"name": n, "address": f"127.0.0.{i + 2}", "roles": ["control_plane" if i == 0 else "worker"]}
                    for i, n in enumerate("abc")
                ],
            }
        )
    )
    inventory = load_inventory(inv_path)

    def run(
        tasks: list[dict],
        *,
        handlers: list[dict] | None = None,
        hosts: str = "a,b",
        check: bool = False,
        unreachable: tuple[str, ...] = (),
        files: dict[str, set[str]] | None = None,
        extra_vars: dict[str, Any] | None = None,
        fakes: dict[str, FakeHost] | None = None,
        limited: tuple[str, str] = ("", ""),
    ) -> Run:
        role = tmp_path / "roles" / "r"
        role.mkdir(parents=True, exist_ok=True)
        (role / "tasks.yaml").write_text(yaml.safe_dump(tasks, sort_keys=False))
        (role / "handlers.yaml").write_text(yaml.safe_dump(handlers or [], sort_keys=False))
        fakes = (
            fakes
            if fakes is not None
            else {
                n: FakeHost(n, reachable=n not in unreachable, files=dict.fromkeys((files or {}).get(n, ()), b""))
                for n in "abc"
            }
        )
        sink = ListSink()
        runner = Runner(
            inventory,
            RunOptions(check=check, extra_vars=extra_vars or {}),
            sink,
            roles_dir=tmp_path / "roles",
            templates_dir=tmp_path,
            connector=lambda h: FakeTransport(fakes[h.name]),
        )
        try:
            report = runner.run([Play(role="r", hosts=hosts, limited_hosts=limited[0], limited_tag=limited[1])])
        finally:
            runner.close()
        return Run(sink, fakes, report)

    return run


def sh(name: str, body: str, **keys: Any) -> dict:
    """A command task; `creates`/`removes`/`unless` go to the module, every other key to the task."""
    module = {"shell": body, **{k: keys.pop(k) for k in ("creates", "removes", "unless") if k in keys}}
    return {"name": name, "command": module, **keys}


def put(name: str, path: str, content: str, **keys: Any) -> dict:
    return {"name": name, "file": {"path": path, "content": content}, **keys}


CHANGED, OK, SKIPPED, FAILED, UNREACHABLE = "changed", "ok", "skipped", "failed", "unreachable"


@pytest.mark.parametrize(
    "tasks, round_trips, events",
    [
        # one round trip for the role's facts, one for its three independent changes, reported in task order
        (
            [put("one", "/1", "1"), put("two", "/2", "2"), put("three", "/3", "3")],
            2,
            [("one", CHANGED), ("two", CHANGED), ("three", CHANGED)],
        ),
        # a registered task is a batch of one: the queue before it is applied first; a command may change
        # anything, so the facts after it are gathered again
        (
            [put("one", "/1", "1"), sh("two", "say hi", register="x"), put("three", "/3", "3")],
            5,
            [("one", CHANGED), ("two", CHANGED), ("three", CHANGED)],
        ),
        # a task whose facts a queued change may alter waits for that change: prefetch, flush, re-gather
        (
            [sh("make", "touch /m"), sh("guarded", "touch /never", creates="/m")],
            3,
            [("make", CHANGED), ("guarded", SKIPPED)],
        ),
        # a file written by a queued change is read again before the next task decides about it
        ([put("first", "/f", "a"), put("second", "/f", "b")], 4, [("first", CHANGED), ("second", CHANGED)]),
        # nothing to do: the role costs its one fact round trip
        (
            [
                sh("guarded", "touch /x", creates="/present"),
                sh("probe", "touch /y", unless="say ok"),
                put("same", "/present", ""),
            ],
            1,
            [("guarded", SKIPPED), ("probe", OK), ("same", OK)],
        ),
        # `when` false is decided locally, in order with the queued changes
        (
            [put("one", "/1", "1"), sh("never", "touch /n", when="false"), put("three", "/3", "3")],
            2,
            [("one", CHANGED), ("never", SKIPPED), ("three", CHANGED)],
        ),
        # a wait is never batched (it is not a change), reports ok and leaves the cached facts alone
        (
            [
                put("one", "/1", "1"),
                {"name": "wait", "wait_for": {"shell": "true", "timeout": 5}},
                put("two", "/2", "2"),
            ],
            4,
            [("one", CHANGED), ("wait", OK), ("two", CHANGED)],
        ),
    ],
    ids=["batched", "register-splits", "facts-after-flush", "same-file", "noop", "when-false", "wait-alone"],
)
def test_batching_and_order(engine, tasks, round_trips, events):
    run = engine(tasks, files={"a": {"/present"}, "b": {"/present"}})
    for host in ("a", "b"):
        assert run.of(host) == events
        assert run.round_trips(host) == round_trips, run.hosts[host].sent
    assert run.report.exit_status() == 0
    written = {t["file"]["path"]: t["file"]["content"].encode() for t in tasks if "file" in t}
    assert {p: run.hosts["a"].files.get(p) for p in written} == written


@pytest.mark.parametrize(
    "files, handler_runs",
    [
        (set(), 1),  # two notifiers changed: the handler runs once, at the end
        ({"/1", "/2"}, 0),  # nothing changed: it does not run
        ({"/1"}, 1),  # one notifier changed
    ],
)
def test_handlers_run_once_per_host_and_only_when_notified(engine, files, handler_runs):
    tasks = [
        sh("one", "touch /1", creates="/1", notify="bump"),
        sh("two", "touch /2", creates="/2", notify="bump"),
        sh("other", "say x", changed_when=False, notify="never"),
    ]
    handlers = [sh("bump", "count"), sh("never", "touch /never")]
    run = engine(tasks, handlers=handlers, files={"a": set(files), "b": set(files)})
    for host in ("a", "b"):
        assert [t for t, _ in run.of(host)].count("bump") == handler_runs
        assert run.of(host)[-1] == (("bump", CHANGED) if handler_runs else ("other", OK))
        assert run.hosts[host].counter == handler_runs and "/never" not in run.hosts[host].files


@pytest.mark.parametrize(
    "tasks, on_b, exit_status",
    [
        # a failure inside a batch: the later queued tasks are not reported, the host stops
        (
            [
                put("one", "/1", "1"),
                sh("boom", "warn bad\nfail 7", when="inventory_hostname == 'b'"),
                put("three", "/3", "3"),
            ],
            [("one", CHANGED), ("boom", FAILED)],
            1,
        ),
        # a failure of a task on its own (registered)
        (
            [sh("boom", "warn bad\nfail 7", register="r", when="inventory_hostname == 'b'"), sh("three", "touch /3")],
            [("boom", FAILED)],
            1,
        ),
        # ignored: reported ok, the host goes on, the registered result says it failed
        (
            [
                sh("boom", "fail 7", register="r", ignore_errors=True, when="inventory_hostname == 'b'"),
                sh("seen", "say x", when="r.failed", changed_when=False),
            ],
            [("boom", OK), ("seen", OK)],
            0,
        ),
        # failed_when decides from the output
        (
            [
                sh(
                    "judged",
                    "say broken",
                    register="r",
                    failed_when="'broken' in r.stdout and inventory_hostname == 'b'",
                ),
                sh("three", "touch /3"),
            ],
            [("judged", FAILED)],
            1,
        ),
        # the connection is lost during a batch: unreachable, reported against the first queued change
        (
            [put("one", "/1", "1"), sh("cut", "drop", when="inventory_hostname == 'b'"), put("three", "/3", "3")],
            [("one", UNREACHABLE)],
            3,
        ),
    ],
    ids=["batch-failure", "single-failure", "ignore-errors", "failed-when", "lost-mid-batch"],
)
def test_a_failing_host_never_hides_the_others(engine, tasks, on_b, exit_status):
    run = engine(tasks)
    assert run.of("b") == on_b
    # the other host ran the whole role
    assert [t for t, _ in run.of("a")] == [t["name"] for t in tasks]
    assert {s for _, s in run.of("a")} <= {CHANGED, OK, SKIPPED}
    assert int(run.report.exit_status()) == exit_status
    if on_b[-1][1] == FAILED:
        ev = run.event("b", on_b[-1][0])
        assert "failed (rc=7)" in ev.msg or "failed (rc=0)" in ev.msg
        assert run.report.failed_hosts == ["b"]


def test_batch_failure_shows_the_tail_of_its_own_output(engine):
    run = engine(
        [put("one", "/1", "1"), sh("boom", "say out\nwarn err-1\nwarn err-2\nfail 3"), put("three", "/3", "3")],
        hosts="a",
    )
    ev = run.event("a", "boom")
    assert ev.status is Status.FAILED and ev.msg.endswith("failed (rc=3)")
    assert ev.stderr_tail.splitlines() == ["out", "err-1", "err-2"]
    assert "/3" not in run.hosts["a"].files


def test_unreachable_host_is_marked_once_and_the_others_run(engine):
    run = engine([sh("one", "touch /1"), sh("two", "touch /2")], hosts="a,b,c", unreachable=("c",))
    assert run.of("c") == [("ssh connect", UNREACHABLE)]
    assert "cannot connect to c" in run.event("c", "ssh connect").msg
    assert run.of("a") == run.of("b") == [("one", CHANGED), ("two", CHANGED)]
    assert run.report.unreachable_hosts == ["c"] and int(run.report.exit_status()) == 3


def test_check_mode_sends_only_facts_and_read_only_commands(engine):
    tasks = [
        sh("write", "touch /w"),
        sh("query", "say v1", register="v", changed_when=False, check_mode="run"),
        sh("uses", "touch /u", when="v.stdout == 'v1'"),
        sh("guarded", "touch /g", creates="/g"),
    ]
    run = engine(tasks, hosts="a", check=True)
    assert run.of("a") == [("write", CHANGED), ("query", OK), ("uses", CHANGED), ("guarded", CHANGED)]
    assert run.event("a", "write").msg == "would run: touch /w"
    assert run.hosts["a"].files == {}
    # the role's facts, the read-only query, the facts again (a command may change anything): no change
    assert run.round_trips("a") == 3 and "say v1" in run.hosts["a"].sent[1]
    assert not [s for s in run.hosts["a"].sent if "touch" in s]


def test_a_wait_is_planned_as_ok_never_as_a_change(engine):
    # a plan of a converged cluster reports 0 changed: waits change nothing themselves
    tasks = [
        {"name": "port up", "wait_for": {"port": 6443, "timeout": 5}},
        {"name": "ready", "wait_for": {"shell": "say ready", "timeout": 5}},
        sh("write", "touch /w"),
    ]
    run = engine(tasks, hosts="a", check=True)
    assert run.of("a") == [("port up", OK), ("ready", OK), ("write", CHANGED)]
    assert run.event("a", "ready").msg == "would wait for say ready"
    assert not [s for s in run.hosts["a"].sent if "say ready" in s or "/dev/tcp" in s]


@pytest.mark.parametrize("unreachable, live", [((), ["a", "b", "c"]), (("c",), ["a", "b"])], ids=["all-up", "c-down"])
def test_live_hosts_leaves_out_a_host_that_went_down(engine, unreachable, live):
    # what a cluster-wide wait (cni | all nodes Ready) waits for: never a host the run already lost
    tasks = [
        {"name": "live", "assert": {"that": [f"live_hosts == {live!r}"], "msg": "live: {{ live_hosts | join(',') }}"}}
    ]
    run = engine(tasks, hosts="all", unreachable=unreachable)
    assert run.of("a") == run.of("b") == [("live", OK)], [e.msg for e in run.sink.events]


def test_until_retries_until_the_condition_holds(engine):
    run = engine([sh("poll", "count", register="p", until="p.stdout == '3'", retries=5, delay=0)], hosts="a")
    assert run.of("a") == [("poll", CHANGED)] and run.hosts["a"].counter == 3
    again = engine([sh("poll", "count", register="p", until="p.stdout == '9'", retries=1, delay=0)], hosts="a")
    assert again.of("a") == [("poll", FAILED)] and "not met after 2 attempts" in again.event("a", "poll").msg


def test_loop_registers_every_item_and_reports_one_event(engine):
    tasks = [
        sh("each", "touch /{{ item }}", loop=["x", "y", "z"], when="item != 'y'", register="r"),
        {"name": "facts", "set_fact": {"vars": {"n": "{{ r.results | selectattr('changed') | list | length }}"}}},
        sh("check", "touch /n{{ n }}"),
    ]
    run = engine(tasks, hosts="a")
    assert run.of("a") == [("each", CHANGED), ("facts", OK), ("check", CHANGED)]
    assert set(run.hosts["a"].files) == {"/x", "/z", "/n2"}


def test_run_once_runs_on_the_first_host_and_hands_its_result_to_the_others(engine):
    tasks = [sh("mint", "count", register="t", run_once=True, delegate_to="a"), sh("keep", "touch /got-{{ t.stdout }}")]
    run = engine(tasks, hosts="a,b,c")
    assert run.hosts["a"].counter == 1
    for host in "abc":
        assert ("keep", CHANGED) in run.of(host)
    shared = [e for e in run.sink.events if e.task == "mint" and e.msg.startswith("result of ")]
    assert len(shared) == 2 and all(e.status is Status.OK for e in shared)
    assert "/got-1" in run.hosts["b"].files and "/got-1" in run.hosts["c"].files


def test_a_delegate_that_goes_away_is_marked_not_the_host_that_delegated(engine):
    tasks = [sh("ask", "drop", delegate_to="c", register="x"), sh("after", "touch /after")]
    run = engine(tasks, hosts="a")
    assert run.of("c") == [("ask (delegated by a)", UNREACHABLE)]
    assert run.of("a") == [("ask", FAILED)]
    assert "delegate host c became unreachable" in run.event("a", "ask").msg
    assert run.report.failed_hosts == ["a"] and run.report.unreachable_hosts == ["c"]


def test_second_run_on_a_converged_host_reports_nothing_changed(engine):
    tasks = [sh("one", "touch /1", creates="/1"), sh("two", "touch /2", creates="/2", notify="h")]
    fakes = {n: FakeHost(n) for n in "abc"}
    first = engine(tasks, handlers=[sh("h", "count")], fakes=fakes)
    assert [s for _, s in first.of("a")] == [CHANGED, CHANGED, CHANGED]
    for f in fakes.values():
        f.sent.clear()
    second = engine(tasks, handlers=[sh("h", "count")], fakes=fakes)
    assert second.of("a") == [("one", SKIPPED), ("two", SKIPPED)] and second.report.changed == 0
    assert second.round_trips("a") == 1


def test_no_log_output_never_reaches_an_event(engine):
    tasks = [sh("secret", "say tok-123", register="s", no_log=True), sh("leak", "warn {{ s.stdout }}\nfail 1")]
    run = engine(tasks, hosts="a")
    shown = " ".join(f"{e.msg} {e.diff} {e.stderr_tail}" for e in run.sink.events)
    assert "tok-123" not in shown and "********" in run.event("a", "leak").stderr_tail


# == the executor's own API: typed decisions apply themselves ========================================


def _executor() -> tuple[Executor, ListSink]:
    from provisioner.engine.events import RunReport

    sink = ListSink()
    return Executor(make_env(None), sink, RunReport(), Redactor(), {}), sink


def _state(fake: FakeHost) -> HostState:
    from provisioner.inventory.model import Host

    st = HostState(Host(name=fake.name, address="127.0.0.9", node_ip="127.0.0.9"))
    st.transport = FakeTransport(fake)
    return st


def _decided(change: Effect) -> Decided:
    task = Task(name="t", module="command", args={}, role="r", where="w")
    return Decided(task, 0.0, Status.CHANGED, change.msg, change)


def test_typed_decisions_apply_themselves(tmp_path):
    executor, _ = _executor()
    fake = FakeHost("a")
    st = _state(fake)
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 10)
    items = [
        _decided(Change("s", "touch /s")),
        _decided(LocalWrite("w", str(tmp_path / "out" / "k.conf"), b"kubeconfig", "600")),
        _decided(Upload("u", src=str(src), dest="/opt/big.bin", sha256="ab" * 32, mode="644")),
    ]
    results = [executor.apply(st, [item])[0] for item in items]
    assert [r.rc for r in results] == [0, 0, 0]
    assert "/s" in fake.files and "/opt/big.bin.part" in fake.files
    assert (tmp_path / "out" / "k.conf").read_bytes() == b"kubeconfig"
    assert oct((tmp_path / "out" / "k.conf").stat().st_mode & 0o777) == "0o600"
    assert len(fake.sent) == 3  # the script, then the upload's prepare and verify (the file went by put_stream)


def test_several_changes_are_one_round_trip_and_stop_at_the_first_failure():
    executor, _ = _executor()
    fake = FakeHost("a")
    items = [_decided(Change("1", "touch /1")), _decided(Change("2", "fail 4")), _decided(Change("3", "touch /3"))]
    results = executor.apply(_state(fake), items)
    assert len(fake.sent) == 1
    assert [r.rc if r else None for r in results] == [0, 4, None]
    assert set(fake.files) == {"/1"}


# == host selection ===================================================================================


@pytest.mark.parametrize(
    "pattern, limit, expected",
    [
        ("all", None, ["a", "b", "c"]),
        ("worker", None, ["b", "c"]),
        ("control_plane,c", None, ["a", "c"]),
        ("all[0]", None, ["a"]),
        ("all[1:]", None, ["b", "c"]),
        ("worker,b", None, ["b", "c"]),
        ("all", ("c", "a"), ["a", "c"]),
    ],
)
def test_select_hosts(tmp_path, pattern, limit, expected):
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(
        yaml.safe_dump(
            {
                "cluster": {"name": "unit"},
                "defaults": {"user": "root"},
                "hosts": [
                    {"name": n, "address": f"127.0.0.{i + 2}", "roles": ["control_plane" if i == 0 else "worker"]}
                    for i, n in enumerate("abc")
                ],
            }
        )
    )
    assert [h.name for h in select_hosts(load_inventory(inv_path), pattern, limit)] == expected


def test_select_hosts_unknown_pattern_is_bad_input(tmp_path):
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(
        yaml.safe_dump(
            {
                "cluster": {"name": "unit"},
                "defaults": {"user": "root"},
                "hosts": [{"name": "a", "address": "127.0.0.2", "roles": ["control_plane"]}],
            }
        )
    )
    with pytest.raises(InputError, match="matches no group or host"):
        select_hosts(load_inventory(inv_path), "nope")


# == the fact cache ===================================================================================


def _query(name: str, resource: str, body: str):
    from provisioner.modules.base import FactQuery

    return FactQuery(name, resource, body, lambda out, rc: out.strip())


@pytest.mark.parametrize(
    "touched, regathered",
    [
        (set(), set()),
        ({"file:/a"}, {"a", "probe"}),  # an `unless` probe may depend on anything a change did
        ({"file:/zzz"}, {"probe"}),
        ({"*"}, {"a", "b", "probe"}),
    ],
)
def test_fact_cache_asks_once_and_forgets_only_what_a_change_touched(touched, regathered):
    from provisioner.engine.facts import FactCache

    fake = FakeHost("a", files={"/a": b"", "/b": b""})
    transport = FakeTransport(fake)
    queries = [
        _query("a", "file:/a", "[ -e /a ] && echo yes || echo no"),
        _query("b", "file:/b", "[ -e /b ] && echo yes || echo no"),
        _query("probe", "unless:say ok", "{ say ok\n} >/dev/null 2>&1 </dev/null && echo yes || echo no"),
    ]
    cache = FactCache()
    assert cache.gather(transport, queries) == {"a": "yes", "b": "yes", "probe": "yes"}
    assert cache.gather(transport, queries[:1]) == {"a": "yes"} and len(fake.sent) == 1
    cache.invalidate(touched)
    cache.gather(transport, queries)
    asked = {q.name for q in queries if q.script in (fake.sent[1] if len(fake.sent) > 1 else "")}
    assert asked == regathered and len(fake.sent) == (2 if regathered else 1)


def test_fact_output_cut_short_is_a_task_error_with_the_hosts_last_words():
    from provisioner.engine.facts import TaskError, parse_batch

    queries = [_query("a", "file:/a", "true"), _query("b", "file:/b", "true")]
    out = "__KPROV_1 0 BEGIN\nyes\n\n__KPROV_1 0 END 0\n"
    with pytest.raises(TaskError, match="cut short \\(query b"):
        parse_batch(out, queries, "__KPROV_1", stderr="disk full")


# == variables ========================================================================================


@pytest.mark.parametrize(
    "extra, run_vars, expected",
    [
        ({}, {}, {"v": "host", "d": "default-unit", "r": "role"}),
        ({"v": "extra"}, {}, {"v": "extra"}),
        ({}, {"v": "registered"}, {"v": "registered"}),
        ({"v": "extra"}, {"v": "registered"}, {"v": "extra"}),  # -e wins over set_fact
        ({}, {"out": "{{ not rendered }}"}, {"out": "{{ not rendered }}"}),  # registered output is data
    ],
)
def test_variable_precedence_and_rendering(tmp_path, extra, run_vars, expected):
    from provisioner.engine.vars import merge_host_vars

    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(
        yaml.safe_dump(
            {
                "cluster": {"name": "unit", "vars": {"v": "cluster"}},
                "defaults": {"user": "root"},
                "groups": {"worker": {"vars": {"v": "group"}}},
                "hosts": [
                    {"name": "a", "address": "127.0.0.2", "roles": ["control_plane"]},
                    {"name": "b", "address": "127.0.0.3", "roles": ["worker"], "vars": {"v": "host"}},
                ],
            }
        )
    )
    inv = load_inventory(inv_path)
    merged = merge_host_vars(
        make_env(None),
        inv,
        inv.host("b"),
        role_name="r",
        role_defaults={"v": "role", "d": "default-{{ cluster.name }}", "r": "role"},
        base_vars={},
        extra_vars=extra,
        run_vars=run_vars,
        all_run_vars={"b": run_vars},
        check=False,
    )
    assert {k: merged[k] for k in expected} == expected
    assert merged["inventory_hostname"] == "b" and merged["hostvars"]["b"]["name"] == "b"


def test_a_limited_host_runs_only_the_tagged_tasks(engine) -> None:
    """add-node's seed: in the same play, the limited host runs the tasks tagged for it (and gathers no fact
    for the others); every other host runs the whole role."""
    tasks = [
        put("pick", "/pick", "1", tags=["seed"]),
        put("install", "/install", "2"),
        sh("serve", "say served", tags=["seed"]),
        sh("import", "say imported", notify=["restart"]),
    ]
    handlers = [sh("restart", "say restarted")]
    run = engine(tasks, handlers=handlers, limited=("a", "seed"))
    assert run.of("a") == [("pick", CHANGED), ("serve", CHANGED)]
    assert run.of("b") == [
        ("pick", CHANGED),
        ("install", CHANGED),
        ("serve", CHANGED),
        ("import", CHANGED),
        ("restart", CHANGED),
    ]
    assert "/install" not in "".join(run.hosts["a"].sent)
    assert "/pick" in run.hosts["a"].files and "/install" not in run.hosts["a"].files
