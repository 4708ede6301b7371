"""The golden-file matrix: every template under templates/ rendered with the variables the roles set.

A case is (name, template, variables). Variables are built from the engine's variables for one host of a
small cluster plus the role variables of the template contract (docs/templates.md); each case overrides
only what it is about. Expected output: tests/golden/expected/<case>/<file>.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.engine.templating import make_env

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
EXPECTED = Path(__file__).resolve().parent / "expected"


def _host(name: str, node_ip: str, roles: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "address": node_ip,
        "node_ip": node_ip,
        "roles": roles,
        "labels": {},
        "groups": ["control_plane" if "control_plane" in roles else "workers"],
    }


HOSTS = [
    _host("cp1", "10.215.0.11", ["control_plane"]),
    _host("cp2", "10.215.0.12", ["control_plane"]),
    _host("cp3", "10.215.0.13", ["control_plane"]),
    _host("w1", "10.215.0.21", ["worker"]),
    _host("w2", "10.215.0.22", ["worker"]),
]

# Role variables with the values the roles are expected to default to (docs/templates.md).
ROLE_DEFAULTS: dict[str, Any] = {
    # containerd
    "containerd_major": 1,
    "containerd_minor": 6,
    "containerd_sandbox_image": "registry.k8s.io/pause:3.10",
    "containerd_systemd_cgroup": True,
    "containerd_restrict_oom_score_adj": False,
    "containerd_cni_bin_dir": "/opt/cni/bin",
    "containerd_cni_conf_dir": "/etc/cni/net.d",
    "containerd_registry_config_path": "/etc/containerd/certs.d",
    "containerd_snapshotter": "overlayfs",
    "containerd_socket": "unix:///run/containerd/containerd.sock",
    # kubelet
    "kubelet_bin": "/usr/bin/kubelet",
    "kubelet_extra_args": [],
    "kubelet_cgroup_driver": "systemd",
    "kubelet_extra_config": {},
    # kubeadm init
    "kubeadm_cri_socket": "unix:///run/containerd/containerd.sock",
    "kubeadm_node_taints": None,
    "kubeadm_ignore_preflight_errors": [],
    "kubeadm_skip_phases": [],
    "kubeadm_control_plane_endpoint": None,
    "kubeadm_image_repository": None,
    "kubeadm_cert_sans": [],
    "kubeadm_apiserver_extra_args": {},
    "kubeadm_controller_manager_extra_args": {},
    "kubeadm_scheduler_extra_args": {},
    "kubeadm_etcd_image_tag": None,
    "kubeadm_coredns_image_tag": None,
    "kubeadm_upload_certs": False,
    "kubeadm_certificate_key": None,
    "kube_proxy_mode": "iptables",
    "kube_proxy_extra_config": {},
    # kubeadm join
    "join_api_endpoint": "10.215.0.11:6443",
    "join_token": "abcdef.0123456789abcdef",
    "join_ca_cert_hash": "sha256:" + "0" * 60 + "c0de",
    "join_control_plane": False,
    "join_certificate_key": None,
    # cni
    "cni_bridge_name": "cni0",
    "cni_bridge_subnet": "10.244.0.0/24",
    "cni_bridge_cni_version": "0.4.0",
    "cni_pod_routes": [],
    "flannel_backend": "vxlan",
    "flannel_image": "ghcr.io/flannel-io/flannel:v0.27.4",
    "flannel_cni_plugin_image": "ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1",
    "flannel_ifaces": [],
    "flannel_cni_bin_dir": "/opt/cni/bin",
    "calico_encapsulation": "VXLANCrossSubnet",
    # smoke
    "smoke_namespace": "kprov-smoke",
    "smoke_replicas": 2,
    "smoke_image": "registry.k8s.io/e2e-test-images/agnhost:2.52",
    "smoke_image_pull_policy": "IfNotPresent",
    "smoke_command": None,
    "smoke_args": ["netexec", "--http-port=8080"],
    "smoke_container_port": 8080,
    "smoke_node_port": 30080,
    # loadbalancer (api_endpoint: vip | local, docs/ha.md)
    "loadbalancer_mode": "vip",
    "loadbalancer_bind_address": "*",
    "loadbalancer_port": 8443,
    "loadbalancer_backends": [h for h in HOSTS if "control_plane" in h["roles"]],
    "loadbalancer_apiserver_port": 6443,
    "loadbalancer_check_inter_ms": 2000,
    "loadbalancer_check_fall": 2,
    "loadbalancer_check_rise": 2,
    "keepalived_vip": "10.215.0.250",
    "keepalived_vip_prefix": 24,
    "keepalived_virtual_router_id": 250,
    "keepalived_priority": 150,
    "keepalived_interface": "host0",
    "keepalived_unicast_src": "10.215.0.11",
    "keepalived_unicast_peers": ["10.215.0.12", "10.215.0.13"],
    "keepalived_advert_int": 1,
}

LOOP_VARS = {"item"}  # set by a task's loop, e.g. one hosts.toml per registry

HA_CERT_KEY = "9f2c1e0d8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d"  # test value only
JOIN_TOKEN = "abcdef.0123456789abcdef"  # test value only


def host_vars(
    k8s: str = "1.31.2",
    host_index: int = 0,
    hosts: list[dict] | None = None,
    mirrors: dict[str, list[str]] | None = None,
    cni: str = "flannel",
    **overrides: Any,
) -> dict[str, Any]:
    """The full variable set one host's template render sees: engine variables + role variables."""
    hosts = copy.deepcopy(hosts if hosts is not None else HOSTS)
    host = hosts[host_index]
    groups: dict[str, list[str]] = {}
    for h in hosts:
        for g in h["groups"]:
            groups.setdefault(g, []).append(h["name"])
    variables: dict[str, Any] = {
        "inventory_hostname": host["name"],
        "host": host,
        "hosts": hosts,
        "groups": groups,
        "cluster": {
            "name": "kprov-lab",
            "kubernetes_version": k8s,
            "pod_cidr": "10.244.0.0/16",
            "service_cidr": "10.96.0.0/12",
            "cni": cni,
            "control_plane_endpoint": None,
            "kubernetes_source": "packages",
            "bundle": None,
            "container_runtime": {"version": "1.7.24", "registry_mirrors": mirrors or {}},
            "api_endpoint": "vip",
            "api_vip": "10.215.0.250",
            "api_vip_prefix": 24,
            "api_port": 8443,
            "api_cert_sans": [],
        },
    }
    variables.update(copy.deepcopy(ROLE_DEFAULTS))
    unknown = set(overrides) - set(variables) - LOOP_VARS
    assert not unknown, f"case sets variables outside the contract: {sorted(unknown)}"
    variables.update(overrides)
    return variables


