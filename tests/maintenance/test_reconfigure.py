"""Configuration drift and `kprov upgrade --reconfigure` without a cluster: the pure diff (k8s/drift.py) over
stored/rendered pairs, the certificate facts, the rendered config as golden files (kubeadm v1beta4 = Kubernetes
1.31 cannot run here: golden-tested only), bad input (exit 2 before any connection) and the locks the day-two
commands take. The lab proof is step 4 of tests/maintenance/test_lifecycle_lab.py.
Regenerate the golden files after an intended change: KPROV_UPDATE_GOLDEN=1 pytest tests/maintenance
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import pytest
import yaml

from provisioner.actions.reconfigure import cert_sans, needs_new_certificate, render_kubeadm_config
from provisioner.engine.lock import cluster_lock
from provisioner.inventory.loader import load_inventory
from provisioner.k8s.drift import compute_drift, normalize_args
from tests.inventory.cli import kprov, kprov_forked
from tests.maintenance.test_upgrade_plan import golden

# what kubeadm 1.20 stored on the lab (kube-system/kubeadm-config, captured from a lab cluster)
STORED_V1BETA2 = """
apiServer:
  certSANs:
  - 10.231.2.11
  extraArgs:
    authorization-mode: Node,RBAC
  timeoutForControlPlane: 4m0s
apiVersion: kubeadm.k8s.io/v1beta2
clusterName: mdev
controlPlaneEndpoint: 10.231.2.11:6443
controllerManager: {}
kind: ClusterConfiguration
kubernetesVersion: v1.20.2
scheduler: {}
"""
PROXY = """
apiVersion: kubeproxy.config.k8s.io/v1alpha1
clusterCIDR: 10.244.0.0/16
conntrack: {maxPerCore: 0, min: null}
iptables: {masqueradeAll: false, minSyncPeriod: 0s}
kind: KubeProxyConfiguration
mode: iptables
"""


def rendered(sans=("10.231.2.11",), api_args=None, cm_args=None, proxy=None, api="kubeadm.k8s.io/v1beta2") -> str:
    def args(values):
        if api.endswith("v1beta4"):
            return [{"name": k, "value": v} for k, v in sorted(values.items())]
        return values

    cc: dict = {"apiVersion": api, "kind": "ClusterConfiguration", "apiServer": {"certSANs": list(sans)}}
    if api_args:
        cc["apiServer"]["extraArgs"] = args(api_args)
    if cm_args:
        cc["controllerManager"] = {"extraArgs": args(cm_args)}
    kp = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": "10.244.0.0/16",
        "conntrack": {"maxPerCore": 0},
        **(proxy or {}),
    }
    return yaml.safe_dump_all([{"apiVersion": api, "kind": "InitConfiguration"}, cc, kp])


V1BETA4_STORED = """
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
apiServer:
  certSANs: [10.0.0.10, api.example.com]
  extraArgs:
  - {name: audit-log-maxage, value: "30"}
