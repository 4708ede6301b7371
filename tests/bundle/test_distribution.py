"""Bundle distribution between nodes, without a lab: the seed's real server (python3) and the nodes' real pull
script (sh + curl + sha256sum) run here on loopback, against a real bundle built and unpacked by kprov.

What a node ends up with, what the seed sent and when the server stops are the observable outcomes; the lab
test (test_distribution_lab.py) runs the same scripts through the roles on real nodes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.bundle import BuildSpec, build, extract, read_manifest
from provisioner.bundle.distribution import (
    control_plane_only,
    distribution_vars,
    needed_files,
    pull_script,
    serve_script,
)
from tests.bundle.helpers import make_source_dir

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("python3")), reason="needs curl and python3 (as the nodes do)"
)

CP_IMAGES = {
    "images/kube-apiserver.tar",
    "images/kube-controller-manager.tar",
    "images/kube-scheduler.tar",
    "images/etcd.tar",
}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(bundle path, bundle vars, the seed's unpacked copy)."""
    base = tmp_path_factory.mktemp("dist")
    bundle = base / "k.tar"
    build(BuildSpec("1.20.2", from_dir=make_source_dir(base / "src")), bundle)
    root = base / "seed" / "opt-bundle"
    extract(bundle, root)
    return bundle, distribution_vars(bundle, read_manifest(bundle)), root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # as the engine runs a change: set -e, stdin from /dev/null
    return subprocess.run(
        ["sh", "-c", "{\nset -e\n" + script + "\n} </dev/null"], capture_output=True, text=True, timeout=timeout
    )


