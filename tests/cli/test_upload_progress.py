"""Upload progress (issue 15): a bar with bytes and rate on a terminal, the same figures in the heartbeat
line of logs, fed by the engine's byte counts of a real upload over SSH (netns sshd hosts)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from provisioner.engine.events import Event, RunReport
from provisioner.engine.roles import Play
from provisioner.engine.runner import Runner, RunOptions
from provisioner.engine.transfer import ProgressReader
from provisioner.inventory.loader import load_inventory
from provisioner.reporting.console import ProgressConsole, UploadProgress
from provisioner.reporting.sinks import TeeSink
from provisioner.transport.ssh import ConnectOptions

MiB = 1 << 20
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Recorder:
    """A sink that keeps every upload progress report (and ignores the rest)."""

    def __init__(self) -> None:
        self.transfers: list[tuple[str, str, int, int]] = []
        self.order: list[str] = []  # "start TASK" / "bytes TASK" / "event TASK", as they came
        self._lock = threading.Lock()

    def play_start(self, role: str, hosts: list[str]) -> None:
        pass

    def emit(self, event: Event) -> None:
        with self._lock:
            self.order.append(f"event {event.task}")

    def task_start(self, host: str, task: str) -> None:
        with self._lock:
            self.order.append(f"start {task}")

    def play_end(self, role: str, duration_s: float) -> None:
        pass

    def recap(self, report: RunReport, title: str = "RECAP") -> None:
        pass

    def transfer(self, host: str, task: str, done: int, total: int) -> None:
        with self._lock:
            self.transfers.append((host, task, done, total))
            if self.order[-1] != f"bytes {task}":
                self.order.append(f"bytes {task}")


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=160, no_color=True, force_terminal=terminal, soft_wrap=not terminal), buf


# --------------------------------------------------------------------------- what is shown


@pytest.mark.parametrize(
    "done, total, first, seconds, expected",
    [
        (0, 562 * MiB, 0, 0.0, "uploading 0.0/562.0 MiB"),
        (120 * MiB, 562 * MiB, 0, 3.0, "uploading 120.0/562.0 MiB at 40.0 MiB/s"),
        # a resumed upload: the rate counts only what this run sent
        (300 * MiB, 562 * MiB, 200 * MiB, 4.0, "uploading 300.0/562.0 MiB at 25.0 MiB/s"),
        (3 * 1024, 10 * 1024, 0, 1.0, "uploading 3.0/10.0 KiB at 3.0 KiB/s"),
        (2 << 30, 3 << 30, 0, 2.0, "uploading 2.0/3.0 GiB at 1.0 GiB/s"),
        (562 * MiB, 562 * MiB, 0, 10.0, "uploaded 562.0 MiB, verifying"),
    ],
)
def test_upload_description(done: int, total: int, first: int, seconds: float, expected: str) -> None:
    up = UploadProgress("bundle | upload", done, total, first=first, started=100.0, at=100.0 + seconds)
    assert up.describe() == expected


def test_terminal_panel_shows_a_bar_with_bytes_and_rate() -> None:
    console, buf = _console(terminal=True)
    sink = ProgressConsole(console, live=False)
    sink.play_start("bundle", ["h1", "h2"])
    sink.transfer("h1", "bundle | upload the offline bundle", 0, 100 * MiB)
    sink.transfer("h1", "bundle | upload the offline bundle", 25 * MiB, 100 * MiB)
    console.print(sink.panel())
    out = ANSI.sub("", buf.getvalue())
    h1 = next(line for line in out.splitlines() if line.startswith("h1"))
    h2 = next(line for line in out.splitlines() if line.startswith("h2"))
    assert "bundle | upload the offline bundle" in h1 and "uploading 25.0/100.0 MiB" in h1
    assert "━" in h1  # rich's bar
    assert "━" not in h2 and "starting" in h2


def test_the_next_event_of_a_host_ends_its_bar() -> None:
    from provisioner.engine.events import Event, Status

    console, buf = _console(terminal=True)
    sink = ProgressConsole(console, live=False)
    sink.play_start("bundle", ["h1"])
    sink.transfer("h1", "bundle | upload", 10 * MiB, 10 * MiB)
    assert "uploaded 10.0 MiB, verifying" in sink.heartbeat_line()
    sink.emit(Event("h1", "bundle", "bundle | upload", Status.CHANGED, True, 1000))
    console.print(sink.panel())
    assert "━" not in buf.getvalue() and "after bundle | upload" in sink.heartbeat_line()


def test_heartbeat_line_carries_the_upload_figures() -> None:
    console, _ = _console(terminal=False)
    sink = ProgressConsole(console, live=False)
    sink.play_start("bundle", ["seed", "w1"])
    sink.transfer("seed", "bundle | upload", 64 * MiB, 562 * MiB)
    line = sink.heartbeat_line()
    assert line.startswith("... still running: bundle on 2 host(s): seed (uploading 64.0/562.0 MiB"), line
    assert "w1 (starting)" in line
    sink.recap(RunReport())


@pytest.mark.parametrize("offset, chunk", [(0, 4096), (10_000, 4096), (0, -1), (65_536, 65_536)])
def test_progress_reader_reports_what_was_sent(tmp_path: Path, offset: int, chunk: int) -> None:
    data = os.urandom(65_536)
    src = tmp_path / "f"
    src.write_bytes(data)
    seen: list[int] = []
    with src.open("rb") as fh:
        reader = ProgressReader(fh, len(data), lambda done, total: seen.append(done))
        reader.seek(offset)
        got = b""
        while True:  # as the transport reads: chunk by chunk until EOF
            part = reader.read(chunk)
            got += part
            if not part or chunk < 0:
                break
    assert got == data[offset:]
    assert seen[0] == offset and seen[-1] == len(data)
    assert seen == sorted(set(seen))


# --------------------------------------------------------------------------- a real upload

UPLOAD_ROLE = """
- name: up | file a
  file: {{path: /tmp/kprov-up-a, content: "a"}}
