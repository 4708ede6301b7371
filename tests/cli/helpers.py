"""Helpers for CLI tests: the real `kprov` as a subprocess, and kprov installed from its wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KPROV = Path(sys.executable).with_name("kprov")
#: what a source distribution of kprov holds (setup.py copies roles/ and templates/ into the wheel)
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "provisioner", "roles", "templates")


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: list[str],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    stdin: str | None = None,
) -> CliResult:
    p = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, input=stdin
    )
    return CliResult(p.returncode, p.stdout, p.stderr)


def kprov(*argv: str, **kwargs) -> CliResult:
    """`kprov ARGV...` (the checkout's) as a new process."""
    return run([str(KPROV), *argv], **kwargs)


def build_wheel(work: Path) -> Path:
    """Build kprov's wheel from a copy of the checkout (builds never write into the shared tree)."""
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_data"))
        else:
            shutil.copy2(path, src / name)
    dist = work / "dist"
    # no build isolation: the build backend comes from the test environment (setuptools in the test extra)
    res = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        cwd=work,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = dist.glob("kprov-*.whl")
    return wheel


def fresh_venv(work: Path, wheel: Path) -> Path:
    """A new venv outside the checkout with kprov installed from `wheel`; returns its bin/ directory.

    kprov itself comes only from the wheel. Its dependencies (fabric, paramiko, ...) are made importable
    from the test environment by a plain path line in a .pth file: the test environment's own .pth files
    (e.g. the editable install of this checkout) are not processed, so the checkout stays invisible.
    """
    venv = work / "venv"
    res = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert res.returncode == 0, res.stderr
    py = venv / "bin" / "python"
    res = run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    purelib = run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    Path(purelib, "_kprov_test_deps.pth").write_text(deps + "\n")
    return venv / "bin"
