"""The shared 3-node lab: what a provisioning run relies on, checked on the real machines."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.lab import mkimage, network, provider
from tests.lab.helpers import kprov

pytestmark = pytest.mark.lab

NODE_INDEXES = [1, 2, 3]


@pytest.mark.parametrize("index", NODE_INDEXES)
def test_node_reachable_with_own_hostname_and_ip(lab_nodes, index):
    node = lab_nodes.node(index)
    out = lab_nodes.lab.capture(node, ["sh", "-c", "hostname; ip -4 -o addr show dev host0"])
    assert out.returncode == 0, out.stderr
    hostname, addr_line = out.stdout.splitlines()
    assert hostname == node.name == f"{lab_nodes.lab.name}-{index}"
    assert f" {node.address}/" in addr_line


@pytest.mark.parametrize("index", NODE_INDEXES)
def test_system_running(lab_nodes, index):
    # every unit of a node must come up: no documented exceptions are needed (docs/lab.md)
    out = lab_nodes.lab.capture(
        lab_nodes.node(index), ["sh", "-c", "systemctl is-system-running --wait; systemctl --failed --no-legend"]
    )
    assert out.stdout.split() == ["running"], out.stdout


@pytest.mark.parametrize("index", NODE_INDEXES)
def test_node_has_own_cgroup_and_identity(lab_nodes, index):
    node = lab_nodes.node(index)
    cg = Path(f"/proc/{node.pid}/cgroup").read_text()
    for line in cg.splitlines():  # every v1 hierarchy and the unified one
        # nspawn itself sits in a "supervisor" child of the node cgroup in the systemd hierarchies
        assert (line + "/").split(":", 2)[2].find(f"/kprov-{lab_nodes.lab.name}/{node.name}/") >= 0, line
    out = lab_nodes.lab.capture(node, ["cat", "/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key.pub"])
    machine_id, host_key = out.stdout.splitlines()
    assert len(machine_id) == 32
    assert host_key.split()[1] in lab_nodes.lab.known_hosts_path.read_text()


def test_nodes_ping_each_other_by_name(lab_nodes):
    others = [n.name for n in lab_nodes.nodes[1:]]
    out = lab_nodes.lab.capture(lab_nodes.node(1), ["sh", "-c", " && ".join(f"ping -c1 -W2 {n}" for n in others)])
    assert out.returncode == 0, out.stdout + out.stderr


def test_node_network_has_no_way_out(lab_nodes):
    """Only the bridge (proxy) and the nodes: resolv.conf and apt point at the bridge address."""
    subnet = ipaddress.IPv4Network(lab_nodes.lab.state().subnet)
    gw = str(subnet.network_address + 1)
    out = lab_nodes.lab.capture(lab_nodes.node(2), ["cat", "/etc/resolv.conf", "/etc/apt/apt.conf.d/01kprov-proxy"])
    assert out.stdout.splitlines() == [f"nameserver {gw}", f'Acquire::http::Proxy "http://{gw}:3142";']
    routes = lab_nodes.lab.capture(lab_nodes.node(2), ["ip", "-4", "route"]).stdout.splitlines()
    assert sorted(r.split()[0] for r in routes) == sorted([str(subnet), "default"]), routes
    assert any(r.startswith(f"default via {gw} ") for r in routes), routes
    # and the host drops anything a node would route beyond the bridge, even with ip_forward on
    assert len(network.lab_rules(lab_nodes.lab.name)) == 2


def test_apt_install_through_proxy(lab_nodes):
    out = lab_nodes.lab.capture(
        lab_nodes.node(3),
        ["sh", "-c", "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello >/dev/null && hello"],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "Hello, world!"


def test_ctr_runs_a_local_image(lab_nodes):
    """The issue's done-when: containerd from Debian runs a container inside a lab node."""
    lab, node = lab_nodes.lab, lab_nodes.node(2)
    setup = (
        "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd busybox-static >/dev/null"
        " && containerd config default > /etc/containerd/config.toml"
        # no CAP_SYS_RESOURCE on this kind of host: a negative oom_score_adj is refused
        " && sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml"
        " && systemctl restart containerd"
    )
    out = lab.capture(node, ["sh", "-c", setup])
    assert out.returncode == 0, out.stderr[-2000:]
    items = ["/root/bb.tar", "local/busybox:1", "/bin/busybox:/bin/busybox", "/bin/sh->busybox", "/bin/echo->busybox"]
    out = lab.capture(node, ["python3", "-", *items], input=Path(mkimage.__file__).read_text())
    assert out.returncode == 0, out.stderr
    run = "ctr images import /root/bb.tar >/dev/null && ctr run --rm docker.io/local/busybox:1 kprov-t1 /bin/echo hello-from-ctr </dev/null"
    out = lab.capture(node, ["sh", "-c", run])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello-from-ctr"


def test_inventory_file(lab_nodes):
    lab = lab_nodes.lab
    doc = yaml.safe_load(lab.inventory_path.read_text())
    assert doc["provider"] == "static"
    assert doc["cluster"]["name"] == lab.name and doc["cluster"]["kubernetes_version"] == "1.20.2"
    assert doc["defaults"] == {"user": "root", "ssh_key": str(lab.key_path), "known_hosts": str(lab.known_hosts_path)}
    assert [(h["name"], h["address"], h["node_ip"], h["roles"]) for h in doc["hosts"]] == [
        (n.name, n.address, n.address, list(n.roles)) for n in lab_nodes.nodes
    ]
    assert [h["roles"] for h in doc["hosts"]] == [["control_plane"], ["worker"], ["worker"]]


