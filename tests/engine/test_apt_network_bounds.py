"""The package module's apt network phases are bounded and retried, checked with the real apt-get against a
mirror on loopback that stalls: it accepts connections and never answers (what a cold caching proxy did to a
lab run, holding `kprov up` for 25 minutes), then, in the second case, answers from its second connection on.

apt runs with its own lists/cache directories in a temporary directory: the machine's apt state is not touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisioner.modules.system import APT_OPTS, apt_retry_fn

pytestmark = pytest.mark.skipif(not shutil.which("apt-get"), reason="needs apt-get (Debian/Ubuntu)")

RELEASE = b"Origin: kprov-test\nLabel: kprov-test\nSuite: ./\nCodename: ./\n"


@dataclass
class Mirror:
    """A one-file-per-request HTTP mirror on 127.0.0.1 whose first `stall` connections are never answered."""

    stall: int
    port: int = 0
    connections: int = 0
    _held: list[socket.socket] = field(default_factory=list)

    def serve(self, srv: socket.socket) -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.stall:
                self._held.append(conn)  # accepted, read nothing, never answered
                continue
            with conn:
                request = conn.recv(4096).decode(errors="replace")
                path = request.split(" ", 2)[1] if request.count(" ") >= 2 else "/"
                body = RELEASE if path.endswith("/Release") else b"" if path.endswith("/Packages") else None
                if body is None:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                else:
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                    conn.sendall(head.encode() + body)


@pytest.fixture
def mirror(request: pytest.FixtureRequest) -> Iterator[Mirror]:
    m = Mirror(stall=request.param)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    m.port = srv.getsockname()[1]
    threading.Thread(target=m.serve, args=(srv,), daemon=True).start()
    yield m
    srv.close()
    for c in m._held:
        c.close()


def apt_update(tmp: Path, port: int, bound_s: int, tries: int) -> subprocess.CompletedProcess[str]:
    (tmp / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (tmp / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (tmp / "sources.list").write_text(f"deb [trusted=yes] http://127.0.0.1:{port}/repo ./\n")
    isolated = (
        f"-o Dir::State::Lists={tmp / 'lists'} -o Dir::Cache={tmp / 'cache'} "
        f"-o Dir::Etc::SourceList={tmp / 'sources.list'} -o Dir::Etc::SourceParts={tmp / 'none'} "
        "-o Acquire::http::Proxy=false -o APT::Sandbox::User=root"
    )
    script = (
        f"set -e\n{apt_retry_fn(bound_s, tries)}\n"
        f"kprov_apt_net env DEBIAN_FRONTEND=noninteractive apt-get update -q {APT_OPTS} {isolated}\n"
    )
    # the outer bound only protects the test run: the function's own bound is what ends a stall
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mirror", [99], indirect=True)
def test_a_mirror_that_never_answers_fails_after_the_bounded_tries(mirror: Mirror, tmp_path: Path) -> None:
    res = apt_update(tmp_path, mirror.port, bound_s=3, tries=2)
    assert res.returncode != 0
    assert "failed or stalled 2 times (each bounded to 3s)" in res.stderr, res.stderr
    assert res.stderr.count("retrying") == 1, res.stderr
    assert mirror.connections >= 2  # a fresh connection per try


@pytest.mark.parametrize("mirror", [1], indirect=True)
def test_a_stall_on_the_first_try_is_retried_and_the_update_succeeds(mirror: Mirror, tmp_path: Path) -> None:
    res = apt_update(tmp_path, mirror.port, bound_s=3, tries=3)
    assert res.returncode == 0, res.stderr
    assert "failed or stalled (try 1 of 3), retrying" in res.stderr, res.stderr
    assert "try 2 of 3" not in res.stderr
    assert list((tmp_path / "lists").glob("*Release")), "the retried update fetched nothing"
