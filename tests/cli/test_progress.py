"""Console output people can follow (issue 15): heartbeats without a terminal, grouped diffs, a recap
with wall times, no hard wrapping in logs, NO_COLOR on the error line.

The sink is fed real Event values, as the engine emits them, and writes to an in-memory console.
"""

from __future__ import annotations

import io
import os
import re
import time

import pytest
from rich.console import Console

from provisioner.engine.events import Event, RunReport, Status
from provisioner.reporting.console import ProgressConsole, group_diffs, make_console
from tests.cli.helpers import KPROV

DIFF = "--- a\n+++ b\n-old\n+new\n"


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=80, soft_wrap=True, no_color=True, force_terminal=False), buf


def ev(host: str, task: str, status: Status = Status.CHANGED, diff: str = "", ms: int = 1500) -> Event:
    return Event(
        host=host,
        role="containerd",
        task=task,
        status=status,
        changed=status is Status.CHANGED,
        duration_ms=ms,
        diff=diff,
    )


def test_identical_diffs_are_printed_once_with_their_hosts() -> None:
    console, buf = _console()
    sink = ProgressConsole(console, show_diff=True, live=False)
    sink.play_start("containerd", ["h1", "h2", "h3"])
    for h in ("h1", "h2", "h3"):
        sink.emit(ev(h, "containerd | config", diff=DIFF if h != "h3" else DIFF.replace("new", "other")))
    sink.play_end("containerd", 1.0)
    sink.recap(RunReport())
    out = buf.getvalue()
    assert "diff of containerd | config on 2 host(s): h1, h2" in out
    assert "diff of containerd | config on 1 host(s): h3" in out
    assert out.count("+new") == 1 and out.count("+other") == 1


@pytest.mark.parametrize(
    "events,expected",
    [
        ([ev("a", "t", diff="x"), ev("b", "t", diff="x")], [("t", "x", ["a", "b"])]),
        ([ev("a", "t", diff="x"), ev("b", "t", diff="y")], [("t", "x", ["a"]), ("t", "y", ["b"])]),
        ([ev("a", "t", diff="x"), ev("a", "u", diff="x")], [("t", "x", ["a"]), ("u", "x", ["a"])]),
        ([ev("a", "t")], []),
    ],
)
def test_group_diffs(events: list[Event], expected: list) -> None:
    assert group_diffs(events) == expected


def test_recap_has_per_host_and_total_wall_time() -> None:
    console, buf = _console()
    sink = ProgressConsole(console, live=False)
    report = RunReport()
    sink.play_start("containerd", ["h1", "h2"])
    for e in (ev("h1", "a", ms=1500), ev("h1", "b", ms=2500), ev("h2", "a", Status.OK, ms=700)):
        report.record(e)
        sink.emit(e)
    sink.play_end("containerd", 4.2)
    report.role_times["containerd"] = 4.2
    report.finished = report.started + 4.25
    sink.recap(report)
    lines = buf.getvalue().splitlines()
    # per host: its wall time in the run (from the first play it was in to its last event)
    for host in ("h1", "h2"):
        row = next(line for line in lines if line.split()[:1] == [host])
        assert re.search(r"\d+\.\ds$", row.rstrip()), row
    assert "time" in next(line for line in lines if "changed" in line and "host" in line)
    assert "total wall time: 4.2s" in buf.getvalue()
    assert "wall time per role: containerd 4.2s" in buf.getvalue()


def test_heartbeat_names_what_still_runs_without_a_terminal() -> None:
    console, buf = _console()
    sink = ProgressConsole(console, live=False, heartbeat_s=1)
    sink.play_start("kubernetes", ["h1", "h2", "h3"])
    sink.emit(ev("h1", "kubernetes | unpack bundle", Status.OK))
    sink.emit(ev("h3", "kubernetes | unpack bundle", Status.FAILED))
    deadline = time.monotonic() + 30  # a guard, not a speed assertion
    while "still running" not in buf.getvalue() and time.monotonic() < deadline:
        time.sleep(0.2)
    sink.play_end("kubernetes", 1.0)
    sink.recap(RunReport())
    beat = next(line for line in buf.getvalue().splitlines() if "still running" in line)
    assert beat.startswith(
        "... still running: kubernetes on 2 host(s): h1 (after kubernetes | unpack bundle), h2 (starting)"
    )


def test_log_lines_are_never_hard_wrapped() -> None:
    buf = io.StringIO()
    console = make_console()
    console.file = buf
    sink = ProgressConsole(console, live=False)
    task = "containerd | " + "a-very-long-task-name " * 12
    sink.play_start("containerd", ["h1"])
    sink.emit(ev("h1", task.strip()))
    sink.play_end("containerd", 0.1)
    assert any(task.strip() in line for line in buf.getvalue().splitlines())


@pytest.mark.parametrize("no_color", [False, True])
def test_error_line_honours_no_color(no_color: bool) -> None:
    # a terminal is needed for colours at all: run kprov under `script`-like pty
    import pty
    import subprocess

    env = {**os.environ, "NO_COLOR": "1"} if no_color else {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(KPROV), "plan", "-i", "/nonexistent.yaml"], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(master)
    assert b"error: " in out
    assert (b"\x1b[" in out) is (not no_color)