def test_inventory_loads_with_kprov_loader(lab_nodes):
    loader = pytest.importorskip("provisioner.inventory.loader")
    inv = loader.load_inventory(lab_nodes.lab.inventory_path)
    assert [h.name for h in inv.hosts] == [n.name for n in lab_nodes.nodes]


def test_provider_functions(lab_nodes):
    lab = lab_nodes.lab
    section = {"name": lab.name, "nodes": len(lab_nodes.nodes), "control_planes": 1}
    hosts = provider.resolve_hosts(section, {})
    assert hosts == [
        {"name": n.name, "address": n.address, "node_ip": n.address, "roles": list(n.roles), "user": "root",
         "ssh_key": str(lab.key_path)}
        for n in lab_nodes.nodes
    ]  # fmt: skip
    assert provider.connection_defaults(section) == {
        "user": "root", "ssh_key": str(lab.key_path), "known_hosts": str(lab.known_hosts_path)
    }  # fmt: skip


def test_plain_ssh_with_generated_files(lab_nodes):
    """The inventory's key + known_hosts work with a stock OpenSSH client and strict host keys."""
    lab, node = lab_nodes.lab, lab_nodes.node(1)
    argv = ["ssh", "-i", str(lab.key_path), "-o", f"UserKnownHostsFile={lab.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"root@{node.address}", "hostname"]  # fmt: skip
    assert subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip() == node.name


# ---- the scriptable CLI contract ----


def test_cli_status(lab_nodes):
    res = kprov("lab", "status", "--name", lab_nodes.lab.name)
    assert res.returncode == 0, res.stderr
    header, *lines = res.stdout.splitlines()
    assert header.split()[0] == "NODE"
    assert [line.split()[0] for line in lines] == [n.name for n in lab_nodes.nodes]
    assert all(line.split()[3] == "running" for line in lines)


def test_cli_inventory_prints_path_last(lab_nodes):
    res = kprov("lab", "inventory", "--name", lab_nodes.lab.name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == str(lab_nodes.lab.inventory_path)


@pytest.mark.parametrize(
    ("command", "rc", "stdout"), [(["true"], 0, ""), (["sh", "-c", "echo out; exit 7"], 7, "out\n"), (["false"], 1, "")]
)
def test_cli_ssh_returns_exit_code(lab_nodes, command, rc, stdout):
    res = kprov("lab", "ssh", "--name", lab_nodes.lab.name, lab_nodes.node(2).name, "--", *command)
    assert (res.returncode, res.stdout) == (rc, stdout), res.stderr


def test_cli_up_is_a_noop_when_running(lab_nodes):
    before = [(n.name, n.pid) for n in lab_nodes.lab.status()]
    res = kprov("lab", "up", "--name", lab_nodes.lab.name)
    assert res.returncode == 0, res.stderr
    assert [(n.name, n.pid) for n in lab_nodes.lab.status()] == before
    assert res.stdout.splitlines()[-1] == f"inventory: {lab_nodes.lab.inventory_path}"


# What kubeadm/kubelet/containerd need inside a node (NSPAWN.md G1-G5, G12, and the sysctl stand-ins).
NODE_FACTS = [
    ("modprobe of built-in modules (fake modules.builtin + depmod)", "modprobe overlay && modprobe br_netfilter"),
    ("sysctl --system exits 0 (non-namespaced Debian defaults masked)", "sysctl --system >/dev/null"),
    (
        "per-netns sysctls are writable",
        "sysctl -w net.ipv4.ip_forward=1 >/dev/null && sysctl -w net.ipv4.ip_forward=0 >/dev/null",
    ),
    (
        "kubelet's host-global sysctls have writable stand-ins",
        "echo 1 > /proc/sys/vm/overcommit_memory && echo 10 > /proc/sys/kernel/panic",
    ),
    (
        "v1 cgroup hierarchies are writable",
        "mkdir /sys/fs/cgroup/memory/kprov-t && rmdir /sys/fs/cgroup/memory/kprov-t",
    ),
    (
        "cpuset, pids, devices hierarchies exist",
        "test -d /sys/fs/cgroup/cpuset -a -d /sys/fs/cgroup/pids -a -d /sys/fs/cgroup/devices",
    ),
    ("/dev/kmsg is present for kubelet's OOM watcher", "test -c /dev/kmsg"),
    ("containerd's directory is not on the overlay", 'test "$(stat -f -c %T /var/lib/containerd)" != overlayfs'),
    ("every node is in /etc/hosts", "getent hosts {names}"),
]


@pytest.mark.parametrize(("what", "script"), NODE_FACTS, ids=[w for w, _ in NODE_FACTS])
def test_node_facts(lab_nodes, what, script):
    names = " ".join(n.name for n in lab_nodes.nodes)
    out = lab_nodes.lab.capture(lab_nodes.node(3), ["sh", "-ec", script.replace("{names}", names)])
    assert out.returncode == 0, f"{what}: {out.stdout}{out.stderr}"


def test_host_sysctls_untouched_by_nodes(lab_nodes):
    """The stand-ins are per node: writes in a node never reach the host's kernel.panic."""
    before = Path("/proc/sys/kernel/panic").read_text()
    assert lab_nodes.lab.capture(lab_nodes.node(1), ["sh", "-c", "echo 77 > /proc/sys/kernel/panic"]).returncode == 0
    assert Path("/proc/sys/kernel/panic").read_text() == before