controllerManager: {}
"""

CASES = [
    # (id, stored ClusterConfiguration, rendered, expected drift lines (field: stored -> wanted))
    ("no drift (kubeadm's own default args are not drift)", STORED_V1BETA2, rendered(), []),
    (
        "a SAN added",
        STORED_V1BETA2,
        rendered(sans=("10.231.2.11", "api.kpmt.test")),
        [
            'apiServer.certSANs (+api.kpmt.test): cluster has ["10.231.2.11"], inventory wants ["10.231.2.11", '
            '"api.kpmt.test"]'
        ],
    ),
    (
        "a SAN removed",
        STORED_V1BETA2,
        rendered(sans=()),
        ['apiServer.certSANs (-10.231.2.11): cluster has ["10.231.2.11"], inventory wants []'],
    ),
    (
        "SAN order is not drift",
        STORED_V1BETA2.replace("  - 10.231.2.11", "  - 10.231.2.11\n  - b.test"),
        rendered(sans=("b.test", "10.231.2.11")),
        [],
    ),
    (
        "an API server arg added",
        STORED_V1BETA2,
        rendered(api_args={"audit-log-maxage": "30"}),
        ["apiServer.extraArgs.audit-log-maxage: cluster has -, inventory wants 30"],
    ),
    (
        "kubeadm's default overridden",
        STORED_V1BETA2,
        rendered(api_args={"authorization-mode": "Node,RBAC,ABAC"}),
        ["apiServer.extraArgs.authorization-mode: cluster has Node,RBAC, inventory wants Node,RBAC,ABAC"],
    ),
    (
        "a controller-manager arg",
        STORED_V1BETA2,
        rendered(cm_args={"node-monitor-grace-period": "20s"}),
        ["controllerManager.extraArgs.node-monitor-grace-period: cluster has -, inventory wants 20s"],
    ),
    (
        "kube-proxy: a setting kprov renders",
        STORED_V1BETA2,
        rendered(proxy={"iptables": {"minSyncPeriod": "1s"}}),
        ["kubeProxy.iptables.minSyncPeriod: cluster has 0s, inventory wants 1s"],
    ),
    (
        "kube-proxy: the mode",
        STORED_V1BETA2,
        rendered(proxy={"mode": "ipvs"}),
        ["kubeProxy.mode: cluster has iptables, inventory wants ipvs"],
    ),
    (
        "v1beta4: list-form args, same values",
        V1BETA4_STORED,
        rendered(
            sans=("api.example.com", "10.0.0.10"), api_args={"audit-log-maxage": "30"}, api="kubeadm.k8s.io/v1beta4"
        ),
        [],
    ),
    (
        "v1beta4: an arg changed and one removed",
        V1BETA4_STORED,
        rendered(
            sans=("api.example.com", "10.0.0.10"),
            api_args={"audit-log-maxage": "7"},
            cm_args={"v": "2"},
            api="kubeadm.k8s.io/v1beta4",
        ),
        [
            "apiServer.extraArgs.audit-log-maxage: cluster has 30, inventory wants 7",
            "controllerManager.extraArgs.v: cluster has -, inventory wants 2",
        ],
    ),
]


@pytest.mark.parametrize("stored,wanted,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_drift(stored: str, wanted: str, expected: list[str]) -> None:
    drift = compute_drift(stored_cluster_config=stored, stored_kube_proxy=PROXY, rendered=wanted)
    assert [i.line() for i in drift.items] == expected
    assert bool(drift) == bool(expected)


@pytest.mark.parametrize(
    "raw,expected",
    [
        (None, {}),
        ({"v": 2, "profiling": False}, {"v": "2", "profiling": "false"}),
        ([{"name": "v", "value": "2"}], {"v": "2"}),
    ],
)
def test_extra_args_of_every_api_version(raw, expected) -> None:
    assert normalize_args(raw) == expected


def _cert(sans: list[str]) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    alt = [x509.IPAddress(ipaddress.ip_address(s)) if s[0].isdigit() else x509.DNSName(s) for s in sans]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "cert,stored,wanted,needed",
    [
        (["kubernetes", "10.0.0.10"], ["10.0.0.10"], ["10.0.0.10", "api.test"], True),  # lacks the new one
        (["kubernetes", "10.0.0.10", "api.test"], ["10.0.0.10"], ["10.0.0.10", "api.test"], False),  # resumed run
        (["kubernetes", "10.0.0.10", "old.test"], ["10.0.0.10", "old.test"], ["10.0.0.10"], True),  # still has it
        (["kubernetes", "10.0.0.10"], ["10.0.0.10", "old.test"], ["10.0.0.10"], False),  # already gone
        (["API.test", "10.0.0.10"], [], ["api.test.", "10.0.0.10"], False),  # name case / dot
    ],
)
def test_a_new_certificate_only_when_its_sans_say_so(cert, stored, wanted, needed) -> None:
    have = cert_sans(_cert(cert))
    assert needs_new_certificate(have, stored, wanted) is needed


INVENTORY = """
cluster:
  name: demo
  kubernetes_version: "{version}"
  control_plane_endpoint: lb.example.com:6443
  api_cert_sans: [api.example.com, 10.0.0.100]
  vars:
    kubeadm_apiserver_extra_args: {{audit-log-maxage: "30"}}
    kubeadm_scheduler_extra_args: {{v: "2"}}
    kube_proxy_extra_config: {{iptables: {{minSyncPeriod: 1s}}}}
