"""Real bundle inputs for tests: fake (but well-formed) binaries, real docker-archive images, a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from provisioner.bundle import dockerarchive

VERSION = "1.20.2"
CORE_REFS = {
    "kube-apiserver": f"k8s.gcr.io/kube-apiserver:v{VERSION}",
    "kube-controller-manager": f"k8s.gcr.io/kube-controller-manager:v{VERSION}",
    "kube-scheduler": f"k8s.gcr.io/kube-scheduler:v{VERSION}",
    "kube-proxy": f"k8s.gcr.io/kube-proxy:v{VERSION}",
    "pause": "k8s.gcr.io/pause:3.2",
    "etcd": "k8s.gcr.io/etcd:3.4.13-0",
}
SMOKE_REF = "docker.io/kprov/hello:1.0"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


def fake_elf(path: Path, text: str, mode: int = 0o755) -> Path:
    """An 'executable' with an ELF magic and a version string, enough for the bundle's checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF" + text.encode() + b"\n" + hashlib.sha256(text.encode()).digest() * 64)
    path.chmod(mode)
    return path


def image(path: Path, ref: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dockerarchive.write_image(path, ref, [dockerarchive.Content("hello.txt", f"{ref}\n".encode())])
    return path


def make_source_dir(
    root: Path, version: str = VERSION, *, crictl: bool = True, images: dict[str, str] | None = None
) -> Path:
    """A directory laid out like a bundle."""
    for name in ("kubeadm", "kubelet", "kubectl"):
        fake_elf(root / "bin" / name, f"{name} v{version}")
    if crictl:
        (root / "bin" / "crictl").write_text("#!/bin/sh\necho crictl stand-in\n")
        (root / "bin" / "crictl").chmod(0o755)
    for name in CNI_PLUGINS:
        fake_elf(root / "cni" / "bin" / name, f"cni {name}")
    refs = dict(CORE_REFS, smoke=SMOKE_REF) if images is None else images
    for key, ref in refs.items():
        image(root / "images" / f"{key}.tar", ref)
    return root


def write_tgz(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o755
            t.addfile(ti, io.BytesIO(data))
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_bundle(src: Path, dst: Path, edit: Callable[[str, bytes], bytes | None]) -> Path:
    """Copy a bundle tar member by member; `edit(name, data)` returns new data or None to drop the member."""
    with tarfile.open(src) as t_in, tarfile.open(dst, "w") as t_out:
        for m in t_in:
            data = t_in.extractfile(m).read() if m.isfile() else b""
            new = edit(m.name, data)
            if new is None:
                continue
            m.size = len(new)
            t_out.addfile(m, io.BytesIO(new))
    return dst


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (ephemeral port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
