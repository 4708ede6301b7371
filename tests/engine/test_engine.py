"""Engine behaviour on real sshd hosts: handlers, when/loop/tags, variable precedence, fact batching,
per-host failure isolation, host keys, injection, secrets and the JSON event format."""

from __future__ import annotations

import io
import json
import os

import pytest
from rich.console import Console

from provisioner.engine.events import Status
from provisioner.reporting.sinks import ConsoleSink, JsonSink
from provisioner.transport.ssh import ConnectOptions
from tests.fixtures.netns_fleet import NetnsFleet

pytestmark = pytest.mark.netns

H1, H2 = "kpe-1", "kpe-2"


# -- handlers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "before_run, log_after",
    [
        ("", "fired\n"),  # three notifying tasks change: one run
        ("NOOP", "fired\n"),  # nothing changed: handler does not run again
        ('rm -f "$D/two"', "fired\nfired\n"),  # one notifier changes: handler runs once more
    ],
)
def test_handler_runs_once_per_host_and_only_when_notified(fleet, workdir, before_run, log_after):
    if before_run:  # bring the host to the converged state first
        fleet.run("handlers", extra_vars={"dir": workdir})
        if before_run != "NOOP":
            for n in fleet.names:
                fleet.sh(n, f"D='{workdir}'; {before_run}")
    out = fleet.run("handlers", extra_vars={"dir": workdir})
    assert out.exit_status == 0
    for n in fleet.names:
        assert fleet.read(n, f"{workdir}/handler.log") == log_after
        assert not fleet.exists(n, f"{workdir}/never.log")
        assert len(out.events(n, "bump")) == (0 if before_run == "NOOP" else 1)


# -- when, loop, register, tags, -e ---------------------------------------------------------------

ALL_FLOW = {"when-true", "loop-a", "loop-b", "loop-c", "num-1", "num-2", "tag-x", "tag-y"}


@pytest.mark.parametrize(
    "opts, present",
    [
        ({}, ALL_FLOW),
        ({"extra_vars": {"flag": False}}, ALL_FLOW - {"when-true"} | {"when-false"}),
        ({"extra_vars": {"letters": ["q"]}}, ALL_FLOW - {"loop-a", "loop-b", "loop-c"} | {"loop-q"}),
        ({"tags": frozenset({"x"})}, {"tag-x"}),
        ({"tags": frozenset({"x", "z"})}, {"tag-x", "tag-y"}),
        ({"skip_tags": frozenset({"z"})}, ALL_FLOW - {"tag-y"}),
        ({"tags": frozenset({"x", "y"}), "skip_tags": frozenset({"y"})}, {"tag-x"}),
    ],
    ids=["default", "when-false", "loop-from-extra-vars", "tags", "tags-any", "skip-tags", "tags-and-skip"],
)
def test_when_loop_tags(fleet, workdir, opts, present):
    opts = {**opts, "extra_vars": {"dir": workdir, **opts.get("extra_vars", {})}}
    out = fleet.run("flow", hosts=H1, **opts)
    assert out.exit_status == 0
    listing = fleet.sh(H1, f"ls '{workdir}' 2>/dev/null || true").stdout.split()
    assert set(listing) == present
    skipped = {e.task for e in out.events(H1) if e.status is Status.SKIPPED}
    assert ("flow | when false" in skipped) == ("when-false" not in present and "when-true" in present)


def test_when_is_evaluated_per_loop_item(fleet, workdir):
    out = fleet.run("loop_when", hosts=H1, extra_vars={"dir": workdir})
    assert out.exit_status == 0, [e.msg for e in out.events(H1)]
    assert fleet.sh(H1, f"ls '{workdir}'").stdout.split() == ["even-2", "even-4"]


def _precedence_inventory(doc: dict) -> None:
    doc["cluster"]["vars"] = dict.fromkeys(("p_cluster", "p_group", "p_host", "p_extra", "p_order"), "cluster")
    # custom group listed first in the file: it still ranks above the built-in groups
    doc["groups"] = {
        "mine": {"hosts": ["kpe-2"], "vars": {"p_order": "custom"}},
        "all": {"vars": {"p_group": "all", "p_host": "all", "p_order": "all"}},
        "worker": {"vars": {"p_group": "worker", "p_order": "worker"}},
    }
    doc["hosts"][0]["vars"] = {"p_host": "host1"}
    doc["hosts"][1]["vars"] = {"p_host": "host2", "p_extra": "host2"}


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({}, {H1: "role cluster all host1 cluster all", H2: "role cluster worker host2 host2 custom"}),
        (
            {"p_extra": "extra", "p_role": "e"},
            {H1: "e cluster all host1 extra all", H2: "e cluster worker host2 extra custom"},
        ),
    ],
)
def test_variable_precedence(fleet, workdir, extra, expected):
    inv = fleet.inventory(_precedence_inventory)
    out = fleet.run("precedence", inv, extra_vars={"dir": workdir, **extra})
    assert out.exit_status == 0
    assert {n: fleet.read(n, f"{workdir}/vars") for n in expected} == {n: v + "\n" for n, v in expected.items()}


