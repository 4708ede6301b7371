"""`kprov ci-smoke`: ec2 create -> up -> smoke -> ec2 destroy; the destroy always runs (failure, Ctrl-C, SIGTERM).

The steps, their results, the JSON event log and the job summary are decided here; what is shown while it
runs goes through a `CiSmokeView` (the CLI prints headings, the instance table and the steps' output).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provisioner.errors import InputError, KprovError, SmokeFailed, TaskFailed
from provisioner.providers import ci_smoke as pipeline
from provisioner.providers import ec2 as provider
from provisioner.providers.ec2_config import Ec2Config

STEP_ORDER = ("ec2 create", "up", "smoke")


class CiSmokeView(Protocol):
    """What the pipeline shows while it runs."""

    def heading(self, text: str) -> None: ...
    def created(self, report: Any, cluster: str) -> None: ...
    def line(self, text: str) -> None: ...
    def interrupt_ignored(self) -> None: ...


@dataclass(frozen=True)
class CiSmokeOptions:
    config: Ec2Config
    up_argv: tuple[str, ...]
    smoke_argv: tuple[str, ...]
    #: the JSON event log (absolute; the steps append to it)
    events: str
    #: the Markdown job summary to append to (None: none)
    summary: str | None = None
    wait_ssh: bool = True
    timeout: float = 600.0
    poll: float = 5.0


@dataclass(frozen=True)
class CiSmokeReport:
    steps: tuple[pipeline.StepResult, ...]
    #: the first failure (a KprovError or the interruption); None when every step passed
    failure: BaseException | None = None
    #: the teardown's own failure (the instances may be left: the hint says how to remove them)
    destroy_error: KprovError | None = None
    output: dict[str, list[str]] = field(default_factory=dict)

    def raise_for_failure(self) -> None:
        """The interruption, else the first failure (with the teardown's failure in its detail), else the
        teardown's failure."""
        if isinstance(self.failure, KeyboardInterrupt):
            raise self.failure
        if isinstance(self.failure, KprovError):
            if self.destroy_error is not None:
                self.failure.detail = "\n".join(
                    filter(None, [self.failure.detail, f"and the teardown failed too: {self.destroy_error}"])
                )
            raise self.failure
        if self.destroy_error is not None:
            raise self.destroy_error


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """CI systems cancel with SIGTERM: treat it like Ctrl-C so the teardown runs."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _shielded(view: CiSmokeView) -> Iterator[None]:
    """Ignore Ctrl-C/SIGTERM while tearing down: an interrupted destroy would leak instances."""

    def handler(signum: int, frame: Any) -> None:
        view.interrupt_ignored()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _current_step(steps: list[pipeline.StepResult]) -> str:
    done = {s.name for s in steps}
    return next((name for name in STEP_ORDER if name not in done), "ci-smoke")


def _create_step(opts: CiSmokeOptions, steps: list[pipeline.StepResult], view: CiSmokeView) -> None:
    view.heading(f"ec2 create ({opts.config.cluster})")
    watch = pipeline.Stopwatch()
    report = provider.create(opts.config, wait_ssh=opts.wait_ssh, timeout=opts.timeout, poll=opts.poll)
    view.created(report, opts.config.cluster)
    steps.append(pipeline.StepResult("ec2 create", "ok", watch.seconds, f"{len(report.instances)} instance(s)"))


def _command_step(
    name: str, argv: tuple[str, ...], steps: list[pipeline.StepResult], lines: list[str], view: CiSmokeView
) -> None:
    view.heading(name)
    watch = pipeline.Stopwatch()

    def on_line(line: str) -> None:
        lines.append(line)
        view.line(line)

    rc = pipeline.run_step(list(argv), on_line=on_line)
    if rc != 0:
        steps.append(pipeline.StepResult(name, "failed", watch.seconds, f"exit {rc}"))
        error_cls = SmokeFailed if name == "smoke" else TaskFailed
        raise error_cls(
            f"ci-smoke: step `{name}` failed (exit {rc})",
            hint="see the step's output above and the JSON event log; the instances are destroyed",
        )
    steps.append(pipeline.StepResult(name, "ok", watch.seconds))


def _destroy_step(opts: CiSmokeOptions, steps: list[pipeline.StepResult], view: CiSmokeView) -> KprovError | None:
    view.heading(f"ec2 destroy ({opts.config.cluster})")
    watch = pipeline.Stopwatch()
    try:
        report = provider.destroy(opts.config, timeout=opts.timeout, poll=opts.poll)
    except KprovError as exc:
        steps.append(pipeline.StepResult("ec2 destroy", "failed", watch.seconds, str(exc)))
        rerun = f"run `kprov ec2 destroy` to remove what is left of cluster {opts.config.cluster}"
        exc.hint = f"{exc.hint}; then {rerun}" if exc.hint else rerun
        return exc
    steps.append(
        pipeline.StepResult("ec2 destroy", "ok", watch.seconds, f"{len(report.terminated)} instance(s) terminated")
    )
    return None


def _write_summary(opts: CiSmokeOptions, steps: list[pipeline.StepResult], output: dict[str, list[str]]) -> None:
    if not opts.summary:
        return
    with open(opts.events, encoding="utf-8") as events:
        recap = pipeline.recap_from_events(events)
    text = pipeline.render_summary(
        opts.config.cluster, steps, recap, "\n".join(output["up"]), "\n".join(output["smoke"])
    )
    with open(opts.summary, "a", encoding="utf-8") as out:
        out.write(text)


def ci_smoke(opts: CiSmokeOptions, view: CiSmokeView) -> CiSmokeReport:
    """Run the pipeline; the report holds every step's result and what failed (nothing is raised for a
    failed step: `report.raise_for_failure()` does that after the caller has shown the steps)."""
    try:
        Path(opts.events).write_text("", encoding="utf-8")  # the steps append to it
    except OSError as exc:
        raise InputError(f"--events: cannot write {opts.events}: {exc.strerror}", hint="pass a writable path") from None
    steps: list[pipeline.StepResult] = []
    output: dict[str, list[str]] = {"up": [], "smoke": []}
    failure: KprovError | KeyboardInterrupt | None = None
    destroy_error: KprovError | None = None
    with _sigterm_as_interrupt():
        try:
            _create_step(opts, steps, view)
            _command_step("up", opts.up_argv, steps, output["up"], view)
            _command_step("smoke", opts.smoke_argv, steps, output["smoke"], view)
        except (KprovError, KeyboardInterrupt) as exc:
            failure = exc
            if not steps or steps[-1].status == "ok":  # a failed command step has recorded itself
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                steps.append(pipeline.StepResult(_current_step(steps), status, detail=str(exc) or "interrupted"))
        finally:
            with _shielded(view):
                destroy_error = _destroy_step(opts, steps, view)
                with open(opts.events, "a", encoding="utf-8") as events:
                    events.writelines(pipeline.step_event(step) + "\n" for step in steps)
    _write_summary(opts, steps, output)
    return CiSmokeReport(tuple(steps), failure, destroy_error, output)
