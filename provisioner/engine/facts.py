"""The fact cache: a host's fact queries sent in one round trip, parsed, kept until a change touches them."""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Sequence
from typing import Any, Protocol

from provisioner.errors import KprovError
from provisioner.modules.base import FactQuery
from provisioner.transport.ssh import CommandResult

#: a fact batch is read-only queries: minutes mean the host is in trouble
FACT_TIMEOUT_S = 300


class TaskError(KprovError):
    """A task failed on a host (internal to the engine; becomes a FAILED event)."""


class ScriptRunner(Protocol):
    def script(self, script: str, *, timeout: float | None = None) -> CommandResult: ...


def marker() -> str:
    """A fresh random marker that separates the sections of one batch script's output."""
    return "__KPROV_" + _secrets.token_hex(6)


def framed(marker: str, i: int, body: str, stderr: str = "/dev/null", after: str = "") -> str:
    """Section i of a batch script: its output between markers, then its exit status.

    stdin is /dev/null: a section must never read the rest of the batch script from our stdin."""
    return (
        f"echo '{marker} {i} BEGIN'\n( {body}\n) </dev/null 2>{stderr}\nrc=$?\necho \"\"\n"
        f'echo "{marker} {i} END $rc"{after}'
    )


def section(out: str, marker: str, i: int) -> tuple[int, str] | None:
    """(exit status, output) of section i of a framed batch; None when the output stops before it."""
    begin, end_tag = f"{marker} {i} BEGIN\n", f"\n{marker} {i} END "
    start = out.find(begin)
    end = out.find(end_tag, start)
    if start < 0 or end < 0:
        return None
    body = out[start + len(begin) : end]
    body = body[:-1] if body.endswith("\n") else body  # the echo "" we added
    rc_line = out[end + len(end_tag) :].split("\n", 1)[0]
    return (int(rc_line) if rc_line.strip().isdigit() else 1), body


def batch_script(queries: Sequence[FactQuery], marker: str) -> str:
    return "\n".join(framed(marker, i, fq.script) for i, fq in enumerate(queries)) + "\n"


def parse_batch(out: str, queries: Sequence[FactQuery], marker: str, stderr: str = "") -> list[Any]:
    results: list[Any] = []
    for i, fq in enumerate(queries):
        found = section(out, marker, i)
        if found is None:
            tail = "\n".join((stderr.strip() or out.strip()).splitlines()[-10:])
            raise TaskError(
                f"fact gathering output was cut short (query {fq.name}: {fq.script[:120]!r})",
                hint="the host closed the session early; check its shell and disk space",
                detail=tail or None,
            )
        rc, body = found
        results.append(fq.parse(body, rc))
    return results


class FactCache:
    """One host's parsed facts, keyed by query script. Not thread-safe: the host's lock guards it."""

    def __init__(self) -> None:
        self._facts: dict[str, tuple[str, Any]] = {}  # script -> (resource, parsed)

    def gather(self, transport: ScriptRunner, queries: Sequence[FactQuery]) -> dict[str, Any]:
        """Answers by query name; the queries not cached yet go to the host in one round trip."""
        missing = list({fq.script: fq for fq in queries if fq.script not in self._facts}.values())
        if missing:
            mark = marker()
            res = transport.script(batch_script(missing, mark), timeout=FACT_TIMEOUT_S)
            if res.rc != 0 and mark not in res.stdout:
                raise TaskError(
                    f"fact gathering failed (rc={res.rc})", hint="check the host's shell", detail=res.stderr_tail()
                )
            for fq, value in zip(missing, parse_batch(res.stdout, missing, mark, res.stderr)):
                self._facts[fq.script] = (fq.resource, value)
        return {fq.name: self._facts[fq.script][1] for fq in queries}

    def invalidate(self, touched: set[str] | frozenset[str]) -> None:
        """Drop the facts a change touched ("*": all of them)."""
        if "*" in touched:
            self._facts.clear()
        elif touched:
            # `unless` probes are arbitrary commands: any change may alter their answer
            for script in [s for s, (res, _) in self._facts.items() if res in touched or res.startswith("unless:")]:
                del self._facts[script]