@dataclass(frozen=True)
class Case:
    name: str
    template: str
    vars: dict[str, Any] = field(hash=False, compare=False)

    @property
    def output_name(self) -> str:
        return Path(self.template).name.removesuffix(".j2")

    @property
    def expected_path(self) -> Path:
        return EXPECTED / self.name / self.output_name

    @property
    def k8s(self) -> str:
        return self.vars["cluster"]["kubernetes_version"]


def _containerd(major: int, minor: int, **kw: Any) -> dict[str, Any]:
    return {"containerd_major": major, "containerd_minor": minor, **kw}


# The lab recipe (lab-recipe/kubeadm-lab): containerd 1.6 from Debian, Debian's CNI plugin dir,
# restrict_oom_score_adj, k8s.gcr.io images for kubeadm 1.20, kube-proxy leaving nf_conntrack_max alone.
LAB = {
    "containerd_restrict_oom_score_adj": True,
    "containerd_cni_bin_dir": "/usr/lib/cni",
    "containerd_sandbox_image": "k8s.gcr.io/pause:3.2",
}
# ... and as inventories/lab.yaml sets them (a crictl in the bundle: only CoreDNS is skipped).
LAB_KUBEADM = {
    "kubeadm_cri_socket": "/run/containerd/containerd.sock",
    "kubeadm_image_repository": "k8s.gcr.io",
    "kubeadm_control_plane_endpoint": "10.215.0.11:6443",
    "kubeadm_skip_phases": ["addon/coredns"],
    "kubeadm_ignore_preflight_errors": ["ImagePull"],
    "kube_proxy_extra_config": {"conntrack": {"maxPerCore": 0}},
}
MIRRORS = {
    "docker.io": ["http://10.215.0.1:5000", "https://mirror.gcr.io"],
    "registry.k8s.io": ["http://10.215.0.1:5001"],
}
EXTRA_ARGS = {
    "kubeadm_apiserver_extra_args": {
        "audit-log-maxage": 7,
        "enable-admission-plugins": "NodeRestriction",
        "anonymous-auth": False,
    },
    "kubeadm_controller_manager_extra_args": {"node-cidr-mask-size": 24, "bind-address": "0.0.0.0"},
    "kubeadm_scheduler_extra_args": {"bind-address": "0.0.0.0"},
}


