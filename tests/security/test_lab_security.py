"""Security properties on a real lab node (systemd-nspawn, real sshd, real shells), issue 10:

- hostile input (item 2): a value that breaks out of every shell quoting context, set in turn as each
  variable of each role, through plan and apply: nothing it carries ever runs on the node (no `touch`
  is ever executed), the run either treats it as data or refuses it;
- secrets in argv (item 3): every process started on the node during those runs, and during the real
  certificate-upload task, is recorded by `strace -f -e execve` on the node's sshd: no argv holds a
  secret the run's redactor knows (the certificate key);
- reset (item 12) removes only what Kubernetes/CNI created: a veth on the CNI bridge and the CNI chains
  of kprov's network go, a Docker-style veth and podman's CNI chains stay;
- apt keyring (item 8): a failed download leaves no keyring; an empty keyring is treated as missing.

The node is a 1-node lab of its own: apply with hostile values writes odd files, which must not leak
into the shared `lab_nodes` other suites plan against.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.engine.events import Status
from provisioner.engine.roles import ROLES_DIR, TEMPLATES_DIR, Play
from provisioner.engine.runner import Runner, RunOptions
from provisioner.errors import KprovError
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory
from provisioner.k8s.context import cluster_vars
from provisioner.secrets import Redactor
from provisioner.transport.ssh import ConnectOptions
from tests.e2e import labkit
from tests.engine.conftest import ListSink, Outcome

pytestmark = pytest.mark.lab

LAB = "kps" + os.environ.get("KPROV_TEST_TAG", "")
CANARY = "/run/kprov-pwned"
#: breaks out of single quotes, double quotes, an unquoted word, a command substitution and a line:
#: wherever a shell would read it as code, at least one `touch` runs
HOSTILE = f"';touch {CANARY};'\";touch {CANARY};\"$(touch {CANARY})`touch {CANARY}`\ntouch {CANARY}\n/*"
ROLES = ["preflight", "prerequisites", "containerd", "control_plane", "join", "cni", "reset"]
#: roles applied for real with hostile values (the others need a cluster, or install packages from
#: the network, before they reach their variables; their plan still runs every fact and probe)
APPLIED = ["preflight", "prerequisites", "reset"]


class SecurityNode:
    def __init__(self, lab) -> None:
        self.lab = lab
        self.inventory = load_inventory(lab.inventory_path)
        self.name = self.inventory.hosts[0].name
        self.gateway = self.inventory.hosts[0].address.rsplit(".", 1)[0] + ".1"

    def sh(self, script: str, check: bool = True) -> str:
        res = self.lab.capture(self.name, ["sh", "-c", script])
        if check:
            assert res.returncode == 0, res.stderr
        return res.stdout

    def run(
        self,
        roles: list[str],
        *,
        check: bool,
        extra_vars: dict | None = None,
        roles_dir: Path = ROLES_DIR,
        redactor: Redactor | None = None,
        inventory: Inventory | None = None,
    ) -> Outcome:
        redactor = redactor or Redactor()
        inventory = inventory or self.inventory
        sink = ListSink()
        # a few hosts at a time: the pseudo-hosts of a table all live on one node (sshd MaxStartups)
        runner = Runner(
            inventory,
            RunOptions(
                check=check,
                extra_vars=extra_vars or {},
                forks=6,
                connect=ConnectOptions(connect_timeout=20, connect_retries=2),
            ),
            sink,
            roles_dir=roles_dir,
            templates_dir=TEMPLATES_DIR,
            redactor=redactor,
            base_vars=cluster_vars(inventory, redactor),
        )
        try:
            report = runner.run([Play(role=r, hosts="all") for r in roles])
        finally:
            runner.close()
        return Outcome(report, sink)

    def sshd_pids(self) -> list[int]:
        """The node's sshd processes, seen from this machine (their cgroup names the lab and the node)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                comm = (proc / "comm").read_text().strip()
                cgroup = (proc / "cgroup").read_text()
            except OSError:
                continue
            if comm == "sshd" and f"/{self.name}/" in cgroup and f"kprov-{self.lab.name}" in cgroup:
                pids.append(int(proc.name))
        return pids