def start_server(
    root: Path, peers: list[str], idle: int = 20, deadline: int = 60, meanwhile: str = ""
) -> tuple[subprocess.Popen, str]:
    port, token = free_port(), "t0ken"
    proc = subprocess.Popen(
        ["sh", "-c", serve_script(str(root), "127.0.0.1", port, token, peers, idle, deadline, meanwhile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}/{token}"


def stop_line(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.strip()


def verified(dest: Path, files: list[dict]) -> bool:
    return all(hashlib.sha256((dest / f["path"]).read_bytes()).hexdigest() == f["sha256"] for f in files)


def test_worker_subset_leaves_out_the_control_plane_images(seeded) -> None:
    bundle, v, _ = seeded
    assert control_plane_only(read_manifest(bundle)) == CP_IMAGES
    assert {f["path"] for f in v["bundle_files"] if f["cp_only"]} == CP_IMAGES
    assert "manifest.json" in {f["path"] for f in needed_files(v["bundle_files"], control_plane=False)}
    assert v["bundle_worker_bytes"] < v["bundle_full_bytes"]


@pytest.mark.parametrize("role", ["control_plane", "worker"])
def test_a_node_pulls_what_it_needs_and_the_server_stops_when_all_have_it(seeded, tmp_path, role) -> None:
    _, v, root = seeded
    proc, url = start_server(root, ["n1"])
    files = needed_files(v["bundle_files"], control_plane=role == "control_plane")
    dest = tmp_path / "node" / "bundle"
    res = sh(pull_script(str(dest), url, files, "n1", wait=30))
    assert res.returncode == 0 and res.stdout.strip().startswith("pulled:"), res.stdout + res.stderr
    got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert got == {f["path"] for f in files}
    assert verified(dest, files)
    assert not (tmp_path / "node" / "bundle.part").exists()
    line = stop_line(proc)
    assert "stopped: every node has its copy" in line, line
    assert int(re.search(r"served (\d+) bytes", line).group(1)) == sum(f["size"] for f in files)


@pytest.mark.parametrize("fails", [False, True])
def test_the_seed_works_while_it_serves(seeded, tmp_path, fails) -> None:
    """The seed's own work (`meanwhile`) runs while the others pull: a node pulls although that work only ends
    after the pull; the script ends when both have, with the work's exit code and both outputs."""
    _, v, root = seeded
    flag = tmp_path / "pulled"
    work = f"while [ ! -e {flag} ]; do sleep 0.1; done\necho imported seed-image\n" + (
        "false\necho not here" if fails else ""
    )
    proc, url = start_server(root, ["n1"], meanwhile=work)
    files = needed_files(v["bundle_files"], control_plane=False)
    res = sh(pull_script(str(tmp_path / "bundle"), url, files, "n1", wait=30))
    assert res.stdout.startswith("pulled:"), res.stdout + res.stderr
    assert proc.poll() is None  # the seed's work still waits for the flag
    flag.touch()
    out, _ = proc.communicate(timeout=60)
    lines = out.strip().splitlines()
    assert lines[0] == "imported seed-image" and "stopped: every node has its copy" in lines[-1], out
    assert "not here" not in out
    assert proc.returncode == (1 if fails else 0)


def test_an_interrupted_pull_resumes_with_range_requests(seeded, tmp_path) -> None:
    _, v, root = seeded
    files = needed_files(v["bundle_files"], control_plane=True)
    biggest = max(files, key=lambda f: f["size"])
    part = tmp_path / "bundle.part" / biggest["path"]
    part.parent.mkdir(parents=True)
    part.write_bytes((root / biggest["path"]).read_bytes()[: biggest["size"] // 2])  # half arrived before
    proc, url = start_server(root, ["n1"])
    res = sh(pull_script(str(tmp_path / "bundle"), url, files, "n1", wait=30))
    assert res.stdout.startswith("pulled:"), res.stdout + res.stderr
    assert verified(tmp_path / "bundle", files)
    served = int(re.search(r"served (\d+) bytes", stop_line(proc)).group(1))
    assert served == sum(f["size"] for f in files) - biggest["size"] // 2


def test_a_corrupt_seed_copy_is_refused_and_the_node_falls_back(seeded, tmp_path) -> None:
    _, v, root = seeded
    bad_root = tmp_path / "seed"
    shutil.copytree(root, bad_root)
    victim = bad_root / "bin" / "kubelet"
    victim.write_bytes(victim.read_bytes()[:-1] + b"X")
    proc, url = start_server(bad_root, ["n1"])
    files = needed_files(v["bundle_files"], control_plane=False)
    res = sh(pull_script(str(tmp_path / "bundle"), url, files, "n1", wait=30))
    assert res.returncode == 0 and res.stdout.strip() == "fallback: checksum mismatch: bin/kubelet", res.stdout
    assert not (tmp_path / "bundle").exists()
    assert not (tmp_path / "bundle.part" / "bin" / "kubelet").exists()  # a rerun fetches it again
    assert "every node has its copy" in stop_line(proc)  # the node said it is done with the seed


def test_a_node_that_cannot_reach_the_seed_falls_back_within_its_wait(tmp_path, seeded) -> None:
    _, v, _ = seeded
    res = sh(
        pull_script(str(tmp_path / "bundle"), f"http://127.0.0.1:{free_port()}/x", v["bundle_files"], "n1", wait=2)
    )
    assert res.stdout.strip() == "fallback: the seed did not answer within 2s"
    assert not (tmp_path / "bundle").exists()


def test_the_server_stops_when_nobody_comes(seeded) -> None:
    _, _, root = seeded
    proc, _ = start_server(root, ["n1", "n2"], idle=2)
    line = stop_line(proc)
    assert "stopped: idle for 2s" in line and "no word from n1, n2" in line, line


@pytest.mark.parametrize("path", ["../etc/passwd", "f/../../etc/passwd", "f/secret.txt", "f/bin"])
def test_the_server_only_hands_out_bundle_files(seeded, tmp_path, path) -> None:
    _, _, root = seeded
    (root.parent / "secret.txt").write_text("no")
    proc, url = start_server(root, ["n1"], idle=5)
    subprocess.run(
        ["curl", "-fs", "--retry", "20", "--retry-connrefused", "--retry-delay", "1", "-o", "/dev/null", f"{url}/ping"],
        check=True,
        timeout=60,
    )
    base = url.rsplit("/", 1)[0]
    for u in (f"{url}/{path}", f"{base}/wrong/f/manifest.json"):
        res = subprocess.run(
            ["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", u],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.stdout == "404", (u, res.stdout)
    proc.kill()
    proc.communicate()


def test_the_server_is_gone_when_its_session_is(seeded) -> None:
    """kprov's guard ends the script's process group (timeout, Ctrl-C, lost session): nothing keeps listening."""
    _, _, root = seeded
    port = free_port()
    proc = subprocess.Popen(
        ["timeout", "3", "sh", "-c", serve_script(str(root), "127.0.0.1", port, "t", ["n1"], 60, 600)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc.wait(timeout=30)
    time.sleep(0.5)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_server(p, port)]


def _is_server(pid: str, port: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "kprov-bundle-serve" in cmd and f" {port} " in cmd


SERVE = {"root": "/opt/kprov/bundle/x", "bind": "10.0.0.1", "port": 4000, "token": "abc123", "peers": "n2 n3"}


@pytest.mark.parametrize(
    "args, decided, text",
    [
        ({}, "Change", "serve the bundle on 10.0.0.1:4000 to 2 nodes"),
        ({"peers": ""}, "NoChange", "no other node needs the bundle"),
        (
            {"port": 0, "token": "", "unavailable": "no python3 on the seed"},
            "NoChange",
            "not served (no python3 on the seed)",
        ),
    ],
)
def test_serve_decision(args, decided, text) -> None:
    from provisioner.modules.base import get_module

    m = get_module("bundle_serve", "t")
    d = m.check(m.validate({**SERVE, **args}, "t"), {})
    assert type(d).__name__ == decided and d.msg.startswith(text)


@pytest.mark.parametrize(
    "present, url, decided, text",
    [
        (True, "http://10.0.0.1:4000/abc", "NoChange", "/b present"),
        (False, "http://10.0.0.1:4000/abc", "Change", "pull "),
        (False, "", "Change", "upload directly: no seed serves the bundle in this run"),
    ],
)
def test_pull_decision(seeded, present, url, decided, text) -> None:
    from provisioner.modules.base import get_module

    _, v, _ = seeded
    m = get_module("bundle_pull", "t")
    args = m.validate({"dest": "/b", "url": url, "files": v["bundle_files"], "control_plane": False, "peer": "n2"}, "t")
    assert {f["path"] for f in args["files"]}.isdisjoint(CP_IMAGES)
    d = m.check(args, {"present": present})
    assert type(d).__name__ == decided and d.msg.startswith(text), d.msg
    if not url and not present:
        res = sh(d.script)
        assert res.stdout.strip() == "fallback: no seed serves the bundle in this run"