def _cases() -> list[Case]:
    c: list[Case] = []
    add = lambda name, template, **kw: c.append(Case(name, template, host_vars(**kw)))  # noqa: E731

    # containerd: config version 2 (1.x) and 3 (2.x), lab-style and plain
    cfg = "containerd/config.toml.j2"
    add("containerd-1.6-lab", cfg, k8s="1.20.2", **_containerd(1, 6), **LAB)
    add("containerd-1.6", cfg, k8s="1.29.10", **_containerd(1, 6), containerd_sandbox_image="registry.k8s.io/pause:3.9")
    add("containerd-1.7", cfg, k8s="1.31.2", **_containerd(1, 7))
    add("containerd-1.7-lab", cfg, k8s="1.31.2", **_containerd(1, 7), **LAB)
    add("containerd-2.0", cfg, k8s="1.31.2", **_containerd(2, 0))
    add(
        "containerd-2.1",
        cfg,
        k8s="1.34.1",
        **_containerd(2, 1),
        containerd_sandbox_image="registry.k8s.io/pause:3.10.1",
    )
    add("containerd-2.1-lab-cgroupfs", cfg, k8s="1.34.1", **_containerd(2, 1), **LAB, containerd_systemd_cgroup=False)
    add("crictl", "containerd/crictl.yaml.j2")
    # hosts.toml, one per registry (mirrors on); with no mirrors the role writes none (mirrors off)
    for registry, urls in MIRRORS.items():
        add(
            f"hosts-toml-{registry}",
            "containerd/hosts.toml.j2",
            mirrors=MIRRORS,
            item={"registry": registry, "mirrors": urls},
        )
    add(
        "hosts-toml-_default",
        "containerd/hosts.toml.j2",
        item={"registry": "_default", "mirrors": ["http://10.215.0.1:5000"]},
    )
    add("hosts-toml-no-mirrors", "containerd/hosts.toml.j2", item={"registry": "quay.io", "mirrors": []})

    # kubelet unit, drop-in, /etc/default/kubelet
    for name, bin_ in (("kubelet-usr-bin", "/usr/bin/kubelet"), ("kubelet-usr-local-bin", "/usr/local/bin/kubelet")):
        add(name, "kubernetes/kubelet.service.j2", kubelet_bin=bin_)
        add(name, "kubernetes/10-kubeadm.conf.j2", kubelet_bin=bin_)
    add("kubelet-default", "kubernetes/kubelet-default.j2")
    add(
        "kubelet-default-extra-args",
        "kubernetes/kubelet-default.j2",
        host_index=3,
        kubelet_extra_args=["--fail-swap-on=false", "--v=2"],
    )

    # kubeadm init across the API versions, HA on/off
    init = "control_plane/kubeadm-config.yaml.j2"
    add("kubeadm-1.20-lab", init, k8s="1.20.2", **LAB_KUBEADM)
    add(
        "kubeadm-1.20-ha",
        init,
        k8s="1.20.2",
        **LAB_KUBEADM,
        kubeadm_upload_certs=True,
        kubeadm_certificate_key=HA_CERT_KEY,
        kubeadm_cert_sans=["10.215.0.10", "k8s.lab.internal"],
    )
    add(
        "kubeadm-1.29",
        init,
        k8s="1.29.10",
        **EXTRA_ARGS,
        kubeadm_node_taints=[],
        kubeadm_skip_phases=["addon/coredns"],
        kubeadm_ignore_preflight_errors=["ImagePull", "NumCPU"],
        kubeadm_control_plane_endpoint="10.215.0.11:6443",
    )
    add(
        "kubeadm-1.31-ha",
        init,
        k8s="1.31.2",
        **EXTRA_ARGS,
        kubeadm_upload_certs=True,
        kubeadm_certificate_key=HA_CERT_KEY,
        kubeadm_control_plane_endpoint="k8s.lab.internal:6443",
        kubeadm_cert_sans=["k8s.lab.internal", "10.215.0.10"],
        kubeadm_image_repository="registry.k8s.io",
        kubeadm_etcd_image_tag="3.5.15-0",
        kubeadm_coredns_image_tag="v1.11.3",
    )
    add(
        "kubeadm-1.31-lab",
        init,
        k8s="1.31.2",
        **{**LAB_KUBEADM, "kubeadm_image_repository": None, "kubeadm_cri_socket": ROLE_DEFAULTS["kubeadm_cri_socket"]},
    )
    add(
        "kubeadm-1.34",
        init,
        k8s="1.34.1",
        kube_proxy_mode="nftables",
        kubelet_extra_config={"failCgroupV1": False, "maxPods": 150},
        kubeadm_node_taints=[
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
            {"key": "kprov.io/dedicated", "value": "infra", "effect": "PreferNoSchedule"},
        ],
        kubeadm_scheduler_extra_args={"v": 2},
    )

    # kubeadm join: workers and an HA control-plane join
    join = "join/kubeadm-join.yaml.j2"
    add(
        "join-1.20-worker",
        join,
        k8s="1.20.2",
        host_index=3,
        kubeadm_cri_socket="/run/containerd/containerd.sock",
        kubeadm_ignore_preflight_errors=["FileExisting-crictl"],
        join_token=JOIN_TOKEN,
    )
    add(
        "join-1.20-control-plane",
        join,
        k8s="1.20.2",
        host_index=1,
        join_control_plane=True,
        join_certificate_key=HA_CERT_KEY,
        join_api_endpoint="10.215.0.10:6443",
    )
    add("join-1.29-worker", join, k8s="1.29.10", host_index=4)
    add(
        "join-1.31-control-plane",
        join,
        k8s="1.31.2",
        host_index=2,
        join_control_plane=True,
        join_certificate_key=HA_CERT_KEY,
        join_api_endpoint="k8s.lab.internal:6443",
        kubeadm_ignore_preflight_errors=["ImagePull"],
    )
    add("join-1.34-worker", join, k8s="1.34.1", host_index=3)

    # CNI
    add("bridge-node0", "cni/bridge.conflist.j2", cni="bridge")
    add(
        "bridge-node3-cni-1.0.0",
        "cni/bridge.conflist.j2",
        cni="bridge",
        host_index=3,
        cni_bridge_subnet="10.244.3.0/24",
        cni_bridge_cni_version="1.0.0",
        cni_bridge_name="kprov0",
    )
    node_ips = [h["node_ip"] for h in HOSTS]
    add("flannel-5-nodes", "cni/flannel.yaml.j2", flannel_ifaces=node_ips, flannel_cni_bin_dir="/usr/lib/cni")
    add(
        "flannel-1-node-host-gw",
        "cni/flannel.yaml.j2",
        hosts=HOSTS[:1],
        flannel_ifaces=node_ips[:1],
        flannel_backend="host-gw",
    )
    add("calico-vxlan", "cni/calico-resources.yaml.j2", cni="calico")
    add("calico-ipip", "cni/calico-resources.yaml.j2", cni="calico", calico_encapsulation="IPIP")

    # bridge: routes to the other nodes' pod subnets (from `kubectl get nodes`), script + boot unit
    routes = [{"name": h["name"], "pod_cidr": f"10.244.{i}.0/24", "ip": h["node_ip"]} for i, h in enumerate(HOSTS)][1:]
    add("pod-routes-4-peers", "cni/kprov-pod-routes.sh.j2", cni="bridge", cni_pod_routes=routes)
    add("pod-routes-4-peers", "cni/kprov-pod-routes.service.j2", cni="bridge", cni_pod_routes=routes)
    add("pod-routes-single-node", "cni/kprov-pod-routes.sh.j2", cni="bridge", cni_pod_routes=[])

    # API endpoint balancers: vip (keepalived + haproxy on the control planes), local (haproxy on 127.0.0.1)
    lb, ka = "loadbalancer/haproxy.cfg.j2", "loadbalancer/keepalived.conf.j2"
    add("lb-vip-3-control-planes", lb)
    add("lb-vip-3-control-planes", ka)
    add(
        "lb-vip-cp3-eth1-16",
        ka,
        host_index=2,
        keepalived_priority=148,
        keepalived_interface="eth1",
        keepalived_unicast_src="10.215.0.13",
        keepalived_unicast_peers=["10.215.0.11", "10.215.0.12"],
        keepalived_vip="10.215.7.7",
        keepalived_vip_prefix=16,
        keepalived_virtual_router_id=7,
    )
    add(
        "lb-vip-1-control-plane",
        lb,
        hosts=HOSTS[:1] + HOSTS[3:],
        loadbalancer_backends=HOSTS[:1],
        loadbalancer_port=9443,
    )
    add("lb-vip-1-control-plane", ka, hosts=HOSTS[:1] + HOSTS[3:], keepalived_unicast_peers=[])
    add(
        "lb-local-worker",
        lb,
        host_index=3,
        loadbalancer_mode="local",
        loadbalancer_bind_address="127.0.0.1",
        loadbalancer_port=6444,
    )

    # smoke
    add("smoke-agnhost", "smoke/hello.yaml.j2")
    add(
        "smoke-lab",
        "smoke/hello.yaml.j2",
        smoke_image="docker.io/kprov/hello:1.0",
        smoke_image_pull_policy="Never",
        smoke_command=[
            "/bin/sh",
            "-c",
            'mkdir -p /www && echo "hello from $POD_NAME on $NODE_NAME" > /www/index.html'
            " && exec httpd -f -p 8080 -h /www",
        ],
        smoke_args=None,
    )
    add(
        "smoke-busybox-httpd",
        "smoke/hello.yaml.j2",
        smoke_image="docker.io/kpk/busybox:1.35",
        smoke_image_pull_policy="Never",
        smoke_command=["httpd"],
        smoke_args=["-f", "-p", "8080", "-h", "/etc"],
        smoke_replicas=3,
        smoke_namespace="smoke",
    )
    return c


CASES = _cases()


# --- rendering, exactly as the engine does (make_env + get_template().render) --------------------------
ENV = make_env(TEMPLATES)


def render(case: Case) -> str:
    return ENV.get_template(case.template).render(**case.vars)


def cases_for(template: str) -> list[Case]:
    return [c for c in CASES if c.template == template]


def ids(cases: list[Case]) -> list[str]:
    return [f"{c.name}/{c.output_name}" for c in cases]


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def by_kind(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs(text)}
