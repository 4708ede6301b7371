"""Every bad inventory in bad/ is rejected by the real CLI with one exact line + a hint, exit 2, before any host is touched."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
import yaml

from provisioner.inventory.yamlsource import MAX_YAML_BYTES
from tests.inventory.cli import kprov, kprov_forked

BAD = Path(__file__).parent / "bad"
EXPECTED = yaml.safe_load((BAD / "expected.yaml").read_text())
# the corpus hosts live on these loopback addresses; a listener on each proves nothing connects
CORPUS_ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


def _make(path: Path, how: str) -> None:
    """Create a corpus entry git cannot hold (or should not): see `make:` in expected.yaml."""
    if how == "fifo":
        os.mkfifo(path)
    elif how.startswith("symlink "):
        path.symlink_to(how.split(" ", 1)[1])
    elif how == "oversize":  # valid YAML, one byte over the cap
        path.write_text("cluster: {name: demo}\n" + "#" * (MAX_YAML_BYTES - len("cluster: {name: demo}\n")) + "\n")
    else:
        raise AssertionError(f"unknown make: {how}")


def _cases() -> list:
    out = []
    for name, spec in sorted(EXPECTED.items()):
        marks = [pytest.mark.xfail(strict=True, reason=spec["xfail"])] if spec.get("xfail") else []
        out.append(pytest.param(name, spec, id=name.removesuffix(".yaml"), marks=marks))
    return out


class _Listeners:
    """TCP listeners on port 22 of the corpus addresses, counting every connection attempt."""

    def __init__(self, addresses: tuple[str, ...]) -> None:
        self.accepted: list[str] = []
        self.socks = []
        for addr in addresses:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, 22))
            s.listen(16)
            s.settimeout(0.1)
            self.socks.append(s)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self.socks]
        for t in self._threads:
            t.start()

    def _serve(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = s.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(f"{s.getsockname()[0]} <- {peer}")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        for s in self.socks:
            s.close()


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
    """Run `kprov plan -i FILE` on the whole corpus, with listeners on the corpus hosts.

    The first case runs as a fresh process (console script and all), the rest in forked children of
    the already-imported CLI: same entry point and streams, a fraction of the start-up cost."""
    home = tmp_path_factory.mktemp("kprov-home")
    corpus = tmp_path_factory.mktemp("corpus") / "bad"
    shutil.copytree(BAD, corpus, symlinks=True)
    for name, spec in EXPECTED.items():
        if spec.get("make"):
            _make(corpus / name, spec["make"])
    env = {"KPROV_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    try:
        listeners = _Listeners(CORPUS_ADDRESSES)
    except OSError as exc:
        pytest.skip(f"cannot listen on the corpus addresses: {exc}")
    try:
        names = sorted(EXPECTED)
        results = {names[0]: kprov("plan", "-i", names[0], cwd=corpus, env=env)}
        results.update({n: kprov_forked("plan", "-i", n, cwd=corpus, env=env) for n in names[1:]})
    finally:
        listeners.close()
    return results, listeners.accepted, home


def test_corpus_is_complete():
    files = {p.name for p in BAD.glob("*.yaml")} - {"expected.yaml"}
    absent = {name for name in EXPECTED if not (BAD / name).exists()}
    assert absent == {"does_not_exist.yaml"} | {n for n, spec in EXPECTED.items() if spec.get("make")}
    assert files == set(EXPECTED) - absent, "every corpus file needs an entry in expected.yaml and vice versa"
    assert len(EXPECTED) >= 30


@pytest.mark.parametrize("name, spec", _cases())
def test_bad_inventory_message(corpus_runs, name, spec):
    proc = corpus_runs[0][name]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == f"error: {spec['message']}"
    assert len(lines) == 2 and lines[1].startswith("hint: ") and spec["hint"] in lines[1], proc.stderr


def test_no_host_is_touched(corpus_runs):
    _, accepted, home = corpus_runs
    assert accepted == []
    assert not (home / "known_hosts").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["plan", "-i", str(BAD)], "is a directory"),
        (["plan"], "Missing option '-i' / '--inventory'"),
        (["apply", "-i", str(BAD / "empty.yaml")], "Missing argument 'ROLES...'"),
        (["plan", "-i", str(BAD / "empty.yaml"), "--forks", "0"], "Invalid value for '-f' / '--forks'"),
        (["plan", "-i", str(BAD / "empty.yaml"), "-e", "novalue"], "-e 'novalue': expected key=value"),
        (["plan", "-i", str(BAD / "empty.yaml"), "-e", "@/nonexistent/vars.yaml"], "file not found"),
    ],
)
def test_bad_usage_exits_2_without_traceback(argv, needle, tmp_path):
    proc = kprov_forked(*argv, env={"KPROV_HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert needle in proc.stderr


@pytest.mark.parametrize(
    "make, message",
    [
        ("fifo", "not a regular file (a FIFO)"),
        ("symlink /dev/zero", "not a regular file (a character device)"),
        ("oversize", "larger than 1024 KiB"),
        ("copy not_utf8.yaml", "vars.yaml:2: not UTF-8 (byte 0xff at offset 18)"),
        ("copy alias_bomb.yaml", "vars.yaml:5: more than 50000 values once aliases are expanded"),
        ("copy deep_nesting.yaml", "vars.yaml:2: nesting deeper than 64 levels"),
        ("copy nul_byte.yaml", "vars.yaml:4: NUL byte in the file"),
    ],
    ids=lambda v: v.split()[-1].removesuffix(".yaml") if " " in v else v,
)
def test_odd_extra_vars_file_is_one_line_exit_2(tmp_path, make, message):
    vars_file = tmp_path / "vars.yaml"
    if make.startswith("copy "):
        shutil.copyfile(BAD / make.split()[1], vars_file)
    else:
        _make(vars_file, make)
    proc = kprov_forked("plan", "-i", str(BAD / "empty.yaml"), "-e", f"@{vars_file}", env={"KPROV_HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith("hint: "), proc.stderr
    assert lines[0].startswith(f"error: -e @{vars_file}: ") and lines[0].endswith(message), lines[0]
