"""Rendered files checked by the real tools that consume them, where those tools exist on this machine.

Tools come from tests/golden/fetch-tools.sh (containerd 1.6 installed here, 1.7/2.x and etcd unpacked under
$KPROV_TOOLS_DIR) and from the lab bundle (kubeadm and kube-apiserver 1.20.2 under /var/cache/kprov).
A check whose tool is absent is skipped with the reason; a tool that is present and rejects a file fails.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import http.server
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.golden.cases import CASES, ENV, Case, cases_for, docs, host_vars, ids, render

TOOLS_DIR = Path(os.environ.get("KPROV_TOOLS_DIR", "/var/cache/kprov/tools"))
LAB_BUNDLE_BIN = Path(os.environ.get("KPROV_LAB_BUNDLE_BIN", "/var/cache/kprov/lab-bundle/bin"))
FETCH_HINT = "run tests/golden/fetch-tools.sh"


def run(argv: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def _version(argv: list[str], pattern: str = r"v?(\d+)\.(\d+)\.(\d+)") -> tuple[int, int, int] | None:
    try:
        out = run(argv, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, out.stdout + out.stderr)
    return tuple(int(x) for x in m.groups()) if m and out.returncode == 0 else None  # type: ignore[return-value]


# --- containerd: `containerd --config FILE config dump` loads the file exactly as the daemon would ---


@functools.cache
def containerd_binaries() -> dict[tuple[int, int], tuple[str, str]]:
    """(major, minor) -> (binary, version) for every containerd found (the machine's, then the fetched ones)."""
    found: dict[tuple[int, int], tuple[str, str]] = {}
    for binary in [shutil.which("containerd"), *sorted(glob.glob(str(TOOLS_DIR / "containerd-*" / "containerd")))]:
        if not binary:
            continue
        v = _version([binary, "--version"], r"\sv?(\d+)\.(\d+)\.(\d+)")
        if v:
            found.setdefault(v[:2], (binary, ".".join(map(str, v))))
    return found


def containerd_for(major: int, minor: int) -> tuple[str, str, bool]:
    """The best containerd for a config: the same major.minor, else the newest of the same major."""
    binaries = containerd_binaries()
    if (major, minor) in binaries:
        return (*binaries[(major, minor)], True)
    same_major = sorted(k for k in binaries if k[0] == major)
    if not same_major:
        have = ", ".join(v for _, v in binaries.values()) or "none"
        pytest.skip(f"no containerd {major}.x here (have: {have}); {FETCH_HINT}")
    return (*binaries[same_major[-1]], False)


CONTAINERD_CASES = cases_for("containerd/config.toml.j2")


@pytest.mark.parametrize("case", CONTAINERD_CASES, ids=ids(CONTAINERD_CASES))
def test_containerd_loads_config(case: Case, tmp_path: Path) -> None:
    v = case.vars
    binary, version, exact = containerd_for(v["containerd_major"], v["containerd_minor"])
    config = tmp_path / "config.toml"
    config.write_text(render(case))
    out = run([binary, "--config", str(config), "config", "dump"])
    assert out.returncode == 0, f"containerd {version} rejects the config:\n{out.stderr}"
    if exact:
        assert "deprecat" not in out.stderr.lower(), f"containerd {version} warns:\n{out.stderr}"
    dump = tomllib.loads(out.stdout)
    plugins = dump["plugins"]
    if version.startswith("1."):
        assert dump["version"] == 2
        cri = plugins["io.containerd.grpc.v1.cri"]
        images, runtime, sandbox = cri, cri, cri["sandbox_image"]
        bin_dirs = [cri["cni"]["bin_dir"]]
    else:
        assert dump["version"] == 3
        images, runtime = plugins["io.containerd.cri.v1.images"], plugins["io.containerd.cri.v1.runtime"]
        sandbox = images["pinned_images"]["sandbox"]
        cni = runtime["cni"]
        bin_dirs = cni["bin_dirs"] if exact or v["containerd_minor"] >= 1 else [cni["bin_dir"]]
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is v["containerd_systemd_cgroup"]
    assert sandbox == v["containerd_sandbox_image"]
    assert runtime["restrict_oom_score_adj"] is v["containerd_restrict_oom_score_adj"]
    assert bin_dirs == [v["containerd_cni_bin_dir"]]
    assert runtime["cni"]["conf_dir"] == v["containerd_cni_conf_dir"]
    assert images["registry"]["config_path"] == v["containerd_registry_config_path"]


def test_containerd_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: a config containerd cannot load makes `config dump` exit non-zero."""
    binary, _, _ = containerd_for(1, 6)
    config = tmp_path / "config.toml"
    config.write_text(render(CONTAINERD_CASES[0]).replace("SystemdCgroup = true", "SystemdCgroup = yes"))
    assert run([binary, "--config", str(config), "config", "dump"]).returncode != 0


# Test-only isolation appended to the rendered config: no NRI socket in /var/run, no /opt/containerd.
_DAEMON_ISOLATION = """
[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root")
@pytest.mark.parametrize("case", CONTAINERD_CASES, ids=ids(CONTAINERD_CASES))
def test_containerd_daemon_starts_cri(case: Case, tmp_path: Path) -> None:
    """The daemon boots with the config (private root, state and socket) and its CRI plugins load.

    `config dump` only decodes the file; the CRI plugins validate their config when they start."""
    v = case.vars
    binary, version, _ = containerd_for(v["containerd_major"], v["containerd_minor"])
    text = _boot_containerd(binary, version, render(case), tmp_path)
    failed = [line for line in text.splitlines() if "failed to load plugin" in line and "cri" in line]
    assert not failed, "\n".join(failed)
    if version.startswith("1."):
        assert "Start cri plugin with config" in text
        assert f"SandboxImage:{v['containerd_sandbox_image']} " in text
        assert f"RestrictOOMScoreAdj:{str(v['containerd_restrict_oom_score_adj']).lower()} " in text
        assert f"Options:map[SystemdCgroup:{str(v['containerd_systemd_cgroup']).lower()}]" in text
    else:
        assert "starting cri plugin" in text
        for plugin in ("io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.grpc.v1.cri"):
            assert f"id={plugin} " in text, f"{plugin} was not loaded"


@pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root")
@pytest.mark.parametrize("major, minor", [(1, 6), (2, 1)])
def test_containerd_daemon_check_catches_a_bad_cri_config(major: int, minor: int, tmp_path: Path) -> None:
    """The daemon check can fail: a default runtime that is not configured makes the CRI plugin fail."""
    binary, version, _ = containerd_for(major, minor)
    (case,) = [
        c for c in CONTAINERD_CASES if (c.vars["containerd_major"], c.vars["containerd_minor"]) == (major, minor)
    ][:1]
    config = render(case).replace('default_runtime_name = "runc"', 'default_runtime_name = "crun"')
    text = _boot_containerd(binary, version, config, tmp_path)
    assert any("failed to load plugin" in line and "cri" in line for line in text.splitlines()), text[-3000:]


def _conflists() -> list[tuple[str, str]]:
    """(id, conflist text): the bridge conflists and the flannel ConfigMap's cni-conf.json."""
    out = [(f"{c.name}/{c.output_name}", render(c)) for c in cases_for("cni/bridge.conflist.j2")]
    for c in cases_for("cni/flannel.yaml.j2")[:1]:
        cm = next(d for d in docs(render(c)) if d["kind"] == "ConfigMap")
        out.append((f"{c.name}/10-flannel.conflist", cm["data"]["cni-conf.json"]))
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root")
@pytest.mark.parametrize("major, minor", [(1, 6), (2, 1)], ids=["containerd-1.6", "containerd-2.1"])
@pytest.mark.parametrize("name, conflist", _conflists(), ids=[n for n, _ in _conflists()])
def test_containerd_loads_cni_conflist(name: str, conflist: str, major: int, minor: int, tmp_path: Path) -> None:
    """containerd's CRI (libcni) loads the network config: without a loadable one it logs 'failed to load cni'."""
    binary, version, _ = containerd_for(major, minor)
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / Path(name).name).write_text(conflist)
    case = next(c for c in CONTAINERD_CASES if c.vars["containerd_major"] == major)
    config = ENV.get_template(case.template).render(**{**case.vars, "containerd_cni_conf_dir": str(net_d)})
    text = _boot_containerd(binary, version, config, tmp_path)
    assert "failed to load cni" not in text, text[-3000:]
    broken = tmp_path / "broken"
    broken.mkdir()
    (net_d / Path(name).name).write_text(conflist.replace('"plugins"', '"plugin"'))
    assert "failed to load cni" in _boot_containerd(binary, version, config, broken), "the check can fail"


@contextlib.contextmanager
def containerd_daemon(binary: str, version: str, config_text: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running containerd with a private root, state and socket under tmp_path; yields (socket, log)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.toml"
    config.write_text(config_text + _DAEMON_ISOLATION.format(opt=tmp_path / "opt"))
    log_path, socket_path = tmp_path / "containerd.log", str(tmp_path / "c.sock")
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [
                binary,
                "--config",
                str(config),
                "--root",
                str(tmp_path / "root"),
                "--state",
                str(tmp_path / "state"),
                "--address",
                socket_path,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "successfully booted" not in log_path.read_text(errors="replace"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd {version} did not boot:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield socket_path, log_path
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _boot_containerd(binary: str, version: str, config_text: str, tmp_path: Path) -> str:
    """Boot containerd, stop it, return its log."""
    with containerd_daemon(binary, version, config_text, tmp_path) as (_, log_path):
        pass
    return log_path.read_text(errors="replace")


class _RecordingRegistry(http.server.ThreadingHTTPServer):
    """A loopback stand-in for a registry mirror: records each request and answers 404."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                registry.requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.end_headers()

            do_GET = do_HEAD

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _ctr_next_to(binary: str) -> str | None:
    beside = Path(binary).with_name("ctr")
    if beside.exists():
        return str(beside)
    return shutil.which("ctr") if binary == shutil.which("containerd") else None


@pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root")
@pytest.mark.parametrize("major, minor", [(1, 6), (2, 1)], ids=["containerd-1.6", "containerd-2.1"])
def test_containerd_pulls_through_the_mirror(major: int, minor: int, tmp_path: Path) -> None:
    """hosts.toml as containerd reads it: a pull asks the mirror first, then falls back to the server.

    Everything stays on loopback: the mirror is a recording stand-in, the registry a port nobody listens on.
    containerd 1.x: through the CRI (kubelet's path, so `registry.config_path` is wired) when the lab
    bundle's crictl is present, and with `ctr --hosts-dir`; 2.x: with `ctr --hosts-dir` (the CRI v1
    API is beyond the bundle's crictl)."""
    binary, version, _ = containerd_for(major, minor)
    ctr = _ctr_next_to(binary)
    mirror = _RecordingRegistry()
    try:
        registry = f"127.0.0.1:{_free_port()}"
        certs_d = tmp_path / "certs.d"
        hosts_case = next(c for c in CASES if c.template == "containerd/hosts.toml.j2")
        (certs_d / registry).mkdir(parents=True)
        (certs_d / registry / "hosts.toml").write_text(
            ENV.get_template(hosts_case.template).render(
                **{**hosts_case.vars, "item": {"registry": registry, "mirrors": [mirror.url]}}
            )
        )
        case = next(
            c for c in CONTAINERD_CASES if (c.vars["containerd_major"], c.vars["containerd_minor"]) >= (major, minor)
        )
        config = ENV.get_template(case.template).render(
            **{**case.vars, "containerd_registry_config_path": str(certs_d)}
        )
        image = f"{registry}/kprov/probe:1"
        expected = f"HEAD /v2/kprov/probe/manifests/1?ns={registry.replace(':', '%3A')}"
        with containerd_daemon(binary, version, config, tmp_path / "daemon") as (socket_path, _):
            crictl = LAB_BUNDLE_BIN / "crictl"
            if major == 1 and os.access(crictl, os.X_OK):
                out = run([str(crictl), "-r", f"unix://{socket_path}", "pull", image])
                assert out.returncode != 0 and "connection refused" in out.stderr, out.stderr
                assert mirror.requests[:1] == [expected], "the CRI asks the mirror first"
                mirror.requests.clear()
            if ctr is None:
                pytest.skip(f"no ctr beside {binary}")
            out = run([ctr, "--address", socket_path, "images", "pull", "--hosts-dir", str(certs_d), image])
            assert out.returncode != 0
            assert mirror.requests[:1] == [expected], f"ctr did not ask the mirror: {out.stderr}"
    finally:
        mirror.shutdown()
        mirror.server_close()


# --- kubeadm: the lab bundle's kubeadm parses the whole config of its own minor version ------------


@functools.cache
def kubeadm() -> tuple[str, tuple[int, int, int]] | None:
    for binary in [
        os.environ.get("KPROV_KUBEADM"),
        str(LAB_BUNDLE_BIN / "kubeadm"),
        *sorted(glob.glob("/var/cache/kprov/*/bin/kubeadm")),
        shutil.which("kubeadm"),
    ]:
        if binary and os.access(binary, os.X_OK):
            v = _version([binary, "version", "-o", "short"])
            if v:
                return binary, v
    return None


def kubeadm_for(case: Case) -> str:
    found = kubeadm()
    if found is None:
        pytest.skip("no kubeadm binary (the lab bundle builds 1.20.2 into /var/cache/kprov/lab-bundle/bin)")
    binary, version = found
    want = tuple(int(x) for x in case.k8s.split(".")[:2])
    if version[:2] != want:
        pytest.skip(f"needs kubeadm {want[0]}.{want[1]}; the only kubeadm here is {'.'.join(map(str, version))}")
    return binary


def _strict(out: subprocess.CompletedProcess[str]) -> None:
    problems = [line for line in out.stderr.splitlines() if "strict.go" in line or "unknown field" in line]
    assert not problems, "kubeadm found unknown fields:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "case",
    cases_for("control_plane/kubeadm-config.yaml.j2"),
    ids=ids(cases_for("control_plane/kubeadm-config.yaml.j2")),
)
def test_kubeadm_parses_init_config(case: Case, tmp_path: Path) -> None:
    binary = kubeadm_for(case)
    config = tmp_path / "kubeadm-config.yaml"
    config.write_text(render(case))
    out = run([binary, "config", "images", "list", "--config", str(config)])
    assert out.returncode == 0, out.stderr
    _strict(out)
    repo = case.vars["kubeadm_image_repository"] or "k8s.gcr.io"
    assert out.stdout.splitlines()[0] == f"{repo}/kube-apiserver:v{case.k8s}", "kubeadm used our config"


@pytest.mark.parametrize(
    "case", cases_for("join/kubeadm-join.yaml.j2"), ids=ids(cases_for("join/kubeadm-join.yaml.j2"))
)
def test_kubeadm_parses_join_config(case: Case, tmp_path: Path) -> None:
    binary = kubeadm_for(case)
    config, migrated = tmp_path / "kubeadm-join.yaml", tmp_path / "migrated.yaml"
    config.write_text(render(case))
    out = run([binary, "config", "migrate", "--old-config", str(config), "--new-config", str(migrated)])
    assert out.returncode == 0, out.stderr
    _strict(out)
    (join,) = docs(migrated.read_text())
    assert join["nodeRegistration"]["name"] == case.vars["host"]["name"]
    assert ("controlPlane" in join) is case.vars["join_control_plane"]


def test_kubeadm_check_catches_unknown_fields(tmp_path: Path) -> None:
    (case,) = [c for c in cases_for("control_plane/kubeadm-config.yaml.j2") if c.name == "kubeadm-1.20-lab"]
    binary = kubeadm_for(case)
    config = tmp_path / "bad.yaml"
    config.write_text(render(case).replace("  bindPort: 6443\n", "  bindPort: 6443\n  bogusField: 1\n"))
    out = run([binary, "config", "images", "list", "--config", str(config)])
    with pytest.raises(AssertionError):
        _strict(out)


# --- manifests: kubectl decodes every object offline; a throwaway API server validates them --------

MANIFEST_CASES = [c for c in CASES if c.template.startswith(("cni/", "smoke/")) and c.output_name.endswith(".yaml")]
KUBECTL = shutil.which("kubectl")


def _names(text: str) -> list[str]:
    return [f"{d['kind'].lower()}/{d['metadata']['name']}" for d in docs(text)]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
@pytest.mark.parametrize("case", MANIFEST_CASES, ids=ids(MANIFEST_CASES))
def test_kubectl_decodes_manifest_offline(case: Case, tmp_path: Path) -> None:
    manifest = tmp_path / case.output_name
    manifest.write_text(render(case))
    out = run(
        [KUBECTL, "label", "--local", "-f", str(manifest), "kprov.io/checked=true", "-o", "name"],
        env={**os.environ, "KUBECONFIG": "/dev/null"},
    )
    assert out.returncode == 0, out.stderr
    # "clusterrole.rbac.authorization.k8s.io/flannel" -> "clusterrole/flannel"
    got = [f"{resource.split('.', 1)[0]}/{name}" for resource, name in (n.split("/", 1) for n in out.stdout.split())]
    assert got == _names(manifest.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _etcd() -> str | None:
    for binary in [os.environ.get("KPROV_ETCD"), str(TOOLS_DIR / "etcd" / "etcd"), shutil.which("etcd")]:
        if binary and os.access(binary, os.X_OK):
            return binary
    return None


def _answers(kubectl: list[str]) -> bool:
    """/readyz answered ok (a probe that hangs on a busy machine is a "not yet", not an error)."""
    try:
        return run([*kubectl, "get", "--raw", "/readyz"], timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A loopback-only etcd + kube-apiserver (the lab bundle's 1.20.2); yields a kubectl argv for it."""
    etcd, kube_apiserver, openssl = _etcd(), LAB_BUNDLE_BIN / "kube-apiserver", shutil.which("openssl")
    if KUBECTL is None or etcd is None or not os.access(kube_apiserver, os.X_OK) or openssl is None:
        pytest.skip(f"needs kubectl, etcd ({FETCH_HINT}), openssl and {kube_apiserver} (lab bundle)")
    work = tmp_path_factory.mktemp("apiserver")
    client, peer, secure = _free_port(), _free_port(), _free_port()
    token = os.urandom(16).hex()
    (work / "tokens.csv").write_text(f"{token},kprov-test,kprov-test,system:masters\n")
    subprocess.run([openssl, "genrsa", "-out", str(work / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(
        [openssl, "rsa", "-in", str(work / "sa.key"), "-pubout", "-out", str(work / "sa.pub")],
        check=True,
        capture_output=True,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    etcd,
                    "--data-dir",
                    str(work / "etcd"),
                    "--name",
                    "kprov-test",
                    "--listen-client-urls",
                    f"http://127.0.0.1:{client}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{client}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{peer}",
                    "--initial-cluster",
                    f"kprov-test=http://127.0.0.1:{peer}",
                ],
                stdout=open(work / "etcd.log", "wb"),  # noqa: SIM115 (the child\'s log, open for its lifetime)
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    str(kube_apiserver),
                    "--etcd-servers",
                    f"http://127.0.0.1:{client}",
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                    "--secure-port",
                    str(secure),
                    "--cert-dir",
                    str(work / "certs"),
                    "--token-auth-file",
                    str(work / "tokens.csv"),
                    "--authorization-mode",
                    "RBAC",
                    "--service-account-issuer",
                    "https://kubernetes.default.svc",
                    "--service-account-key-file",
                    str(work / "sa.pub"),
                    "--service-account-signing-key-file",
                    str(work / "sa.key"),
                    "--service-cluster-ip-range",
                    "10.96.0.0/12",
                    "--allow-privileged=true",
                ],
                stdout=open(work / "apiserver.log", "wb"),  # noqa: SIM115 (the child\'s log, open for its lifetime)
                stderr=subprocess.STDOUT,
            )
        )
        kubectl = [
            KUBECTL,
            "--kubeconfig",
            "/dev/null",
            "--server",
            f"https://127.0.0.1:{secure}",
            "--token",
            token,
            "--insecure-skip-tls-verify",
        ]
        deadline = time.monotonic() + 90
        while not _answers(kubectl):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                log = (work / "apiserver.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"the test API server did not become ready:\n{log}")
            time.sleep(0.5)
        yield kubectl
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


SERVER_CASES = [c for c in MANIFEST_CASES if "operator.tigera.io" not in render(c)]


@pytest.mark.parametrize("case", SERVER_CASES, ids=ids(SERVER_CASES))
def test_api_server_accepts_manifest(case: Case, apiserver: list[str], tmp_path: Path) -> None:
    """Client-side schema validation (--validate=strict, the server's OpenAPI) + a server-side dry run."""
    text = render(case)
    namespaces = [d for d in docs(text) if d["kind"] == "Namespace"]
    if namespaces:  # a dry run cannot put objects into a namespace that only exists in the same dry run
        ns_file = tmp_path / "namespaces.yaml"
        ns_file.write_text(yaml.safe_dump_all(namespaces))
        out = run([*apiserver, "apply", "-f", str(ns_file)])
        assert out.returncode == 0, out.stderr
    manifest = tmp_path / case.output_name
    manifest.write_text(text)
    out = run([*apiserver, "apply", "--dry-run=server", "--validate=strict", "-f", str(manifest), "-o", "name"])
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == len(docs(text))


def test_api_server_check_catches_schema_errors(apiserver: list[str], tmp_path: Path) -> None:
    (case,) = [c for c in MANIFEST_CASES if c.name == "smoke-agnhost"]
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(render(case).replace("imagePullPolicy:", "imagePulPolicy:"))
    out = run([*apiserver, "apply", "--dry-run=server", "--validate=strict", "-f", str(manifest)])
    assert out.returncode != 0 and "imagePulPolicy" in out.stderr


# --- systemd units and shell scripts ------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(
    "unit, dropins",
    [
        ("kubernetes/kubelet.service.j2", ["kubernetes/10-kubeadm.conf.j2"]),
        ("cni/kprov-pod-routes.service.j2", []),
    ],
)
def test_systemd_verifies_units(unit: str, dropins: list[str], tmp_path: Path) -> None:
    """`systemd-analyze verify` with the drop-ins in place; the binaries are stood in by an existing one."""
    stand_in = shutil.which("true")
    variables = host_vars(kubelet_bin=stand_in)
    name = Path(unit).name.removesuffix(".j2")
    text = ENV.get_template(unit).render(**variables).replace("/usr/local/sbin/kprov-pod-routes", stand_in)
    (tmp_path / name).write_text(text)
    if dropins:
        (tmp_path / f"{name}.d").mkdir()
        for dropin in dropins:
            (tmp_path / f"{name}.d" / Path(dropin).name.removesuffix(".j2")).write_text(
                ENV.get_template(dropin).render(**variables)
            )
    out = run([SYSTEMD_ANALYZE, "verify", "--man=no", str(tmp_path / name)], cwd=tmp_path)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.output_name.endswith(".sh")],
    ids=ids([c for c in CASES if c.output_name.endswith(".sh")]),
)
def test_shell_scripts_parse(case: Case, tmp_path: Path) -> None:
    script = tmp_path / case.output_name
    script.write_text(render(case))
    shell = shutil.which("dash") or "/bin/sh"
    out = run([shell, "-n", str(script)])
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"), reason="needs root, unshare and ip"
)
def test_pod_routes_script_in_a_private_netns(tmp_path: Path) -> None:
    """The routes script against real `ip`, in a throwaway network namespace (gone when the shell exits):
    apply adds every route, --check passes, a route via the wrong node is noticed and repaired, --remove
    deletes them."""
    (case,) = [c for c in CASES if c.name == "pod-routes-4-peers" and c.output_name.endswith(".sh")]
    script = tmp_path / "kprov-pod-routes"
    script.write_text(render(case))
    first = case.vars["cni_pod_routes"][0]
    node_ip = case.vars["host"]["node_ip"]
    steps = f"""
        set -u
        ip link set lo up
        ip link add v0 type veth peer name v1 && ip addr add {node_ip}/24 dev v0 && ip link set v1 up && ip link set v0 up
        sh {script}; echo "apply=$?"
        sh {script} --check; echo "check=$?"
        ip route replace {first["pod_cidr"]} via {node_ip.rsplit(".", 1)[0]}.99
        sh {script} --check; echo "check-wrong=$?"
        sh {script} >/dev/null; sh {script} --check; echo "repaired=$?"
        echo "routes=$(ip route | grep -c ' via ')"
        sh {script} --remove >/dev/null; echo "remove=$?"
        sh {script} --check; echo "check-removed=$?"
        echo "left=$(ip route | grep -c ' via ')"
    """
    out = run(["unshare", "--net", "sh", "-c", steps])
    results = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    assert results == {
        "apply": "0",
        "check": "0",
        "check-wrong": "1",
        "repaired": "0",
        "routes": str(len(case.vars["cni_pod_routes"])),
        "remove": "0",
        "check-removed": "1",
        "left": "0",
    }, out.stdout + out.stderr
