"""Building blocks of `kprov ci-smoke`: step commands, subprocess steps, event recap, job summary.

The orchestration (create -> up -> smoke -> destroy, always) lives in provisioner/cli/ec2.py;
this module holds the parts that are plain data transformations or process handling.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

from provisioner.errors import InputError

log = logging.getLogger(__name__)

STATUSES = ("ok", "changed", "failed", "skipped", "unreachable")


@dataclass(frozen=True)
class StepResult:
    name: str
    status: str  # ok | failed | skipped | interrupted
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class RecapRow:
    host: str
    counts: dict[str, int] = field(default_factory=dict)


def default_step_argv(step: str, inventory: str, events: str) -> list[str]:
    """`kprov up` / `kprov smoke` run with this Python, so the same install is used."""
    base = [sys.executable, "-m", "provisioner.cli.main", step, "--inventory", inventory]
    if step == "up":
        # The smoke test is its own step; fresh cloud instances have host keys nobody has seen
        # yet, so they are trusted on first use; JSON events go to the artifact file.
        return base + ["--no-smoke", "--accept-new-host-keys", "--log-file", events]
    return base


def step_argv(template: str | None, step: str, inventory: str, events: str) -> list[str]:
    """The argv of a step: a user template (shell words; `{inventory}` and `{events}` substituted)
    or the default."""
    if not template:
        return default_step_argv(step, inventory, events)
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise InputError(
            f"--{step}-cmd: cannot parse {template!r}: {exc}", hint="quote it like a shell command"
        ) from None
    if not words:
        raise InputError(f"--{step}-cmd: empty command", hint="omit the option to run the default step")
    return [w.replace("{inventory}", inventory).replace("{events}", events) for w in words]


def run_step(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    capture: IO[str] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run one step; every stdout line goes to `on_line` and `capture`. Returns the exit code.

    On KeyboardInterrupt the child is terminated (then killed) before the interrupt propagates.
    """
    log.info("running %s", shlex.join(argv))
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
    except OSError as exc:
        on_line(f"cannot start {argv[0]}: {exc.strerror}")
        return 127
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if capture is not None:
                capture.write(line + "\n")
                capture.flush()
            on_line(line)
        return proc.wait()
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def recap_from_events(lines: Iterable[str]) -> list[RecapRow]:
    """Per-host status counts from JSON event lines (`--log-format json` / `--log-file`).

    The engine's own recap lines (`{"recap": host, "ok": n, ...}`) win; without them the task
    events are counted. Lines that are not JSON objects are ignored."""
    counted: dict[str, Counter[str]] = {}
    recap: dict[str, dict[str, int]] = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("recap"):
            recap[str(event["recap"])] = {s: int(event.get(s, 0) or 0) for s in STATUSES}
            continue
        host, status = event.get("host"), event.get("status")
        if host and status in STATUSES:
            counted.setdefault(str(host), Counter())[status] += 1
    if recap:
        return [RecapRow(host, counts) for host, counts in recap.items()]
    return [RecapRow(host, dict(c)) for host, c in counted.items()]


def step_event(result: StepResult) -> str:
    """A JSON event line for a pipeline step (no host: it is not counted in the per-host recap)."""
    return json.dumps(
        {
            "host": None,
            "role": "ci-smoke",
            "task": result.name,
            "status": result.status,
            "changed": False,
            "duration_ms": int(result.seconds * 1000),
            "msg": result.detail,
        }
    )


def render_summary(
    cluster: str,
    steps: Sequence[StepResult],
    recap: Sequence[RecapRow],
    up_output: str = "",
    smoke_output: str = "",
    tail: int = 40,
) -> str:
    """Markdown for the CI job summary: steps, per-host recap, the end of `up`, the smoke output."""
    icon = {"ok": "✅", "failed": "❌", "skipped": "⏭️", "interrupted": "⚠️"}
    out = [f"## kprov ci-smoke: `{cluster}`", "", "| step | result | time | detail |", "|---|---|---|---|"]
    for s in steps:
        detail = s.detail.replace("|", "\\|").replace("\n", " ")
        out.append(f"| {s.name} | {icon.get(s.status, '')} {s.status} | {s.seconds:.1f} s | {detail} |")
    if recap:
        out += ["", "### Recap", "", "| host | " + " | ".join(STATUSES) + " |", "|---" * (len(STATUSES) + 1) + "|"]
        for row in recap:
            out.append(f"| {row.host} | " + " | ".join(str(row.counts.get(s, 0)) for s in STATUSES) + " |")
    for title, text in (("kprov up (last lines)", up_output), ("Smoke test", smoke_output)):
        lines = text.rstrip().splitlines()[-tail:]
        if lines:
            out += ["", f"### {title}", "", "```text", *lines, "```"]
    return "\n".join(out) + "\n"


class Stopwatch:
    """Seconds since creation (monotonic)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start
