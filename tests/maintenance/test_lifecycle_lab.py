"""Day two on the lab: ONE cluster (1 control plane + 1 worker, Kubernetes 1.20.2 from the lab bundle) shared by
ordered steps:

version guard refuses a silent version change (up and plan, exit 2, nothing touched) -> a SAN added in the
inventory: `upgrade --reconfigure` shows and applies it (a concurrent `up` is refused meanwhile, exit 2), a TLS
connection verifying the name succeeds -> certs check lists every certificate -> certs renew moves every leaf
certificate's expiry and the cluster stays healthy -> etcd snapshot -> delete an app's namespace -> restore
refused without --yes -> etcd restore -> the namespace and its Deployment are back and Ready -> `kprov upgrade`
rehearsed: 1.20.2 -> 1.20.3-lab.0 (the same source relinked with a pre-release version stamp:
`KPROV_LAB_BUNDLE_VERSION=1.20.3-lab.0 scripts/build-lab-bundle`; skipped with that reason when the rehearsal
bundle is missing): an app with 2 replicas and a PodDisruptionBudget (minAvailable 1; it tolerates the control
plane's taint so a drain always has somewhere to go) -> up and plan refuse the bumped inventory -> upgrade (plan
only) -> upgrade --yes, killed (SIGKILL) during the worker's step -> rerun: it finishes, every kubelet and the API
server at 1.20.3-lab.0, no node cordoned, the app never below 1 ready replica (polled throughout) -> a second
upgrade has nothing to do. The upgrade is last: it moves the cluster to a version no other step expects.

Prints the figures: snapshot size, snapshot and restore wall time, renew time, reconfigure time; the upgrade's
wall time per node, total, and the app's minimum ready replicas.
etcdctl: the lab's etcd image (Debian's etcd-server) has no etcdctl, so the test installs Debian's etcd-client
on the control plane through the lab's apt proxy, as an operator would (docs/maintenance.md).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.e2e import labkit
from tests.e2e.labkit import KPROV, json_lines, kprov, skip_reason, wait_for

LAB = "kpmt" + os.environ.get("KPROV_TEST_TAG", "")
REHEARSAL = Path(
    os.environ.get("KPROV_REHEARSAL_BUNDLE", "/var/cache/kprov/bundles/kubernetes-1.20.3-lab.0-lab-amd64.tar")
)
TARGET = "1.20.3-lab.0"
CP, WORKER = f"{LAB}-1", f"{LAB}-2"
APP_NS = "kprov-day2"
LEAVES = {
    "admin.conf",
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "controller-manager.conf",
    "etcd-healthcheck-client",
    "etcd-peer",
    "etcd-server",
    "front-proxy-client",
    "scheduler.conf",
}

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

APP = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {APP_NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello, namespace: {APP_NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: hello}}}}
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      containers:
        - name: hello
          image: docker.io/kprov/hello:1.0
          imagePullPolicy: Never
          command: [/bin/sh, -c, 'mkdir -p /www && echo day2 > /www/index.html && exec httpd -f -p 8080 -h /www']
"""


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return labkit.kubectl(LAB, *args, check=check, stdin=stdin)


def node_sh(node: str, script: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return labkit.node_sh(LAB, node, script, timeout=timeout)


def wait_until(what: str, probe, timeout: float = 300, every: float = 3) -> None:
    wait_for(what, probe, timeout=timeout, interval=every)


def nodes_ready() -> bool:
    res = kubectl("get", "nodes", "-o", "json", check=False)
    if res.returncode != 0:
        return False
    items = json.loads(res.stdout)["items"]
    return len(items) == 2 and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in items
    )


def ready_replicas(namespace: str) -> int | None:
    """Ready replicas of the `hello` Deployment in `namespace`, None when it cannot be read."""
    res = kubectl("get", "deployment", "hello", "-n", namespace, "-o", "jsonpath={.status.readyReplicas}", check=False)
    return int(res.stdout or 0) if res.returncode == 0 else None


def app_ready() -> bool:
    return (ready_replicas(APP_NS) or 0) >= 1