# -- speed: facts are batched ---------------------------------------------------------------------


def test_noop_run_costs_one_round_trip_per_host(fleet, workdir):
    first = fleet.run("batch", extra_vars={"dir": workdir}, count=True)
    assert first.changed(H1) == 8
    assert all(c <= 1 + 8 for c in first.exec_counts.values()), first.exec_counts
    again = fleet.run("batch", extra_vars={"dir": workdir}, count=True)
    assert again.changed() == 0
    assert again.exec_counts == dict.fromkeys(fleet.names, 1)


# -- failures stay on their host -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_fleet():
    """A one-host fleet whose sshd is killed: a host that went away."""
    from tests.engine.conftest import _free_subnet, _reap, _reap_dead_sessions, _session_prefix

    _reap_dead_sessions("kk")
    prefix = _session_prefix("kk")
    f = NetnsFleet(prefix=prefix, subnet=_free_subnet(os.getpid() + 100))
    _reap(prefix)
    try:
        f.up(1)
        f.kill(f"{prefix}-1")
        yield f
    finally:
        _reap(prefix)
        f.down()


@pytest.mark.parametrize("how", ["nothing-listening", "sshd-killed"])
def test_unreachable_host_is_isolated(fleet, workdir, dead_fleet, how):
    if how == "nothing-listening":
        ghost = {"name": "ghost", "address": "127.0.0.1", "port": 1, "roles": ["worker"]}
    else:
        ghost = {"name": "ghost", "address": dead_fleet.hosts[0].address, "roles": ["worker"]}
    inv = fleet.inventory(extra_hosts=[ghost])
    out = fleet.run(["handlers", "later"], inv, hosts=f"{H1},{H2},ghost", extra_vars={"dir": workdir})
    assert out.exit_status == 3
    assert [e.status for e in out.events("ghost")] == [Status.UNREACHABLE]
    assert "cannot connect" in out.events("ghost")[0].msg
    assert out.report.unreachable_hosts == ["ghost"]
    for n in (H1, H2):
        assert fleet.read(n, f"{workdir}/later") == "l"


def test_failing_task_shows_stderr_tail_and_host_is_skipped_later(fleet, workdir):
    console, jsonl = io.StringIO(), io.StringIO()
    sinks = (ConsoleSink(Console(file=console, width=200, color_system=None)), JsonSink(jsonl))
    out = fleet.run(["fails", "later"], extra_vars={"dir": workdir, "victim": H2}, also=sinks)
    assert out.exit_status == 1
    assert out.report.failed_hosts == [H2]
    failed = [e for e in out.events(H2) if e.status is Status.FAILED]
    assert [e.task for e in failed] == ["fails | boom"]
    tail = failed[0].stderr_tail.splitlines()
    assert tail[-1] == "err-line-22" and len(tail) <= 20 and "err-line-1" not in tail
    assert "rc=7" in failed[0].msg
    # the failed host stops: no later task of the role, no later role
    assert [e.task for e in out.events(H2)] == ["fails | before", "fails | boom"]
    assert not fleet.exists(H2, f"{workdir}/after") and not fleet.exists(H2, f"{workdir}/later")
    assert fleet.read(H1, f"{workdir}/later") == "l"
    text = console.getvalue()
    assert "| err-line-22" in text and f"{H2}: fails | fails | boom" in text
    events = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    boom = [e for e in events if e.get("task") == "fails | boom" and e.get("host") == H2]
    assert boom[0]["status"] == "failed" and boom[0]["stderr_tail"].endswith("err-line-22")


# -- host keys ----------------------------------------------------------------------------------------


def _known_hosts_line(fleet, name: str, *, other_key: bool = False) -> str:
    host = fleet.host(name)
    if other_key:
        return f"{host.address} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKd3ZNJhq6pVX8QbNDcEnwWcy9gBY3AxyJ3YQ3eWjjlK\n"
    return next(
        line for line in fleet.netns.known_hosts.read_text().splitlines() if line.startswith(host.address + " ")
    )


