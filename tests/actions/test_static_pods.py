"""The static-pod restart: the manifest stamp (a new pod UID, nothing else changed) and the script's shape."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from provisioner.actions.static_pods import ANNOTATION, ORDER, SETTLE_S, restart_script, stamp_manifest
from provisioner.errors import KprovError

SCHEDULER = """apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: null
  labels:
    component: kube-scheduler
    tier: control-plane
  name: kube-scheduler
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-scheduler
    - --port=0
    image: k8s.gcr.io/kube-scheduler:v1.20.2
    name: kube-scheduler
"""
APISERVER = """apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 10.0.0.11:6443
    kprov.io/restarted: 20250101T000000Z-aaaaaa
  name: kube-apiserver
spec:
  containers:
  - command: [kube-apiserver, "--secure-port=6443"]
"""


@pytest.mark.parametrize(
    ("manifest", "kept_annotations"),
    [
        (SCHEDULER, {}),
        (APISERVER, {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": "10.0.0.11:6443"}),
    ],
    ids=["no annotations", "kubeadm's annotation and an older stamp"],
)
def test_the_stamp_is_the_only_change(manifest: str, kept_annotations: dict) -> None:
    before = yaml.safe_load(manifest)
    after = yaml.safe_load(stamp_manifest(manifest, "20261201T000000Z-abcdef"))
    assert after["metadata"].pop("annotations") == {**kept_annotations, ANNOTATION: "20261201T000000Z-abcdef"}
    before["metadata"].pop("annotations", None)
    assert after == before
    # two stamps, two different manifests (two pod UIDs)
    assert stamp_manifest(manifest, "a") != stamp_manifest(manifest, "b")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("kind: Pod\nmetadata: [\n", "not valid YAML"),
        ("kind: Deployment\nmetadata: {}\n", "not a Pod"),
        ("", "not a Pod"),
    ],
)
def test_a_manifest_that_is_not_a_pod_is_refused(text: str, why: str) -> None:
    with pytest.raises(KprovError, match=why):
        stamp_manifest(text, "s", source="cp1:/etc/kubernetes/manifests/x.yaml")


@pytest.mark.parametrize("pod", ORDER)
def test_the_script_is_valid_sh_with_no_fixed_tmp_path(pod: str) -> None:
    script = restart_script(pod, stamp_manifest(SCHEDULER, "s"), "https://10.0.0.11:6443", 300)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "/tmp/" not in script
    assert f"mv -f /etc/kubernetes/kprov/staged/{pod}.yaml /etc/kubernetes/manifests/{pod}.yaml" in script


@pytest.fixture
def fake_pod(tmp_path):
    """A "static pod" of this machine: processes named `kprovtest-<random>` (a copy of sleep), started and
    stopped by the test as kubelet would; the script's manifest directories are under tmp_path."""
    import secrets
    import shutil

    name = f"kprovtest-{secrets.token_hex(4)}"
    binary = tmp_path / name
    shutil.copy(shutil.which("sleep"), binary)
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen([name, "600"], executable=str(binary))
        procs.append(p)
        return p

    def script(timeout_s: int) -> subprocess.Popen:
        body = restart_script(
            name,
            stamp_manifest(SCHEDULER, "s"),
            "https://127.0.0.1:1",
            timeout_s,
            manifests=str(tmp_path / "manifests"),
            staging=str(tmp_path / "staged"),
        )
        (tmp_path / "manifests").mkdir(exist_ok=True)
        return subprocess.Popen(["sh", "-c", body], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    yield name, start, script, tmp_path
    for p in procs:
        p.kill()
        p.wait()


def test_the_wait_ends_only_when_every_process_is_younger_than_the_change(fake_pod) -> None:
    """The old process keeps the script waiting (even with a new one beside it); once it is gone and the new
    one has run SETTLE_S seconds, the script reports the restart and the manifest is in place."""
    import time

    name, start, script, tmp = fake_pod
    old = start()
    run = script(120)
    manifest = tmp / "manifests" / f"{name}.yaml"
    deadline = time.monotonic() + 60  # the script writes it after its 2 s pause (later on a loaded machine)
    while not manifest.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert manifest.read_text() == stamp_manifest(SCHEDULER, "s")
    start()  # kubelet starts the new pod while the old one still runs
    time.sleep(SETTLE_S + 2)
    assert run.poll() is None, "the wait ended while a process older than the change was running"
    old.kill()
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0 and f"{name} restarted" in out, (out, err)


@pytest.mark.parametrize("before", [False, True], ids=["no process at all", "only the old process"])
def test_the_wait_times_out_with_what_it_saw(fake_pod, before: bool) -> None:
    name, start, script, _ = fake_pod
    if before:
        start()
    run = script(4)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 1 and f"{name} did not come back healthy within 4s" in err, (out, err)