def write_with(cluster: dict, name: str, **changes: object) -> Path:
    """The day-two inventory with `changes` to its cluster section, written beside it as `name`."""
    path = cluster["dir"] / name
    doc = dict(cluster["doc"], cluster={**cluster["doc"]["cluster"], **changes})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def certs(inv: Path) -> dict[str, datetime]:
    res = kprov("certs", "check", "-i", str(inv), "--log-format", "json")
    return {
        r["certificate"]: datetime.fromisoformat(r["expires"]) for r in json_lines(res.stdout) if "certificate" in r
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("day2")
    # the nodes' disk is this machine's shared disk, which other work fills to near kubelet's thresholds; with no
    # registry an image kubelet's garbage collector removes is gone for good (measured: the next version's images
    # vanished before kubeadm used them), and a DiskPressure eviction took the app's pods off a node mid-upgrade
    inv = labkit.write_inventory(d / "day2.yaml", LAB, 2, cluster_vars=labkit.SHARED_DISK_KUBELET)
    doc = yaml.safe_load(inv.read_text())
    kprov("lab", "down", "--name", LAB, check=False)
    figures: dict[str, object] = {}
    try:
        t0 = time.monotonic()
        kprov("up", "-i", str(inv), "--no-smoke")
        figures["up_s"] = round(time.monotonic() - t0, 1)
        wait_until("both nodes Ready", nodes_ready)
        kubectl("apply", "-f", "-", stdin=APP)
        wait_until("the app Ready", app_ready)
        yield {"inv": inv, "doc": doc, "dir": d, "figures": figures}
    finally:
        labkit.figure(f"[day two] figures: {json.dumps(figures)}")
        kprov("lab", "down", "--name", LAB, check=False)
        (Path.home() / ".kube" / f"kprov-{LAB}.conf").unlink(missing_ok=True)


def test_version_guard_refuses_a_silent_version_change(cluster) -> None:
    inv = write_with(cluster, "bumped.yaml", kubernetes_version="1.20.3")
    before = node_sh(CP, "stat -c %Y /usr/bin/kubelet /usr/bin/kubeadm").stdout
    for cmd in ("up", "plan", "apply"):
        args = [cmd, "-i", str(inv)] + (["kubernetes"] if cmd == "apply" else [])
        res = kprov(*args, check=False)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (cmd, res.stdout[-2000:], res.stderr)
        assert len(lines) == 2 and "runs Kubernetes 1.20.2" in lines[0] and "wants 1.20.3:" in lines[0], res.stderr
        assert "kprov upgrade" in lines[1], res.stderr
    assert node_sh(CP, "stat -c %Y /usr/bin/kubelet /usr/bin/kubeadm").stdout == before
    # the unchanged inventory passes the guard (what the roles then plan is the e2e suite's business)
    again = kprov("plan", "-i", str(cluster["inv"]), "--log-format", "json", check=False)
    assert again.returncode != 2 and "never change the Kubernetes version" not in again.stderr, again.stderr
    assert json_lines(again.stdout), again.stdout[-2000:]


@pytest.mark.parametrize(
    "target,needle,hint",
    [
        ("1.22.0", "skips a minor version", "1.21.x first"),
        ("1.19.7", "never downgrades", "keep kubernetes_version at 1.20.2"),
        ("1.20.1", "never downgrades", "etcd snapshot"),
        ("1.21.0", "is a bundle of 1.20.2, not of the target 1.21.0", "bundle of 1.21.0"),
    ],
)
def test_upgrade_refuses_bad_steps_before_any_change(cluster, target: str, needle: str, hint: str) -> None:
    res = kprov("upgrade", "-i", str(cluster["inv"]), "--to", target, "--yes", check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 2, res.stderr
    assert needle in lines[0] and hint in lines[1], res.stderr
    assert nodes_ready() and "SchedulingDisabled" not in kubectl("get", "nodes").stdout


def test_upgrade_at_the_running_version_plans_nothing_and_previews_the_drain(cluster) -> None:
    res = kprov("upgrade", "-i", str(cluster["inv"]), "--log-format", "json")
    plan = {r["host"]: r for r in json_lines(res.stdout) if "kind" in r}
    assert [plan[CP]["kind"], plan[WORKER]["kind"]] == ["first-control-plane", "worker"]
    assert all(r["done"] for r in plan.values()) and "nothing to do" in res.stderr, res.stderr
    evicted = plan[CP]["evictions"] + plan[WORKER]["evictions"]
    assert any(e.startswith(f"{APP_NS}/hello-") for e in evicted), plan


SAN = f"api.{LAB}.example"  # a name only the certificate knows (no DNS): the TLS check connects by address
APISERVER_ARG = ("default-not-ready-toleration-seconds", "301")  # harmless: the default is 300
PROXY_SYNC = "14m0s"  # kube-proxy's configSyncPeriod, harmless: the default is 15m0s


def apiserver_argv() -> str:
    """The running kube-apiserver's command line on the control plane."""
    return node_sh(CP, "cat /proc/$(pgrep -o -x kube-apiserver)/cmdline | tr '\\0' ' '").stdout


def _api_tls(name: str | None) -> ssl.SSLSocket:
    """A TLS connection to the API server, verified against the cluster CA (and `name`, when given)."""
    kubeconfig = yaml.safe_load((Path.home() / ".kube" / f"kprov-{LAB}.conf").read_text())
    cl = kubeconfig["clusters"][0]["cluster"]
    ca = base64.b64decode(cl["certificate-authority-data"]).decode()
    host, port = cl["server"].removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cadata=ca)
    ctx.check_hostname = name is not None
    sock = socket.create_connection((host, int(port)), timeout=15)
    try:
        return ctx.wrap_socket(sock, server_hostname=name)
    except BaseException:
        sock.close()
        raise


def tls_verifies(name: str) -> bool:
    """A TLS connection to the API server that verifies `name` against the cluster CA succeeds."""
    try:
        with _api_tls(name):
            return True
    except ssl.SSLCertVerificationError:
        return False


def served_apiserver_expiry() -> datetime:
    """notAfter of the certificate the running API server presents (what a restart must change)."""
    from cryptography import x509

    with _api_tls(None) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der).not_valid_after_utc