@pytest.mark.parametrize(
    "inventory_keys, kprov_keys, accept_new, status, needle",
    [
        ("empty", None, False, Status.FAILED, "host key not known"),
        ("empty", None, True, None, ""),
        ("empty", "other", True, Status.FAILED, "CHANGED"),
        ("other", None, True, Status.FAILED, "CHANGED"),
        ("empty", "right", False, None, ""),
    ],
    ids=[
        "unknown-rejected",
        "unknown-accepted",
        "changed-in-kprov-file",
        "changed-in-inventory-file",
        "kprov-file-trusted",
    ],
)
def test_host_keys(fleet, workdir, tmp_path, monkeypatch, inventory_keys, kprov_keys, accept_new, status, needle):
    home = tmp_path / "kprov-home"
    monkeypatch.setenv("KPROV_HOME", str(home))
    inv_kh = tmp_path / "inventory_known_hosts"
    inv_kh.write_text("" if inventory_keys == "empty" else _known_hosts_line(fleet, H1, other_key=True))
    if kprov_keys:
        home.mkdir()
        (home / "known_hosts").write_text(_known_hosts_line(fleet, H1, other_key=kprov_keys == "other") + "\n")
    before = (home / "known_hosts").read_text() if kprov_keys else None
    inv = fleet.inventory(lambda d: d["defaults"].update(known_hosts=str(inv_kh)))
    out = fleet.run(
        "later",
        inv,
        hosts=H1,
        extra_vars={"dir": workdir},
        connect=ConnectOptions(connect_timeout=5, connect_retries=0, accept_new_host_keys=accept_new),
    )
    if status is None:
        assert out.exit_status == 0
        assert fleet.read(H1, f"{workdir}/later") == "l"
        assert _known_hosts_line(fleet, H1).split()[2] in (home / "known_hosts").read_text()
        again = fleet.run("later", inv, hosts=H1, extra_vars={"dir": workdir})  # no --accept-new-host-keys
        assert again.exit_status == 0
    else:
        # a host that answers with an unknown or changed key is a trust failure, not an unreachable host
        assert out.exit_status == 1
        (ev,) = out.events(H1)
        assert ev.status is status and ev.task == "ssh host key" and needle in ev.msg
        if needle == "host key not known":
            assert "--accept-new-host-keys" in ev.msg
        assert not fleet.exists(H1, f"{workdir}/later")
        assert ((home / "known_hosts").read_text() if kprov_keys else None) == before
        assert kprov_keys or not (home / "known_hosts").exists()


# -- injection ------------------------------------------------------------------------------------------

PAYLOADS = {
    "kpe-1": "; rm -rf /tmp/kt/canary; touch /tmp/pwned-1 #",
    "kpe-2": "$(touch /tmp/pwned-2)`touch /tmp/pwned-3`${IFS}$HOME",
    "kpe-3": "it's \"quoted\" \\ back\\slash % 'x' \\' \"",
    "kpe-4": "line1\nKPROV_STDIN\nKPROV_EOF\ntouch /tmp/pwned-4\n-x",
}


def test_injection_attempts_reach_the_host_as_literal_data(fleet, workdir):
    def per_host(doc: dict) -> None:
        for h in doc["hosts"]:
            h["vars"] = {"payload": PAYLOADS[h["name"]]}

    for n in fleet.all_names:
        fleet.sh(n, "rm -f /tmp/pwned-*; mkdir -p /tmp/kt/canary")
    out = fleet.run("inject", fleet.inventory(per_host), hosts="all", extra_vars={"dir": workdir})
    problems = [(e.host, e.task, e.msg) for e in out.sink.events if e.status is Status.FAILED]
    assert out.exit_status == 0, problems
    for n, payload in PAYLOADS.items():
        assert fleet.sh(n, "ls /tmp").stdout.split().count("pwned-1") == 0
        assert fleet.sh(n, "ls /tmp | grep pwned || true").stdout == "", n
        assert fleet.exists(n, "/tmp/kt/canary"), n
        assert fleet.read(n, f"{workdir}/content") == payload, n
        assert fleet.read(n, f"{workdir}/argv") == payload, n
        assert fleet.read(n, f"{workdir}/stdin") == payload + "\n", n
        assert fleet.read(n, f"{workdir}/env") == payload, n
        assert fleet.read(n, f"{workdir}/line") == "x=" + payload.replace("\n", " ") + "\n", n
        name = "name-" + payload.replace("/", "_").replace("\n", "_")
        assert fleet.sh(n, f"ls '{workdir}'").stdout.count("name-") == 1
        listing = fleet.sh(n, f"cd '{workdir}' && for f in name-*; do printf '%s' \"$f\"; done").stdout
        assert listing == name, n


# -- secrets --------------------------------------------------------------------------------------------

TOKEN = "s3cr3t-T0KEN-a1b2c3"


