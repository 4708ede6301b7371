"""Checks on the real lab bundle made by scripts/build-lab-bundle (skipped when it has not been built here)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from provisioner.bundle import extract
from tests.bundle import dnsquery

LAB_BUNDLE = Path(os.environ.get("KPROV_LAB_BUNDLE", "/var/cache/kprov/bundles/kubernetes-1.20.2-lab-amd64.tar"))

pytestmark = pytest.mark.skipif(not LAB_BUNDLE.is_file(), reason=f"no lab bundle at {LAB_BUNDLE}")


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> tuple:
    dest = tmp_path_factory.mktemp("lab") / "bundle"
    manifest = extract(LAB_BUNDLE, dest)  # verifies every file while unpacking
    return manifest, None, dest


def test_lab_bundle_is_labelled_and_complete(unpacked) -> None:
    m, _, dest = unpacked
    assert m.label.startswith("LAB/CI AID")
    assert m.kubernetes_version == "1.20.2" and m.arch == "amd64"
    paths = {f.path for f in m.files}
    assert {"bin/kubeadm", "bin/kubelet", "bin/kubectl", "bin/crictl"} <= paths
    assert {"cni/bin/bridge", "cni/bin/host-local", "cni/bin/loopback", "cni/bin/portmap"} <= paths
    assert m.images["smoke"] == "docker.io/kprov/hello:1.0"
    assert {s.what for s in m.skipped} >= {"crictl"}  # the crictl there is a stand-in, and says so
    if m.images.get("coredns") is None:
        assert "coredns" in {s.what for s in m.skipped}


def test_lab_kubeadm_matches_images(unpacked) -> None:
    m, _, dest = unpacked
    kubeadm = str(dest / "bin" / "kubeadm")
    assert (
        subprocess.run([kubeadm, "version", "-o", "short"], capture_output=True, text=True, check=True).stdout.strip()
        == "v1.20.2"
    )
    wanted = subprocess.run(
        [kubeadm, "config", "images", "list", "--kubernetes-version", "v1.20.2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    have = {i.ref for i in m.image_files}
    missing = [ref for ref in wanted if ref not in have]
    # only images recorded as skipped may be missing
    assert all(ref.split("/")[-1].split(":")[0] in {s.what for s in m.skipped} for ref in missing), missing


# --- the coredns stand-in, run for real against a throwaway etcd + kube-apiserver taken from the bundle ----------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _from_image(image_tar: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a single-layer docker-archive (as the lab's images are)."""
    with tarfile.open(image_tar) as outer:
        layer = outer.extractfile("layer.tar")
        with tarfile.open(fileobj=io.BytesIO(layer.read())) as inner:
            data = inner.extractfile(member).read()
    dest.write_bytes(data)
    dest.chmod(0o755)
    return dest