- name: up | file b
  file: {{path: /tmp/kprov-up-b, content: "b"}}
- name: up | start a partial upload
  command:
    shell: "mkdir -p /tmp/kprov-up && yes kprov | head -c {partial} > /tmp/kprov-up/blob.part"
  when: "{partial} > 0"
- name: up | upload the blob
  upload:
    src: "{src}"
    dest: /tmp/kprov-up/blob
- name: up | checksum on the host
  command:
    shell: "sha256sum < /tmp/kprov-up/blob | cut -c1-64; rm -rf /tmp/kprov-up /tmp/kprov-up-a /tmp/kprov-up-b"
  register: remote_sum
  changed_when: false
- name: up | the same bytes
  assert:
    that: ["remote_sum.stdout.strip() == '{sha}'"]
"""


@pytest.mark.netns
@pytest.mark.parametrize("partial", [0, 3 * MiB])
def test_a_real_upload_reports_its_bytes(netns_fleet, tmp_path: Path, partial: int) -> None:
    size = 6 * MiB + 123
    data = (b"kprov\n" * (size // 6 + 1))[:size]  # what `yes kprov` writes: a partial part is its prefix
    src = tmp_path / "blob"
    src.write_bytes(data)
    roles = tmp_path / "roles"
    (roles / "up").mkdir(parents=True)
    (roles / "up" / "tasks.yaml").write_text(
        UPLOAD_ROLE.format(src=src, sha=hashlib.sha256(data).hexdigest(), partial=partial)
    )
    (tmp_path / "templates").mkdir()
    inv_path = netns_fleet.inventory(tmp_path / "inv.yaml")
    doc = yaml.safe_load(inv_path.read_text())
    doc["hosts"] = doc["hosts"][:1]
    inv_path.write_text(yaml.safe_dump(doc))
    inv = load_inventory(inv_path)
    host = inv.hosts[0].name
    recorder = Recorder()
    console, buf = _console(terminal=False)
    runner = Runner(
        inv,
        RunOptions(connect=ConnectOptions(connect_timeout=10, connect_retries=1)),
        TeeSink(ProgressConsole(console, live=False), recorder),
        roles_dir=roles,
        templates_dir=tmp_path / "templates",
    )
    try:
        report = runner.run([Play(role="up", hosts="all")])
    finally:
        runner.close()
    assert report.exit_status() == 0, buf.getvalue()
    positions = [done for h, task, done, total in recorder.transfers]
    assert {(h, task, total) for h, task, _, total in recorder.transfers} == {(host, "up | upload the blob", size)}
    # a resumed upload starts at what the host already has; then only forward, to the whole file
    assert positions[0] == partial
    assert positions == sorted(positions) and positions[-1] == size
    assert len(positions) >= 3  # chunk by chunk, not only start and end
    # the upload task is announced when it starts, its bytes come next, then its event
    upload = "up | upload the blob"
    assert recorder.order[recorder.order.index(f"start {upload}") :][:3] == [
        f"start {upload}",
        f"bytes {upload}",
        f"event {upload}",
    ]
    # changes batched into one round trip are announced together when that round trip starts
    more = 2 if partial else 1  # the partial upload's command is batched with them
    # the role starts with its facts (all its tasks' queries in one round trip)
    assert recorder.order[:4] == [
        "start up | gathering facts",
        f"start up | file a and {more} more change(s)",
        "event up | file a",
        "event up | file b",
    ]