def test_no_log_output_never_reaches_events_console_or_json(fleet, workdir):
    console, jsonl = io.StringIO(), io.StringIO()
    sinks = (
        ConsoleSink(Console(file=console, width=200, color_system=None), verbose=2, show_diff=True),
        JsonSink(jsonl),
    )
    out = fleet.run("secret", hosts=H1, extra_vars={"dir": workdir, "token": TOKEN}, also=sinks)
    assert out.exit_status == 1  # the leak attempt fails on purpose
    assert fleet.read(H1, f"{workdir}/token") == TOKEN  # the secret did reach the host, as data
    shown = [console.getvalue(), jsonl.getvalue()]
    shown += [f"{e.msg}|{e.diff}|{e.stderr_tail}" for e in out.sink.events]
    shown += [r.first_error for r in out.report.hosts.values()]
    assert not [s for s in shown if TOKEN in s]
    leak = out.events(H1, "secret | leak attempt")[0]
    assert leak.status is Status.FAILED and "bad token ********" in leak.stderr_tail


# -- JSON lines ------------------------------------------------------------------------------------------


def test_json_sink_prints_one_object_per_event(fleet, workdir):
    jsonl = io.StringIO()
    out = fleet.run(["handlers", "fails"], extra_vars={"dir": workdir, "victim": H2}, also=(JsonSink(jsonl),))
    lines = jsonl.getvalue().splitlines()
    events = [json.loads(line) for line in lines if not line.startswith('{"recap"')]
    assert len(events) == len(out.sink.events)
    for ev in events:
        assert {"host", "role", "task", "status", "changed", "duration_ms", "msg"} <= set(ev)
        assert ev["status"] in {s.value for s in Status}
        assert isinstance(ev["changed"], bool) and isinstance(ev["duration_ms"], int) and ev["duration_ms"] >= 0
        assert ev["changed"] == (ev["status"] == "changed")
    recaps = {json.loads(line)["recap"] for line in lines if line.startswith('{"recap"')}
    assert recaps == set(fleet.names)


def test_no_log_task_failure_hides_its_output(fleet, workdir):
    console = io.StringIO()
    sinks = (ConsoleSink(Console(file=console, width=200, color_system=None)),)
    out = fleet.run("secret_fail", hosts=H1, extra_vars={"dir": workdir, "token": TOKEN}, also=sinks)
    assert out.exit_status == 1
    (ev,) = out.events(H1)
    assert ev.status is Status.FAILED
    assert TOKEN not in f"{ev.msg}|{ev.stderr_tail}|{console.getvalue()}"


# -- facts cache, bastion ---------------------------------------------------------------------------------


def test_facts_gathered_before_a_change_are_refreshed(fleet, workdir):
    fleet.sh(H1, f"mkdir -p '{workdir}'")
    first = fleet.run("invalidate", hosts=H1, extra_vars={"dir": workdir})
    assert first.exit_status == 0, [e.msg for e in first.events(H1)]
    assert fleet.stat(H1, f"{workdir}/made") == "regular file|600"
    assert fleet.read(H1, f"{workdir}/loop") == "one,two"
    assert fleet.run("invalidate", hosts=H1, extra_vars={"dir": workdir}).changed() == 0


def test_bastion_carries_the_connection(fleet, workdir):
    jump = fleet.netns.hosts[0]

    def via_bastion(doc: dict) -> None:
        doc["hosts"][1]["bastion"] = {"address": jump.address, "user": "root", "ssh_key": str(fleet.netns.key)}

    out = fleet.run("whoami", fleet.inventory(via_bastion), extra_vars={"dir": workdir})
    assert out.exit_status == 0
    direct = fleet.read(H1, f"{workdir}/conn").split()[0]
    tunnelled = fleet.read(H2, f"{workdir}/conn").split()[0]
    assert direct == fleet.netns.subnet + ".1"  # straight from this machine
    assert tunnelled == jump.address  # through the jump host


def test_task_timeout_stops_a_long_command(fleet, workdir):
    out = fleet.run("slow", hosts=H1, extra_vars={"dir": workdir})
    (ev,) = out.events(H1)
    assert ev.status in (Status.FAILED, Status.UNREACHABLE) and "timed out" in ev.msg
    assert ev.duration_ms < 2500


@pytest.mark.parametrize(
    "roles, needle",
    [
        (["later", "broken"], "unknown module or task key 'fiel'"),
        (["later", "no_such_role"], "unknown role 'no_such_role'"),
    ],
)
def test_bad_role_is_bad_input_before_any_host_is_touched(fleet, workdir, roles, needle):
    from provisioner.errors import RoleError
    from tests.engine.conftest import CountingSSH

    CountingSSH.counts = {}
    with pytest.raises(RoleError) as err:
        fleet.run(roles, extra_vars={"dir": workdir}, count=True)
    assert needle in str(err.value) and err.value.exit_status == 2
    assert CountingSSH.counts == {}
    assert not any(fleet.exists(n, f"{workdir}/later") for n in fleet.names)


def test_a_command_that_leaves_a_background_process_returns(fleet, workdir):
    out = fleet.run("background", hosts=H1, extra_vars={"dir": workdir})
    (ev,) = out.events(H1)
    assert ev.status is Status.CHANGED
    assert ev.duration_ms < 3000, "the task waited for the background process to exit"