@pytest.fixture(scope="module")
def node(lab_factory) -> SecurityNode:
    n = SecurityNode(lab_factory(LAB, 1))
    n.lab.capture(n.name, ["systemctl", "is-system-running", "--wait"], timeout=180)
    return n


class ExecTrace:
    """`strace -f -e trace=execve` attached to the node's sshd: the argv of every process a run starts."""

    def __init__(self, pids: list[int], out: Path) -> None:
        if not shutil.which("strace"):
            pytest.skip("needs strace (apt-get install -y strace; scripts/setup installs it)")
        assert pids, "the node's sshd was not found"
        self.out = out
        argv = ["strace", "-f", "-qq", "-s", "65536", "-e", "trace=execve", "-e", "signal=none", "-o", str(out)]
        for pid in pids:
            argv += ["-p", str(pid)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # attached before the first connection
        assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else ""

    def stop(self) -> list[str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        # execve("/usr/bin/x", ["x", "a", ...], 0x... /* n vars */) = 0   (argv only, not the environment)
        return re.findall(r'execve\("[^"]*", (\[.*?\]), 0x', text)


@pytest.fixture()
def exec_trace(node, tmp_path) -> Iterator[ExecTrace]:
    trace = ExecTrace(node.sshd_pids(), tmp_path / "execve.trace")
    try:
        yield trace
    finally:
        if trace.proc.poll() is None:
            trace.stop()


def shaped(value: Any) -> Any:
    """HOSTILE in the shape the default has (a list stays a list, a mapping a mapping)."""
    if isinstance(value, list):
        return [HOSTILE]
    if isinstance(value, dict):
        return {HOSTILE: HOSTILE}
    return HOSTILE


def role_vars(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES_DIR / role / "defaults.yaml").read_text()) or {}


def pseudo_hosts(inventory: Inventory, role: str) -> tuple[Inventory, dict[str, str]]:
    """One inventory host per variable of the role, all on the lab node, each with that one variable
    hostile (a host var): a role's whole table in one run, its hosts side by side."""
    base = inventory.hosts[0]
    hosts, which = [], {}
    for i, (var, default) in enumerate(role_vars(role).items()):
        name = f"{LAB}-{role.replace('_', '')[:6]}-{i}"
        hosts.append(dataclasses.replace(base, name=name, vars={**base.vars, var: shaped(default)}))
        which[name] = var
    return dataclasses.replace(inventory, hosts=tuple(hosts)), which


def test_hostile_values_through_every_role_variable_never_run(node, exec_trace, capsys):
    node.sh(f"rm -f {CANARY}")
    redactor = Redactor()
    runs: dict[str, int] = {"plan": 0, "apply": 0}
    ended: dict[str, int] = {"data": 0, "failed on the host": 0, "bad input": 0}
    took: dict[str, float] = {}
    for role in ROLES:
        t0 = time.monotonic()
        inventory, which = pseudo_hosts(node.inventory, role)
        for check in [True, False] if role in APPLIED else [True]:
            try:
                out = node.run([role], check=check, redactor=redactor, inventory=inventory)
            except KprovError as exc:
                assert exc.exit_status == 2, f"{role}: {exc.message}"
                ended["bad input"] += len(which)
            else:
                failed = {e.host for e in out.sink.events if e.status in (Status.FAILED, Status.UNREACHABLE)}
                ended["failed on the host"] += len(failed)
                ended["data"] += len(which) - len(failed)
            runs["plan" if check else "apply"] += len(which)
            assert node.sh(f"test -e {CANARY} && echo PWNED || true").strip() == "", (
                f"a hostile {role} variable ran on the node ({'plan' if check else 'apply'})"
            )
        took[role] = time.monotonic() - t0
    # every process started on the node during those runs: no `touch` of the canary, no secret in argv
    argvs = exec_trace.stop()
    touched = [a for a in argvs if a.startswith(f'["touch", "{CANARY}"')]
    assert touched == [], f"hostile values ran: {touched[:3]}"
    secrets = list(redactor._values)
    assert secrets, "the run had no secret to look for"
    assert [a for a in argvs for s in secrets if s in a] == []
    labkit.figure(
        f"\n[security] hostile input: {runs['plan']} role variables in plan and {runs['apply']} in apply, each "
        f"set to a value that breaks out of every shell quoting context: {ended['data']} handled as data, "
        f"{ended['failed on the host']} refused or failed on their host, {ended['bad input']} refused as bad input, "
        f"0 executed; {len(argvs)} argvs traced on the node, no secret in any; seconds per role: "
        + ", ".join(f"{r} {t:.0f}" for r, t in took.items())
    )


def test_certificate_key_never_in_argv_of_the_upload_task(node, exec_trace, tmp_path):
    """The real join task that uploads the control-plane certificates, run on the node: its processes'
    argv (kubeadm's included) never holds the key; the key reached a file instead."""
    tasks = yaml.safe_load((ROLES_DIR / "join" / "tasks.yaml").read_text())
    (task,) = [t for t in tasks if "upload control-plane certificates" in t["name"]]
    task = {k: v for k, v in task.items() if k not in ("delegate_to", "when")}
    # kubeadm stand-in: keeps what it was given (argv, and the --config file's content) for the test
    node.sh(
        "mkdir -p /usr/local/sbin && cat > /usr/local/sbin/kubeadm <<'EOF'\n#!/bin/sh\n"
        "printf '%s\\n' \"$*\" > /run/kubeadm-argv\n"
        'while [ $# -gt 0 ]; do [ "$1" = --config ] && cp "$2" /run/kubeadm-config; shift; done\nEOF\n'
        "chmod 755 /usr/local/sbin/kubeadm; rm -f /run/kubeadm-argv /run/kubeadm-config"
    )
    roles = tmp_path / "roles"
    (roles / "upload_certs").mkdir(parents=True)
    (roles / "upload_certs" / "tasks.yaml").write_text(yaml.safe_dump([task]))
    redactor = Redactor()
    try:
        out = node.run(["upload_certs"], check=False, roles_dir=roles, redactor=redactor)
    finally:
        argvs = exec_trace.stop()
    assert out.exit_status == 0, [(e.task, e.msg) for e in out.sink.events]
    (key,) = [s for s in redactor._values if re.fullmatch(r"[0-9a-f]{64}", s)]
    kubeadm_argv = node.sh("cat /run/kubeadm-argv")
    assert kubeadm_argv.startswith("init phase upload-certs --upload-certs --config /etc/kubernetes/kprov/")
    assert key not in kubeadm_argv
    assert f'certificateKey: "{key}"' in node.sh("cat /run/kubeadm-config")
    assert node.sh("ls -A /etc/kubernetes/kprov").strip() == "", "the key file was not removed"
    assert any('"kubeadm", "init", "phase", "upload-certs"' in a for a in argvs), "kubeadm was not traced"
    assert [a for a in argvs if key in a] == []
    node.sh("rm -f /usr/local/sbin/kubeadm /run/kubeadm-argv /run/kubeadm-config")


RESET_SETUP = r"""
set -e
ip link add cni0 type bridge 2>/dev/null || true
ip link add vethkp1 type veth peer name vethkp1p
ip link set vethkp1 master cni0
ip link add vethdock1 type veth peer name vethdock1p
for t in iptables; do
  $t -t nat -N CNI-aaa111
  $t -t nat -A CNI-aaa111 -d 10.244.1.0/24 -m comment --comment 'name: "kprov-pods" id: "abc"' -j ACCEPT
  $t -t nat -A POSTROUTING -s 10.244.1.5/32 -m comment --comment 'name: "kprov-pods" id: "abc"' -j CNI-aaa111
  $t -t nat -N CNI-bbb222
  $t -t nat -A CNI-bbb222 -d 10.88.0.0/16 -m comment --comment 'name: "podman" id: "def"' -j ACCEPT
  $t -t nat -A POSTROUTING -s 10.88.0.5/32 -m comment --comment 'name: "podman" id: "def"' -j CNI-bbb222
  $t -t filter -N KUBE-KPROV-TEST
done
"""
RESET_PROBE = (
    "for l in cni0 vethkp1 vethkp1p vethdock1 vethdock1p; do ip link show $l >/dev/null 2>&1 && echo $l; done; "
    "iptables-save | grep -oE '^:(CNI|KUBE)-[A-Za-z0-9-]+' | sort"
)


def test_reset_removes_only_what_kubernetes_and_its_cni_created(node):
    node.sh(
        "ip link del vethdock1 2>/dev/null; ip link del vethkp1 2>/dev/null; ip link del cni0 2>/dev/null; "
        "iptables-save | grep -qE 'CNI-|KUBE-' && iptables-save | grep -vE 'CNI-|KUBE-' | iptables-restore; true"
    )
    node.sh(RESET_SETUP)
    try:
        out = node.run(["reset"], check=False)
        assert out.exit_status == 0, [(e.task, e.msg, e.stderr_tail) for e in out.sink.events]
        left = node.sh(RESET_PROBE).split()
        assert left == ["vethdock1", "vethdock1p", ":CNI-bbb222"]
        assert node.run(["reset"], check=False).changed() == 0
    finally:
        node.sh(
            "ip link del vethdock1 2>/dev/null; iptables -t nat -D POSTROUTING -s 10.88.0.5/32 -m comment "
            '--comment \'name: "podman" id: "def"\' -j CNI-bbb222; iptables -t nat -F CNI-bbb222; '
            "iptables -t nat -X CNI-bbb222; true",
            check=False,
        )


def test_failed_key_download_leaves_no_keyring_and_an_empty_keyring_counts_as_missing(node, tmp_path):
    roles = tmp_path / "roles"
    (roles / "keyring").mkdir(parents=True)
    (roles / "keyring" / "tasks.yaml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "keyring | repository",
                    "apt_repository": {
                        "name": "kprov-sec-test",
                        "uri": "http://127.0.0.1:9/debian",
                        "suites": "bookworm",
                        "key_url": "{{ key_url }}",
                    },
                }
            ]
        )
    )
    kr = "/etc/apt/keyrings/kprov-sec-test.gpg"
    src = "/etc/apt/sources.list.d/kprov-sec-test.sources"
    node.sh(f"rm -f {kr} {src}; mkdir -p /srv/k; : > /srv/k/empty.asc; echo 'not a key' > /srv/k/junk.asc")
    try:
        for url in ["file:///srv/k/missing.asc", "file:///srv/k/empty.asc", "file:///srv/k/junk.asc"]:
            out = node.run(["keyring"], check=False, extra_vars={"key_url": url}, roles_dir=roles)
            assert out.exit_status != 0, url
            assert node.sh(f"ls -A /etc/apt/keyrings; test -e {src} && echo {src} || true").strip() == "", url
        node.sh(f"mkdir -p /etc/apt/keyrings; : > {kr}")
        plan = node.run(["keyring"], check=True, extra_vars={"key_url": "file:///srv/k/missing.asc"}, roles_dir=roles)
        (ev,) = [e for e in plan.sink.events if e.task == "keyring | repository"]
        assert ev.changed and "fetch key" in ev.msg, ev.msg
    finally:
        node.sh(f"rm -rf {kr} {src} /srv/k", check=False)


@pytest.mark.parametrize("where", ["-e", "host var"])
def test_python_escape_in_a_value_is_bad_input_before_anything_runs(node, where):
    escape = "{{ cycler.__init__.__globals__.os.getpid() }}"
    node.sh(f"rm -f {CANARY}")
    inventory = node.inventory
    extra = {"preflight_min_cpus_control_plane": escape} if where == "-e" else {}
    if where == "host var":
        h = inventory.hosts[0]
        inventory = dataclasses.replace(
            inventory, hosts=(dataclasses.replace(h, vars={**h.vars, "preflight_min_cpus_control_plane": escape}),)
        )
    with pytest.raises(KprovError) as err:
        node.run(["preflight"], check=True, extra_vars=extra, inventory=inventory)
    assert err.value.exit_status == 2
    assert "refused to render" in err.value.message and "unsafe" in err.value.message