#: the control-plane processes (their comm, as pgrep -x sees it: 15 characters at most)
CONTROL_PLANE_PROCESSES = ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler")


def control_plane_pids() -> dict[str, str]:
    script = "; ".join(f"echo {p} $(pgrep -o -x {p})" for p in CONTROL_PLANE_PROCESSES)
    return dict(line.split(" ", 1) for line in node_sh(CP, script).stdout.splitlines() if " " in line)


def control_plane_diagnostics() -> str:
    """What a failed assertion about the control plane shows: its containers and kubelet's last words."""
    res = node_sh(CP, "crictl ps -a; journalctl -u kubelet --no-pager -n 40 | cut -c1-300", timeout=60)
    return res.stdout + res.stderr


def test_reconfigure_adds_a_san_while_a_concurrent_up_is_refused(cluster, tmp_path) -> None:
    """Issue 14 step 4: a SAN, an API server extra arg and a kube-proxy setting changed in the inventory are drift
    that `plan` reports and `upgrade --reconfigure` shows and applies (new certificate, new manifest, kube-proxy's
    ConfigMap and pods); while it runs, an `up` from another control machine (its own ~/.kprov: only the hosts'
    locks stop it) is refused with exit 2; afterwards a TLS connection verifying the new name succeeds, the API
    server runs with the new flag and kube-proxy with the new setting."""
    doc = copy.deepcopy(cluster["doc"])
    doc["cluster"]["api_cert_sans"] = [SAN]
    doc["cluster"]["vars"]["kubeadm_apiserver_extra_args"] = {APISERVER_ARG[0]: APISERVER_ARG[1]}
    doc["cluster"]["vars"]["kube_proxy_extra_config"] = {
        **doc["cluster"]["vars"]["kube_proxy_extra_config"],
        "configSyncPeriod": PROXY_SYNC,
    }
    inv = cluster["dir"] / "san.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert not tls_verifies(SAN)
    # plan (like up, which never applies it) reports the drift and points at --reconfigure
    planned = kprov("plan", "-i", str(inv), check=False)
    assert planned.returncode != 2 and f"+{SAN}" in planned.stderr, planned.stderr[-3000:]
    assert "kprov upgrade --reconfigure" in planned.stderr, planned.stderr[-3000:]
    shown = kprov("upgrade", "-i", str(inv), "--reconfigure", "--log-format", "json")
    drift = [r for r in json_lines(shown.stdout) if "drift" in r]
    assert sorted({d["kind"] for d in drift}) == ["args", "kube-proxy", "sans"], shown.stdout
    assert any(SAN in str(d["inventory"]) for d in drift if d["kind"] == "sans"), shown.stdout
    assert "rerun with --yes" in shown.stderr and not tls_verifies(SAN)
    assert APISERVER_ARG[0] not in apiserver_argv()

    t0 = time.monotonic()
    run = subprocess.Popen(
        [*KPROV, "upgrade", "-i", str(inv), "--reconfigure", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            "the reconfiguration holding the control plane's lock",
            lambda: "reconfigure" in node_sh(CP, f"cat /run/kprov/{CP}.owner 2>/dev/null").stdout,
            timeout=120,
            every=1,
        )
        other = subprocess.run(
            [*KPROV, "up", "-i", str(inv), "--no-smoke"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "KPROV_HOME": str(tmp_path / "other-machine")},
        )
        assert other.returncode == 2, other.stdout[-3000:] + other.stderr
        assert "is locked by pid" in other.stderr and "kprov upgrade --reconfigure" in other.stderr, other.stderr
    finally:
        out, err = run.communicate(timeout=900)
    cluster["figures"]["reconfigure_san_s"] = round(time.monotonic() - t0, 1)
    assert run.returncode == 0, out[-3000:] + err[-3000:]
    assert "apiserver certificate" in out and "no drift left" in out, out[-3000:]
    assert "static pod manifests" in out and "kube-proxy ConfigMap" in out, out[-3000:]
    assert tls_verifies(SAN)
    wait_until(
        "the API server running with the new flag",
        lambda: f"--{APISERVER_ARG[0]}={APISERVER_ARG[1]}" in apiserver_argv(),
        timeout=120,
    )
    proxy_conf = kubectl("-n", "kube-system", "get", "configmap", "kube-proxy", "-o", "jsonpath={.data.config\\.conf}")
    assert f"configSyncPeriod: {PROXY_SYNC}" in proxy_conf.stdout, proxy_conf.stdout
    restarted = kubectl(
        "-n",
        "kube-system",
        "get",
        "daemonset",
        "kube-proxy",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    )
    assert restarted.stdout.strip(), "kube-proxy's pods were not restarted"
    again = kprov("upgrade", "-i", str(inv), "--reconfigure", "--yes")
    assert "no drift: nothing to do" in again.stdout, again.stdout[-3000:]
    wait_until("both nodes Ready after the reconfiguration", nodes_ready, timeout=180)
    assert app_ready()
    # the inventory with the SAN is the cluster's from now on
    cluster["inv"].write_text(inv.read_text())
    cluster["doc"] = doc


def test_certs_check_lists_every_certificate(cluster) -> None:
    res = kprov("certs", "check", "-i", str(cluster["inv"]), "--log-format", "json")
    rows = json_lines(res.stdout)
    names = {r["certificate"] for r in rows if "certificate" in r and not r["ca"]}
    cas = {r["certificate"] for r in rows if "certificate" in r and r["ca"]}
    assert names == LEAVES and cas == {"ca", "etcd-ca", "front-proxy-ca"}, rows
    assert all(r["host"] == CP and 360 <= r["days_left"] <= 366 for r in rows if "certificate" in r and not r["ca"])
    rotation = {r["host"]: r["kubelet_rotate_certificates"] for r in rows if "kubelet_rotate_certificates" in r}
    assert rotation == {CP: True, WORKER: True}, rows
    # the table, and exit 1 when a certificate expires within --warn-days
    warn = kprov("certs", "check", "-i", str(cluster["inv"]), "--warn-days", "400", check=False)
    assert warn.returncode == 1 and "apiserver" in warn.stdout and "kprov certs renew" in warn.stdout, warn.stdout


def test_certs_renew_moves_expiry_and_cluster_stays_healthy(cluster) -> None:
    inv = cluster["inv"]
    before = certs(inv)
    # kubeadm shows expiry to the minute: let the clock pass the minute the certificates were issued in
    issued = max(v for k, v in before.items() if k in LEAVES)
    wait_until(
        "a new minute after issuance",
        lambda: (
            datetime.now(UTC).replace(year=issued.year)
            >= issued.replace(second=0) + (datetime(2000, 1, 1, 0, 1) - datetime(2000, 1, 1))
        ),
        timeout=90,
        every=2,
    )
    kubeconfig = Path.home() / ".kube" / f"kprov-{LAB}.conf"
    old_kubeconfig = kubeconfig.read_bytes()
    pids = control_plane_pids()
    t0 = time.monotonic()
    kprov("certs", "renew", "-i", str(inv))
    cluster["figures"]["certs_renew_s"] = round(time.monotonic() - t0, 1)
    after = certs(inv)
    moved = {k for k in LEAVES if after[k] > before[k]}
    assert moved == LEAVES, {k: (before[k], after[k]) for k in LEAVES}
    assert all(after[k] == before[k] for k in ("ca", "etcd-ca", "front-proxy-ca"))
    # the admin kubeconfig was re-fetched (new client certificate), 0600, and works
    assert kubeconfig.read_bytes() != old_kubeconfig
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    # every control-plane process was restarted, and the API server presents the renewed certificate
    now = control_plane_pids()
    assert all(now[p] and now[p] != pids[p] for p in CONTROL_PLANE_PROCESSES), (pids, now)
    assert served_apiserver_expiry().replace(second=0) == after["apiserver"], (served_apiserver_expiry(), after)
    try:
        wait_until("both nodes Ready after the renewal", nodes_ready, timeout=180)
        wait_until("the day-two app ready after the renewal", app_ready, timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{control_plane_diagnostics()}") from None


def test_etcd_snapshot_then_restore_brings_a_deleted_namespace_back(cluster) -> None:
    inv, d = cluster["inv"], cluster["dir"] / "snapshots"
    # etcdctl on the control plane (not in the lab's etcd image): Debian's etcd-client via the lab's apt proxy
    res = node_sh(
        CP,
        "command -v etcdctl || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq etcd-client >/dev/null && command -v etcdctl)",
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr

    t0 = time.monotonic()
    snap = json_lines(kprov("etcd", "snapshot", "-i", str(inv), "--output", str(d), "--log-format", "json").stdout)[-1]
    cluster["figures"].update(snapshot_s=round(time.monotonic() - t0, 1), snapshot_bytes=snap["size"])
    path = Path(snap["path"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == snap["size"] > 0
    assert (d / (path.name + ".sha256")).read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    meta = json.loads((d / (path.stem + ".json")).read_text())
    assert meta["cluster"] == LAB and meta["kubernetes_version"] == "1.20.2" and meta["revision"] > 0
    assert meta["member"] == CP and meta["etcd_version"]
    # a second snapshot with --keep 1 prunes the first
    second = json_lines(
        kprov("etcd", "snapshot", "-i", str(inv), "--output", str(d), "--keep", "1", "--log-format", "json").stdout
    )[-1]
    assert second["pruned"] == [str(path)] and not path.exists()
    path = Path(second["path"])

    kubectl("delete", "namespace", APP_NS, "--wait=true", "--timeout=180s")
    assert kubectl("get", "namespace", APP_NS, check=False).returncode != 0

    refused = kprov("etcd", "restore", "-i", str(inv), "--from", str(path), check=False)
    assert refused.returncode == 2 and "everything written after it is lost" in refused.stderr, refused.stderr
    assert kubectl("get", "namespace", APP_NS, check=False).returncode != 0

    t0 = time.monotonic()
    kprov("etcd", "restore", "-i", str(inv), "--from", str(path), "--yes")
    cluster["figures"]["restore_s"] = round(time.monotonic() - t0, 1)
    wait_until("the namespace back", lambda: kubectl("get", "namespace", APP_NS, check=False).returncode == 0)
    wait_until("the app Ready again", app_ready, timeout=300)
    wait_until("both nodes Ready after the restore", nodes_ready, timeout=180)
    cluster["figures"]["restore_to_app_ready_s"] = round(time.monotonic() - t0, 1)


UPGRADE_NS = "kprov-upgrade"  # the namespace UPGRADE_APP makes
UPGRADE_APP = """
apiVersion: v1
kind: Namespace
metadata: {name: kprov-upgrade}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: kprov-upgrade}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      tolerations: [{key: node-role.kubernetes.io/master, operator: Exists, effect: NoSchedule}]
      containers:
        - name: hello
          image: docker.io/kprov/hello:1.0
          imagePullPolicy: Never
          command: [/bin/sh, -c, 'mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 8080 -h /www']
          readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata: {name: hello, namespace: kprov-upgrade}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: hello}}
"""


def test_upgrade_to_the_rehearsal_target(cluster) -> None:
    if not REHEARSAL.is_file():
        pytest.skip(
            f"needs the rehearsal bundle {REHEARSAL}: KPROV_LAB_BUNDLE_VERSION={TARGET} scripts/build-lab-bundle"
        )
    new = write_with(cluster, "upgrade.yaml", kubernetes_version=TARGET, bundle=str(REHEARSAL))
    kubectl("apply", "-f", "-", stdin=UPGRADE_APP)
    deadline = time.monotonic() + 300
    while (ready_replicas(UPGRADE_NS) or 0) < 2:
        assert time.monotonic() < deadline, "the app never got 2 ready replicas"
        time.sleep(3)

    refused = kprov("up", "-i", str(new), check=False)
    assert refused.returncode == 2 and "kprov upgrade" in refused.stderr, refused.stderr
    assert kprov("plan", "-i", str(new), check=False).returncode == 2

    plan = kprov("upgrade", "-i", str(new), "--log-format", "json")
    steps = {r["host"]: r for r in json_lines(plan.stdout) if "kind" in r}
    assert not any(r["done"] for r in steps.values()), steps
    assert any("--allow-experimental-upgrades" in s for s in steps[CP]["steps"]), steps

    # the app's ready replicas, polled for the whole upgrade
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            n = ready_replicas(UPGRADE_NS)
            if n is not None:
                seen.append(n)
            time.sleep(1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.monotonic()
    try:
        # 1. an upgrade killed during the worker's step (after the control plane is done)
        proc = subprocess.Popen(
            [*KPROV, "upgrade", "-i", str(new), "--yes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        killed_at = ""
        for line in proc.stdout:
            if f"{WORKER}: binaries" in line:
                time.sleep(5)
                proc.send_signal(signal.SIGKILL)
                killed_at = line.strip()
                break
        proc.wait(timeout=2400)
        assert killed_at, "the upgrade ended before the worker's step"
        cordoned = json.loads(kubectl("get", "node", WORKER, "-o", "json").stdout)["spec"].get("unschedulable")
        assert cordoned, "the worker should be left cordoned by the killed run"
        # 2. the rerun continues from the facts and finishes
        run = kprov("upgrade", "-i", str(new), "--yes", "--log-format", "json", timeout=2400)
    finally:
        stop.set()
        poller.join(timeout=10)
    total = time.monotonic() - t0
    recap = {r["upgrade"]: r for r in json_lines(run.stdout) if "upgrade" in r}
    labkit.figure(
        f"[upgrade] killed at {killed_at!r}; rerun recap "
        + json.dumps({h: [r["status"], r["seconds"]] for h, r in recap.items()})
        + f"; total {total:.0f} s; app ready replicas min {min(seen)} over {len(seen)} polls"
    )
    assert recap[CP]["status"] == "unchanged" and recap[WORKER]["status"] == "upgraded", recap
    # the worker's target bundle came from the first control plane (upgraded first), not from this machine; there
    # only the port pick and the server ran
    evs = json_lines(run.stdout, "task")
    uploads = [e for e in evs if e["host"] == WORKER and e["task"].startswith("kubernetes | upload the offline")]
    assert uploads and all(e["status"] == "skipped" for e in uploads), uploads
    pulls = [e["msg"] for e in evs if e["host"] == WORKER and e["task"].startswith("kubernetes | pull the bundle")]
    labkit.figure(f"[upgrade] {WORKER}'s bundle: {pulls}")
    # pulled in this run ("pull N files (M MiB) from http://<seed>"), or in the killed one (then this run's pull has
    # nothing left to do); a fallback would have run the upload task above
    assert pulls, "no pull task on the worker"
    assert {e["task"].split(" | ")[1] for e in evs if e["host"] == CP} <= {
        "a port and a token for serving the bundle to the other nodes",
        "serve the bundle to the other nodes (seed node; stops when each has its copy)",
    }, [e["task"] for e in evs if e["host"] == CP]

    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {f"v{TARGET}"}
    assert not any(n["spec"].get("unschedulable") for n in nodes)
    server = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert server == f"v{TARGET}"
    assert seen and min(seen) >= 1, seen

    again = kprov("upgrade", "-i", str(new), "--yes")
    assert "nothing to do" in again.stdout + again.stderr
    assert kprov("plan", "-i", str(new), check=False).returncode != 2
