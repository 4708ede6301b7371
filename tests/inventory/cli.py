"""Run the real `kprov` CLI in a child process: as a fresh subprocess, or forked from this
already-imported interpreter (same entry point, exit code and streams; ~50x cheaper per call)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KPROV = Path(sys.executable).with_name("kprov")


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def kprov(
    *argv: str, cwd: Path | str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """`kprov ARGV...` as a new process."""
    p = subprocess.run(
        [str(KPROV), *argv], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    return CliResult(p.returncode, p.stdout, p.stderr)


def kprov_forked(*argv: str, cwd: Path | str | None = None, env: dict[str, str] | None = None) -> CliResult:
    """`kprov ARGV...` in a forked child running `provisioner.cli.main.main` (no interpreter start-up)."""
    import provisioner.cli.main as climain

    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become a kprov process
        code = 70
        try:
            os.close(r_out)
            os.close(r_err)
            os.dup2(w_out, 1)
            os.dup2(w_err, 2)
            sys.stdin = io.TextIOWrapper(io.BytesIO())
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
            if cwd is not None:
                os.chdir(cwd)
            os.environ.update(env or {})
            try:
                climain.main(list(argv))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(w_out)
    os.close(w_err)
    out, err = _read_both(r_out, r_err)
    _, status = os.waitpid(pid, 0)
    return CliResult(os.waitstatus_to_exitcode(status), out, err)


def _read_both(r_out: int, r_err: int) -> tuple[str, str]:
    import selectors

    bufs = {r_out: bytearray(), r_err: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    open_fds = set(bufs)
    while open_fds:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if chunk:
                bufs[key.fd] += chunk
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                open_fds.discard(key.fd)
    return bufs[r_out].decode(), bufs[r_err].decode()