defaults: {{user: root}}
hosts:
  - {{name: cp1, address: 192.0.2.10, roles: [control_plane]}}
  - {{name: cp2, address: 192.0.2.11, roles: [control_plane]}}
  - {{name: w1, address: 192.0.2.12, roles: [worker]}}
"""


@pytest.mark.parametrize("version", ["1.20.2", "1.31.2"])
@pytest.mark.parametrize("host", ["cp1", "cp2"])
def test_rendered_config_per_control_plane_golden(tmp_path: Path, version: str, host: str) -> None:
    """What `--reconfigure` writes to each control plane (its own advertise address and node name, the cluster's
    SANs with api_cert_sans after kprov's own): v1beta2 runs on the lab, v1beta4 (1.31) only here."""
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text(INVENTORY.format(version=version))
    inv = load_inventory(str(inv_path))
    text = render_kubeadm_config(inv, inv.host(host))
    golden(f"reconfigure-{version}-{host}.yaml", text)
    cc = next(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "ClusterConfiguration")
    assert cc["apiServer"]["certSANs"][-2:] == ["api.example.com", "10.0.0.100"]


BAD = [
    (
        "a SAN with an underscore",
        "[api_server.example.com]",
        "cluster.api_cert_sans[0]: 'api_server.example.com' is not a DNS name or an IP address",
    ),
    ("a URL", "['https://api.example.com']", "'https://api.example.com' is not a DNS name"),
    ("a broken address", "[10.0.0.300]", "'10.0.0.300' is not a DNS name or an IP address"),
    ("a number", "[42]", "cluster.api_cert_sans[0]: 42 is not a DNS name"),
    ("not a list", "api.example.com", "cluster.api_cert_sans"),
]


@pytest.mark.parametrize("value,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
@pytest.mark.parametrize("command", [["plan"], ["upgrade", "--reconfigure"], ["upgrade", "--reconfigure", "--yes"]])
def test_a_bad_san_is_refused_before_any_connection(tmp_path: Path, command, value: str, needle: str) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        INVENTORY.format(version="1.30.4").replace(
            "api_cert_sans: [api.example.com, 10.0.0.100]", f"api_cert_sans: {value}"
        )
    )
    res = kprov_forked(*command, "-i", str(inv))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 2, (res.stdout, res.stderr)
    assert needle in lines[0] and lines[1].startswith("hint: "), res.stderr


def test_reconfigure_with_a_version_is_refused(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY.format(version="1.30.4"))
    res = kprov_forked("upgrade", "--reconfigure", "--to", "1.31.0", "--yes", "-i", str(inv))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 2 and "--to is not allowed" in lines[0], res.stderr


LOCKED = [
    ("upgrade", ["upgrade", "--yes"]),
    ("reconfigure", ["upgrade", "--reconfigure", "--yes"]),
    ("certs renew", ["certs", "renew"]),
    ("etcd restore", ["etcd", "restore", "--yes", "--from", "{snap}"]),
]


@pytest.mark.parametrize("argv", [c[1] for c in LOCKED], ids=[c[0] for c in LOCKED])
def test_day_two_commands_take_the_cluster_lock_before_connecting(tmp_path: Path, monkeypatch, argv) -> None:
    """Held by another run (here: this test process), the cluster is refused, exit 2, naming the holder, before
    any host is contacted (the TEST-NET hosts would otherwise fail with exit 3). The host locks and a concurrent
    `up` during a reconfiguration are proven on the lab (test_lifecycle_lab.py)."""
    import hashlib

    monkeypatch.setenv("KPROV_HOME", str(tmp_path / "home"))
    snap = tmp_path / "demo-20261201T070000Z.db"
    snap.write_bytes(b"etcd")
    (tmp_path / (snap.name + ".sha256")).write_text(f"{hashlib.sha256(b'etcd').hexdigest()}  {snap.name}\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY.format(version="1.30.4"))
    with cluster_lock("demo", "kprov up (the test holding the lock)"):
        # a new process: a forked one would inherit this process's lock (and its re-entrance)
        res = kprov(*[a.replace("{snap}", str(snap)) for a in argv], "-i", str(inv))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 2, (res.stdout, res.stderr)
    assert f"cluster 'demo' is locked by pid {os.getpid()}" in lines[0] and "kprov up" in lines[0], res.stderr