class _FakeUpstream(threading.Thread):
    """A DNS 'upstream' on 127.0.0.1 answering every A query with 192.0.2.53 (to test forwarding, offline)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                msg, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            end = msg.index(b"\x00", 12) + 5
            reply = (
                msg[:2]
                + b"\x81\x80"
                + msg[4:6]
                + b"\x00\x01\x00\x00\x00\x00"
                + msg[12:end]
                + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04"
                + socket.inet_aton("192.0.2.53")
            )
            self.sock.sendto(reply, addr)


@pytest.fixture(scope="module")
def dns_standin(unpacked, tmp_path_factory):
    m, _, dest = unpacked
    if m.images.get("coredns") is None:
        pytest.skip("bundle has no coredns image")
    work = tmp_path_factory.mktemp("dns")
    etcd = _from_image(dest / "images/etcd.tar", "usr/local/bin/etcd", work / "etcd")
    apiserver = _from_image(dest / "images/kube-apiserver.tar", "usr/local/bin/kube-apiserver", work / "apiserver")
    coredns = _from_image(dest / "images/coredns.tar", "coredns", work / "coredns")
    kubectl = dest / "bin/kubectl"
    subprocess.run(["openssl", "genrsa", "-out", str(work / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "rsa", "-in", str(work / "sa.key"), "-pubout", "-out", str(work / "sa.pub")],
        check=True,
        capture_output=True,
    )
    (work / "tokens.csv").write_text("t0ken,admin,1,system:masters\n")
    ec, ep, api = _free_port(), _free_port(), _free_port()
    h, r, metrics, dnsp = _free_port(), _free_port(), _free_port(), _free_port()
    upstream = _FakeUpstream()
    upstream.start()
    procs = []

    def spawn(argv, name):
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115 (the child's log, open for its lifetime)
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    spawn(
        [
            str(etcd),
            "--data-dir",
            str(work / "etcd-data"),
            "--listen-client-urls",
            f"http://127.0.0.1:{ec}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{ec}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{ep}",
        ],
        "etcd",
    )
    spawn(
        [
            str(apiserver),
            "--etcd-servers",
            f"http://127.0.0.1:{ec}",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            str(api),
            "--cert-dir",
            str(work / "certs"),
            "--service-cluster-ip-range",
            "10.96.0.0/12",
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-signing-key-file",
            str(work / "sa.key"),
            "--service-account-key-file",
            str(work / "sa.pub"),
            "--authorization-mode",
            "AlwaysAllow",
            "--token-auth-file",
            str(work / "tokens.csv"),
            "--advertise-address",
            "127.0.0.1",
        ],
        "apiserver",
    )
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: t, cluster: {{server: "https://127.0.0.1:{api}", insecure-skip-tls-verify: true}}}}]
contexts: [{{name: t, context: {{cluster: t, user: u}}}}]
users: [{{name: u, user: {{token: t0ken}}}}]
current-context: t
""")
    kc = [str(kubectl), "--kubeconfig", str(kubeconfig)]
    try:
        for _ in range(120):
            if subprocess.run([*kc, "get", "--raw", "/readyz"], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail("kube-apiserver did not become ready: " + (work / "apiserver.log").read_text()[-2000:])
        subprocess.run([*kc, "apply", "-f", "-"], input=_OBJECTS, text=True, check=True, capture_output=True)
        # kubeadm 1.20's Corefile, with loopback ports instead of the pod's
        (work / "Corefile").write_text(
            _COREFILE.format(health=h, ready=r, metrics=metrics, upstream=f"127.0.0.1:{upstream.port}")
        )
        spawn(
            [str(coredns), "-conf", str(work / "Corefile"), "-kubeconfig", str(kubeconfig), "-dns.port", str(dnsp)],
            "coredns",
        )
        for _ in range(60):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{r}/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.25)
        yield {"port": dnsp, "health": h, "metrics": metrics, "kubectl": kc}
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        upstream.sock.close()


