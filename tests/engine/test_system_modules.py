"""System modules (package, service, sysctl, kernel_module, swap, apt_repository) on a real
systemd-nspawn Debian node of the lab: plan changes nothing, apply converges, a rerun changes nothing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from provisioner.engine.events import Status
from provisioner.engine.roles import Play
from provisioner.engine.runner import Runner, RunOptions
from provisioner.inventory.loader import load_inventory
from provisioner.transport.ssh import ConnectOptions
from tests.engine.conftest import ROLES, TEMPLATES, ListSink, Outcome

pytestmark = pytest.mark.lab
LAB = f"km{os.getpid() % 100000}"  # this session's own lab: other sessions' and suites' labs are left alone


class LabNode:
    def __init__(self, lab) -> None:
        self.lab = lab
        self.inventory = load_inventory(lab.inventory_path)
        self.name = self.inventory.hosts[0].name
        self.gateway = self.inventory.hosts[0].address.rsplit(".", 1)[0] + ".1"

    def sh(self, script: str) -> str:
        res = self.lab.capture(self.name, ["sh", "-c", script])
        assert res.returncode == 0, res.stderr
        return res.stdout

    def run(self, roles: list[str] | str, *, check: bool = False, extra_vars: dict | None = None) -> Outcome:
        sink = ListSink()
        runner = Runner(
            self.inventory,
            RunOptions(
                check=check, extra_vars=extra_vars or {}, connect=ConnectOptions(connect_timeout=10, connect_retries=1)
            ),
            sink,
            roles_dir=ROLES,
            templates_dir=TEMPLATES,
        )
        try:
            report = runner.run([Play(role=r, hosts="all") for r in ([roles] if isinstance(roles, str) else roles)])
        finally:
            runner.close()
        return Outcome(report, sink)


@pytest.fixture(scope="module")
def node(lab_factory) -> LabNode:
    n = LabNode(lab_factory(LAB, 1))
    # a node answers `ssh true` before its boot has finished; sshd can still be restarted then, which
    # drops connections and kills running commands: wait for the boot to settle
    n.lab.capture(n.name, ["systemctl", "is-system-running", "--wait"], timeout=120)
    return n


@pytest.fixture(scope="module")
def key_url(node):
    """The Debian archive key, ASCII-armored, served over HTTP on the lab bridge (nodes reach only it)."""
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "GNUPGHOME": d}
        armored = subprocess.run(
            [
                "gpg",
                "-q",
                "--no-default-keyring",
                "--keyring",
                "/usr/share/keyrings/debian-archive-keyring.gpg",
                "--export",
                "--armor",
            ],
            capture_output=True,
            check=True,
            env=env,
        ).stdout
        (Path(d) / "key.asc").write_bytes(armored)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d)
        handler.log_message = lambda *a: None  # type: ignore[attr-defined]
        server = http.server.ThreadingHTTPServer((node.gateway, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://{node.gateway}:{server.server_address[1]}/key.asc"
        finally:
            server.shutdown()
            server.server_close()


FSTAB_SWAP = "/swapfile none swap sw 0 0"

# role -> (setup script, probe script, probe output after apply)
CASES = {
    "sys_sysctl": (
        "rm -f /etc/sysctl.d/90-kprov-test.conf; sysctl -q -w net.ipv4.ip_forward=0 net.core.somaxconn=4096",
        "sysctl -n net.ipv4.ip_forward net.core.somaxconn; cat /etc/sysctl.d/90-kprov-test.conf 2>&1 || true",
        "1\n1024\n# managed by kprov\nnet.ipv4.ip_forward = 1\nnet.core.somaxconn = 1024\n",
    ),
    "sys_kmod": (
        "rm -f /etc/modules-load.d/kprov-test.conf",
        "cat /etc/modules-load.d/kprov-test.conf 2>/dev/null || echo none",
        "# managed by kprov\noverlay\nbr_netfilter\n",
    ),
    "sys_swap": (
        f"sed -i '/kprov-test-swap/d; /disabled by kprov/d' /etc/fstab; echo '{FSTAB_SWAP}  # kprov-test-swap' >> /etc/fstab",
        "grep -c 'kprov-test-swap' /etc/fstab; grep -c '^# .*kprov-test-swap.*disabled by kprov$' /etc/fstab || true",
        "1\n1\n",
    ),
    "sys_service": (
        "systemctl disable --now kprov-test.service 2>/dev/null; rm -f /etc/systemd/system/kprov-test.service; "
        "systemctl daemon-reload",
        "systemctl is-active kprov-test.service || true; systemctl is-enabled kprov-test.service 2>&1 || true",
        "active\nenabled\n",
    ),
    "sys_package": (
        "apt-mark unhold tree >/dev/null 2>&1; dpkg --purge tree >/dev/null 2>&1 || true",
        "dpkg-query -W -f='${db:Status-Abbrev}\\n' tree 2>/dev/null || echo none; apt-mark showhold",
        "hi \ntree\n",
    ),
    "sys_apt_repo": (
        "rm -f /etc/apt/sources.list.d/kprov-test.sources /etc/apt/keyrings/kprov-test.gpg",
        "cat /etc/apt/sources.list.d/kprov-test.sources 2>/dev/null || echo none; "
        "gpg --show-keys /etc/apt/keyrings/kprov-test.gpg 2>/dev/null | grep -c '^pub' || true",
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /etc/apt/keyrings/kprov-test.gpg\n{keys}\n",
    ),
}
# a second role that undoes the first one, and what the probe shows then
UNDO = {
    "sys_service": ("sys_service_stop", "inactive\ndisabled\n"),
    "sys_package": ("sys_package_absent", "none\n"),
    "sys_apt_repo": ("sys_apt_repo_absent", "none\n0\n"),
}


@pytest.mark.parametrize("role", list(CASES))
def test_system_module_plan_apply_rerun(node, key_url, role):
    setup, probe, expected = CASES[role]
    ev = {"key_url": key_url}
    node.sh(setup)
    before = node.sh(probe)

    plan = node.run(role, check=True, extra_vars=ev)
    assert plan.exit_status == 0, [e.msg for e in plan.sink.events]
    assert plan.changed() >= 1
    assert node.sh(probe) == before, "plan must not change the host"

    first = node.run(role, extra_vars=ev)
    assert first.exit_status == 0, [
        (e.task, e.msg, e.stderr_tail) for e in first.sink.events if e.status is Status.FAILED
    ]
    assert first.changed() >= 1
    if "{keys}" in expected:
        keys = node.sh("gpg --show-keys /usr/share/keyrings/debian-archive-keyring.gpg | grep -c '^pub'").strip()
        expected = expected.replace("{keys}", keys)
    assert node.sh(probe) == expected

    second = node.run(role, extra_vars=ev)
    assert second.exit_status == 0
    assert [(e.task, e.msg) for e in second.sink.events if e.changed] == []

    if role in UNDO:
        undo_role, undone = UNDO[role]
        undo = node.run(undo_role, extra_vars=ev)
        assert undo.exit_status == 0, [(e.task, e.msg, e.stderr_tail) for e in undo.sink.events]
        assert node.sh(probe) == undone
        assert node.run(undo_role, extra_vars=ev).changed() == 0


BECOME_SETUP = r"""
set -e
id kpuser >/dev/null 2>&1 || useradd -m -s /bin/sh kpuser
install -d -m 700 -o kpuser -g kpuser /home/kpuser/.ssh
install -m 600 -o kpuser -g kpuser /root/.ssh/authorized_keys /home/kpuser/.ssh/authorized_keys
echo 'kpuser ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/kpuser
chmod 440 /etc/sudoers.d/kpuser
rm -rf /etc/kprov-become-test /etc/kprov-become-who /root/kprov-upload
"""


@pytest.mark.parametrize("become", [True, False])
def test_become_runs_everything_through_sudo(node, tmp_path, become):
    if "no sudo" in node.sh("command -v sudo || echo no sudo"):
        pytest.skip("the lab image has no sudo")
    node.sh(BECOME_SETUP)
    path = tmp_path / "inv.yaml"
    doc = yaml.safe_load(node.lab.inventory_path.read_text())
    doc["hosts"][0].update(user="kpuser", become=become)
    path.write_text(yaml.safe_dump(doc))
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3 << 20))
    node.inventory, saved = load_inventory(path), node.inventory
    try:
        ev = {"upload_src": str(blob), "local_dir": str(tmp_path / "fetched")}
        out = node.run("sys_become", extra_vars=ev)
        if not become:
            assert out.exit_status == 1
            (failed,) = [e for e in out.sink.events if e.status is Status.FAILED]
            assert "Permission denied" in failed.stderr_tail
            return
        assert out.exit_status == 0, [(e.task, e.msg, e.stderr_tail) for e in out.sink.events]
        assert node.sh("stat -c '%U %a' /etc/kprov-become-test /root/kprov-upload/blob.bin") == "root 600\nroot 600\n"
        assert node.sh("cat /etc/kprov-become-who") == "root"
        assert (tmp_path / "fetched" / "become.txt").read_text() == f"written by {node.name}\n"
        assert (
            node.sh("sha256sum < /root/kprov-upload/blob.bin").split()[0]
            == hashlib.sha256(blob.read_bytes()).hexdigest()
        )
        assert node.run("sys_become", extra_vars=ev).changed() == 0
    finally:
        node.inventory = saved


def test_service_not_installed_yet(node):
    """plan on a fresh host: a package task before would install the unit, so plan reports; apply fails clearly."""
    plan = node.run("sys_service_missing", check=True)
    assert plan.exit_status == 0 and plan.changed() == 1
    out = node.run("sys_service_missing")
    assert out.exit_status == 1
    (ev,) = out.sink.events
    assert "unit kprov-not-installed.service not found on the host" in ev.stderr_tail