@pytest.mark.parametrize(
    "status, ms, verbose, shown",
    [
        # long steps (kubeadm init, joins, image imports, waits) show their wall time, even when ok
        (Status.CHANGED, 61_300, 0, "  changed     h1               control_plane | kubeadm init - init [x] (61.3s)"),
        (Status.OK, 12_000, 0, "  ok          h1               control_plane | kubeadm init - init [x] (12.0s)"),
        (Status.FAILED, 7_500, 0, "  failed      h1               control_plane | kubeadm init - init [x] (7.5s)"),
        # short ones: changed without a time, ok only with -v
        (Status.CHANGED, 1_200, 0, "  changed     h1               control_plane | kubeadm init - init [x]"),
        (Status.OK, 1_200, 0, None),
        (Status.OK, 1_200, 1, "  ok          h1               control_plane | kubeadm init - init [x]"),
        (Status.SKIPPED, 60_000, 0, None),
    ],
)
def test_long_steps_show_their_wall_time(status: Status, ms: int, verbose: int, shown: str | None) -> None:
    console, buf = _console()
    sink = ProgressConsole(console, live=False, verbose=verbose)
    sink.play_start("control_plane", ["h1"])
    sink.emit(
        Event(
            "h1", "control_plane", "control_plane | kubeadm init", status, status is Status.CHANGED, ms, msg="init [x]"
        )
    )
    lines = [line for line in buf.getvalue().splitlines() if "kubeadm init" in line]
    assert lines == ([shown] if shown else [])
    sink.recap(RunReport())


def test_terminal_panel_shows_each_host_role_task_and_elapsed_time() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=160, no_color=True, force_terminal=True)
    sink = ProgressConsole(console, live=False)
    sink.play_start("containerd", ["h1", "h2"])
    sink.emit(ev("h1", "containerd | packages", Status.OK))
    console.print(sink.panel())
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in text.splitlines() if line[:2] in ("h1", "h2")}
    assert rows["h1"][0] == "containerd" and re.fullmatch(r"containerd \| packages\s+\d+s", rows["h1"][1].strip())
    assert rows["h2"][0] == "containerd" and re.fullmatch(r"starting\s+\d+s", rows["h2"][1].strip())
    sink.recap(RunReport())


#: an SGR sequence that sets a colour (foreground/background, 16/256/true colour); bold and the like are no colour
COLOUR = re.compile(rb"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


@pytest.mark.parametrize("no_color", [False, True])
def test_run_output_honours_no_color(tmp_path, no_color: bool) -> None:
    """Not only the error line: warnings, task lines, the recap and the stop line of a run on a terminal."""
    import pty
    import subprocess

    import yaml

    inv = tmp_path / "inv.yaml"
    inv.write_text(
        yaml.safe_dump(
            {
                "cluster": {"name": "ucolor", "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12"},
                "hosts": [
                    {
                        "name": "gone-1",
                        "address": "127.0.0.1",
                        "port": 1,
                        "node_ip": "10.9.9.1",
                        "user": "root",
                        "roles": ["control_plane"],
                    }
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = "1"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(KPROV), "plan", "-i", str(inv), "--connect-timeout", "1", "--tags", "nosuchtag"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=tmp_path,
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(master)
    assert b"warning: --tags nosuchtag" in out
    assert b"unreachable" in out and b"stopped before" in out and b"PLAN" in out
    assert bool(COLOUR.search(out)) is (not no_color), out[-2000:]


@pytest.mark.parametrize(
    "verbose, expected",
    [
        (0, ["  changed     h1               kubernetes | import images - run: set -e ... (+2 lines, -v shows them)"]),
        (
            1,
            [
                "  changed     h1               kubernetes | import images - run: set -e",
                "d=/opt/kprov/bundle",
                "ctr images import x.tar",
                "",
            ],
        ),
    ],
)
def test_a_multi_line_message_is_one_line_unless_verbose(verbose: int, expected: list[str]) -> None:
    console, buf = _console()
    sink = ProgressConsole(console, live=False, verbose=verbose)
    sink.play_start("kubernetes", ["h1"])
    sink.emit(
        Event(
            "h1",
            "kubernetes",
            "kubernetes | import images",
            Status.CHANGED,
            True,
            100,
            msg="run: set -e\nd=/opt/kprov/bundle\nctr images import x.tar\n",
        )
    )
    assert buf.getvalue().splitlines()[1:] == expected
    sink.recap(RunReport())


@pytest.mark.parametrize("hosts, header", [(["h1", "h2"], ["ROLE join on 2 host(s)"]), ([], [])])
def test_a_play_without_hosts_prints_no_header(hosts: list[str], header: list[str]) -> None:
    console, buf = _console()
    sink = ProgressConsole(console, live=False)
    sink.play_start("join", hosts)
    sink.play_end("join", 0.0)
    sink.recap(RunReport())
    assert [line for line in buf.getvalue().splitlines() if line.startswith("ROLE")] == header


def test_heartbeat_and_panel_name_the_task_running_now() -> None:
    console, buf = _console()
    sink = ProgressConsole(console, live=False)
    sink.play_start("control_plane", ["h1", "h2"])
    sink.emit(ev("h1", "control_plane | kubeadm config", Status.CHANGED))
    sink.task_start("h1", "control_plane | kubeadm init")
    assert re.match(
        r"\.\.\. still running: control_plane on 2 host\(s\): h1 \(running control_plane \| kubeadm init "
        r"for \d+s\), h2 \(starting\)",
        sink.heartbeat_line(),
    )
    console.print(sink.panel())
    assert re.search(r"h1\s+control_plane\s+control_plane \| kubeadm init \(\d+s\)", buf.getvalue())
    # its event ends it: back to the last task done
    sink.emit(ev("h1", "control_plane | kubeadm init", Status.CHANGED))
    assert "h1 (after control_plane | kubeadm init)" in sink.heartbeat_line()
    sink.play_end("control_plane", 1.0)
    sink.recap(RunReport())
