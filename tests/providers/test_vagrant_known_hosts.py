"""Vagrant: one known_hosts file per Vagrant project (issue 15), against real sshd hosts.

The netns sshd hosts play the VMs: a `vagrant` stand-in on PATH prints their ssh-config, the project's
`.vagrant/machines/NAME/libvirt/id` files are their machine ids, and "vagrant destroy + up" is a new
host key (sshd re-reads it on SIGHUP) with a new machine id. kprov connects with its real transport,
strict host-key checking, and an empty KPROV_HOME (no trust on first use anywhere)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from provisioner.errors import HostKeyError
from provisioner.inventory.loader import load_inventory
from provisioner.providers import vagrant as provider
from provisioner.transport.ssh import ConnectOptions, SSHHost
from tests.providers import conftest

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
VMS = ("cp-1", "worker-1")
FAKE_VAGRANT = """#!/bin/sh
case "$1" in
  ssh-config) cat "$FAKE_VAGRANT_SSH_CONFIG" ;;
  *) echo "unexpected: $*" >&2; exit 9 ;;
esac
"""


@pytest.fixture
def project(netns_fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Vagrant project whose VMs cp-1 and worker-1 are the first two netns hosts."""
    network = ipaddress.ip_network(f"{netns_fleet.subnet}.0/24")
    conftest.LAB_NETWORKS.append(network)
    directory = tmp_path / "lab" / "vagrant"
    directory.mkdir(parents=True)
    shutil.copy(REPO / "vagrant" / "Vagrantfile", directory / "Vagrantfile")
    shutil.copy(REPO / "vagrant" / "settings.yaml", directory / "settings.yaml")
    config = "".join(
        f"Host {vm}\n  HostName {h.address}\n  User root\n  Port 22\n  IdentityFile {netns_fleet.key}\n"
        "  UserKnownHostsFile /dev/null\n  StrictHostKeyChecking no\n"
        for vm, h in zip(VMS, netns_fleet.hosts[:2], strict=True)
    )
    (tmp_path / "ssh-config").write_text(config)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vagrant").write_text(FAKE_VAGRANT)
    (bin_dir / "vagrant").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VAGRANT_SSH_CONFIG", str(tmp_path / "ssh-config"))
    monkeypatch.setenv("KPROV_HOME", str(tmp_path / "kprov-home"))
    for vm in VMS:
        set_machine_id(directory, vm, f"{vm}-first")
    inventory = tmp_path / "lab" / "inventories" / "vagrant.yaml"
    inventory.parent.mkdir()
    inventory.write_text(
        yaml.safe_dump({"provider": "vagrant", "cluster": {"name": "uvag"}, "vagrant": {"dir": "../vagrant"}})
    )
    try:
        yield directory, inventory
    finally:
        conftest.LAB_NETWORKS.remove(network)


def set_machine_id(directory: Path, vm: str, value: str) -> None:
    path = directory / ".vagrant" / "machines" / vm / "libvirt" / "id"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value)


def serve_key(netns_fleet, index: int, key: Path) -> None:
    """Make host `index` present the host key `key` (sshd re-reads its keys on SIGHUP); wait until it does."""
    host = netns_fleet.hosts[index]
    hdir = netns_fleet.workdir / host.name
    shutil.copy(key, hdir / "host_key")
    shutil.copy(key.with_suffix(".pub"), hdir / "host_key.pub")
    os.kill(host.pid, signal.SIGHUP)
    wanted = key.with_suffix(".pub").read_text().split()[1]
    deadline = time.monotonic() + 30  # a guard, not a speed assertion
    while True:
        try:
            if provider.scan_host_key(host.address, 22, timeout=2)[1] == wanted:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{host.name} does not serve the new key"
        time.sleep(0.2)


def hostname_over_ssh(inventory: Path, vm: str) -> str:
    """Connect to `vm` with kprov's transport (strict host keys) and run `hostname`."""
    (host,) = [h for h in load_inventory(inventory).hosts if h.name == vm]
    # retries: sshd re-executes itself on SIGHUP, and on a loaded machine its listener can be gone for a moment
    ssh = SSHHost(host, ConnectOptions(connect_timeout=5, connect_retries=2))
    try:
        return ssh.run(["hostname"]).stdout.strip()
    finally:
        ssh.close()


@pytest.mark.parametrize("case", ["unchanged", "recreated", "new key on the same VM"])
def test_project_known_hosts_follow_the_vms(netns_fleet, project, tmp_path: Path, case: str) -> None:
    directory, inventory = project
    known = directory / ".vagrant" / "kprov_known_hosts"
    # first resolve: every VM's key is read into the project's file, tagged with its machine id
    assert hostname_over_ssh(inventory, "cp-1") == netns_fleet.hosts[0].name
    first = known.read_text()
    assert [line.split()[0] for line in first.splitlines()] == [h.address for h in netns_fleet.hosts[:2]]
    assert all(
        line.split()[3] == f"kprov-vagrant:{vm}:{vm}-first" for vm, line in zip(VMS, first.splitlines(), strict=True)
    )
    assert oct(known.stat().st_mode & 0o777) == "0o600"

    hdir = netns_fleet.workdir / netns_fleet.hosts[0].name
    original = tmp_path / "orig_host_key"
    shutil.copy(hdir / "host_key", original)
    shutil.copy(hdir / "host_key.pub", original.with_suffix(".pub"))
    try:
        if case != "unchanged":
            new = tmp_path / "new_host_key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(new)], check=True)
            serve_key(netns_fleet, 0, new)
        if case == "recreated":
            set_machine_id(directory, "cp-1", "cp-1-second")
            assert hostname_over_ssh(inventory, "cp-1") == netns_fleet.hosts[0].name
            lines = known.read_text().splitlines()
            assert lines[0] == first.splitlines()[1]  # worker-1 untouched
            assert lines[1].split()[2] == new.with_suffix(".pub").read_text().split()[1]
            assert lines[1].split()[3] == "kprov-vagrant:cp-1:cp-1-second"
            assert len(lines) == 2
        elif case == "new key on the same VM":
            # same machine id, another key: kprov refuses, as it must
            with pytest.raises(HostKeyError, match="CHANGED"):
                hostname_over_ssh(inventory, "cp-1")
            assert known.read_text() == first
        else:
            assert hostname_over_ssh(inventory, "worker-1") == netns_fleet.hosts[1].name
            assert known.read_text() == first
    finally:
        serve_key(netns_fleet, 0, original)