_OBJECTS = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.50, ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {clusterIP: None, ports: [{name: pg, port: 5432, protocol: TCP}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: db, namespace: default}
subsets:
- addresses: [{ip: 10.244.1.7, hostname: db-0}, {ip: 10.244.2.8}]
  ports: [{name: pg, port: 5432, protocol: TCP}]
"""

_COREFILE = """.:53 {{
    errors
    health :{health} {{
       lameduck 5s
    }}
    ready :{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :{metrics}
    forward . {upstream} {{
       max_concurrent 1000
    }}
    cache 30
    loop
    reload
    loadbalance
}}
"""

DNS_CASES = [
    ("web.default.svc.cluster.local", "A", False, 0, [("A", "10.96.0.50")]),
    ("web.default.svc.cluster.local", "A", True, 0, [("A", "10.96.0.50")]),
    ("kubernetes.default.svc.cluster.local", "A", False, 0, [("A", "10.96.0.1")]),
    ("db.default.svc.cluster.local", "A", False, 0, [("A", "10.244.1.7"), ("A", "10.244.2.8")]),
    ("db-0.db.default.svc.cluster.local", "A", False, 0, [("A", "10.244.1.7")]),
    ("_pg._tcp.db.default.svc.cluster.local", "SRV", False, 0, [("SRV", "0 100 5432 db.default.svc.cluster.local.")]),
    ("10-244-3-4.default.pod.cluster.local", "A", False, 0, [("A", "10.244.3.4")]),
    ("50.0.96.10.in-addr.arpa", "PTR", False, 0, [("PTR", "web.default.svc.cluster.local.")]),
    ("nope.default.svc.cluster.local", "A", False, 3, []),
    ("outside.example", "A", False, 0, [("A", "192.0.2.53")]),  # forwarded to the fake upstream
]


@pytest.mark.parametrize("name, qtype, tcp, rcode, answers", DNS_CASES, ids=[f"{c[0]}/{c[1]}" for c in DNS_CASES])
def test_coredns_standin_answers(dns_standin, name, qtype, tcp, rcode, answers) -> None:
    got = dnsquery.query("127.0.0.1", dns_standin["port"], name, qtype, tcp=tcp)
    assert got == (rcode, answers)


def test_coredns_standin_follows_changes_and_serves_probes(dns_standin) -> None:
    subprocess.run(
        [*dns_standin["kubectl"], "create", "service", "clusterip", "late", "--tcp=80:80", "--clusterip=10.96.0.77"],
        check=True,
        capture_output=True,
    )
    for _ in range(40):
        if dnsquery.query("127.0.0.1", dns_standin["port"], "late.default.svc.cluster.local")[1]:
            break
        time.sleep(0.25)
    assert dnsquery.query("127.0.0.1", dns_standin["port"], "late.default.svc.cluster.local") == (
        0,
        [("A", "10.96.0.77")],
    )
    assert urllib.request.urlopen(f"http://127.0.0.1:{dns_standin['health']}/health").read() == b"OK\n"
    assert (
        b"coredns_dns_requests_total"
        in urllib.request.urlopen(f"http://127.0.0.1:{dns_standin['metrics']}/metrics").read()
    )


# --- the crictl stand-in against a private containerd (CRI enabled) -----------------------------------------------

_CONTAINERD_CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"
  restrict_oom_score_adj = true
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
"""


@pytest.fixture(scope="module")
def containerd(unpacked):
    if os.geteuid() != 0 or not (shutil.which("containerd") and shutil.which("ctr")):
        pytest.skip("needs root, containerd and ctr")
    d = Path(tempfile.mkdtemp(prefix="kb-ctrd-", dir="/tmp"))  # short: unix socket paths are limited
    (d / "config.toml").write_text(_CONTAINERD_CONFIG.format(d=d))
    with open(d / "log", "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(d / "config.toml")], stdout=log, stderr=log)
    try:
        for _ in range(100):
            if (d / "c.sock").exists():
                break
            time.sleep(0.1)
        _, _, dest = unpacked
        subprocess.run(
            ["ctr", "-a", str(d / "c.sock"), "-n", "k8s.io", "images", "import", str(dest / "images/pause.tar")],
            check=True,
            capture_output=True,
        )
        yield d / "c.sock"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(d, ignore_errors=True)


CRICTL_CASES = [
    # what kubeadm 1.20 runs (with its unix:// endpoint), and the exit code it relies on
    (["info"], 0, '"RuntimeReady"'),
    (["version"], 0, "RuntimeName:  containerd"),
    (["inspecti", "k8s.gcr.io/pause:3.2"], 0, "k8s.gcr.io/pause:3.2"),
    (["inspecti", "k8s.gcr.io/etcd:3.4.13-0"], 1, ""),  # not imported here
    (["pods", "-q"], 0, ""),
    (["images"], 0, "k8s.gcr.io/pause:3.2"),
    (["stopp", "0123456789ab"], 1, ""),  # unknown sandbox: the runtime's NotFound
    (["bogus"], 1, ""),
]


@pytest.mark.parametrize("args, rc, needle", CRICTL_CASES, ids=[" ".join(c[0]) for c in CRICTL_CASES])
def test_crictl_standin(unpacked, containerd, args, rc, needle) -> None:
    _, _, dest = unpacked
    res = subprocess.run(
        [str(dest / "bin/crictl"), "-r", f"unix://{containerd}", *args], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == rc, res.stderr
    assert needle in res.stdout
