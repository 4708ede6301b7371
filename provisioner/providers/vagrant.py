"""Vagrant VMs as a host provider: `vagrant ssh-config` for connections, the private network for node_ip.

A Vagrant VM has (at least) two NICs: the NAT one, whose address is 10.0.2.15 on *every* VM, and the
private network. Kubernetes must use the private address, or every node advertises 10.0.2.15 (the
classic Vagrant multi-NIC bug). node_ip comes from vagrant/settings.yaml (prefix + index, the same
computation as the Vagrantfile) or, with `vagrant.node_ip: query`, from `ip addr` on the VM.

Host keys: every VM's key is kept in a known_hosts file of the Vagrant project
(`.vagrant/kprov_known_hosts`), each line tagged with the VM's name and Vagrant machine id. A VM that
`vagrant destroy` + `vagrant up` re-created has a new machine id: its old key is dropped and the new one
read, so the same 127.0.0.1:2222 with a new key is not a "host key changed" error. A key that changes
while the machine id stays the same still is one.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from provisioner.atomic import write_file
from provisioner.errors import InventoryError, PrerequisiteMissing
from provisioner.inventory.check import Check
from provisioner.inventory.yamlsource import load_yaml_file
from provisioner.providers._common import SectionChecker, resolve_path

__all__ = [
    "KNOWN_HOSTS",
    "Machine",
    "SshEntry",
    "VagrantSettings",
    "load_settings",
    "machine_id",
    "machines",
    "parse_ip_addr",
    "parse_ssh_config",
    "refresh_known_hosts",
    "resolve_hosts",
    "scan_host_key",
    "select_node_ip",
    "validate_section",
]

log = logging.getLogger(__name__)

HINT = "see docs/vagrant.md for the vagrant: section"
SECTION_KEYS = ("dir", "settings", "node_ip")
NAT_NETWORK = ipaddress.IPv4Network("10.0.2.0/24")  # VirtualBox NAT (guest is always 10.0.2.15)
PREFIX_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
COMMAND_TIMEOUT = 120
#: the project's known_hosts file, relative to the directory of the Vagrantfile
KNOWN_HOSTS = Path(".vagrant") / "kprov_known_hosts"
#: how long reading a VM's host key may take
SCAN_TIMEOUT = 10.0
_TAG = "kprov-vagrant"


@dataclass(frozen=True)
class Machine:
    """A VM the Vagrantfile defines: name, role, private IP, size."""

    name: str
    role: str
    ip: str
    cpus: int
    memory: int


@dataclass(frozen=True)
class VagrantSettings:
    cluster_name: str
    kubernetes_version: str
    box: str
    provider: str
    control_planes: int
    workers: int
    control_plane_size: tuple[int, int]  # (cpus, memory MiB)
    worker_size: tuple[int, int]
    prefix: str
    first_ip: int


@dataclass(frozen=True)
class SshEntry:
    """One `Host` block of `vagrant ssh-config`."""

    name: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]


# --------------------------------------------------------------------------- settings.yaml

SETTINGS_HINT = "see the comments in vagrant/settings.yaml"


def load_settings(path: Path) -> VagrantSettings:
    """Read and check vagrant/settings.yaml (defaults as in the Vagrantfile); errors name file:line and key."""
    if not path.is_file():
        raise InventoryError(
            f"{path}: no such Vagrant settings file",
            hint="set vagrant.dir to the directory holding Vagrantfile and settings.yaml",
        )
    doc = load_yaml_file(
        path, "Vagrant settings", "set vagrant.dir to the directory holding Vagrantfile and settings.yaml"
    )
    if doc.data is None:
        doc.data = {}
    check = Check(doc)
    # keys it does not know are left alone: the Vagrantfile reads more (box_version, libvirt.driver)
    raw = check.expect(doc.data, dict, "", SETTINGS_HINT)

    def size(role: str) -> tuple[int, int]:
        node = check.expect(raw.get(role) or {}, dict, role, "a mapping {cpus, memory}")
        return (
            check.integer(node.get("cpus", 2), f"{role}.cpus", 1, 64, SETTINGS_HINT),
            check.integer(node.get("memory", 2048), f"{role}.memory", 512, 1048576, SETTINGS_HINT),
        )

    network = check.expect(raw.get("network") or {}, dict, "network", "a mapping {prefix, first_ip}")
    prefix = str(network.get("prefix", "192.168.56"))
    match = PREFIX_RE.match(prefix)
    if not match or any(int(octet) > 255 for octet in match.groups()):
        raise check.error("network.prefix", f"expected three octets such as 192.168.56, got {prefix!r}", SETTINGS_HINT)
    provider = raw.get("provider", "virtualbox")
    if provider not in ("virtualbox", "libvirt"):
        raise check.error("provider", f"expected virtualbox or libvirt, got {provider!r}", SETTINGS_HINT)
    settings = VagrantSettings(
        cluster_name=str(raw.get("cluster_name", "vagrant")),
        kubernetes_version=str(raw.get("kubernetes_version", "1.31.2")),
        box=str(raw.get("box", "debian/bookworm64")),
        provider=provider,
        control_planes=check.integer(raw.get("control_planes", 1), "control_planes", 1, 50, SETTINGS_HINT),
        workers=check.integer(raw.get("workers", 2), "workers", 0, 200, SETTINGS_HINT),
        control_plane_size=size("control_plane"),
        worker_size=size("worker"),
        prefix=prefix,
        first_ip=check.integer(network.get("first_ip", 10), "network.first_ip", 1, 254, SETTINGS_HINT),
    )
    if settings.first_ip + settings.control_planes + settings.workers - 1 > 254:
        raise check.error("network.first_ip", "too many machines for the /24 from first_ip", SETTINGS_HINT)
    return settings


def machines(settings: VagrantSettings) -> list[Machine]:
    """The VMs the Vagrantfile defines, in its order (control planes first), with their private IPs."""
    out: list[Machine] = []
    for infix, role, count, (cpus, memory) in (
        ("cp", "control_plane", settings.control_planes, settings.control_plane_size),
        ("worker", "worker", settings.workers, settings.worker_size),
    ):
        for i in range(1, count + 1):
            ip = f"{settings.prefix}.{settings.first_ip + len(out)}"
            out.append(Machine(f"{infix}-{i}", role, ip, cpus, memory))
    return out


# --------------------------------------------------------------------------- parsers (pure)


def parse_ssh_config(text: str) -> list[SshEntry]:
    """Parse `vagrant ssh-config` output into one entry per Host, in the order given.

    paramiko.SSHConfig does the parsing (OpenSSH syntax: `key value` or `key=value`, any key case,
    quotes, `Host *` defaults merged in), so it reads the file the way ssh itself would."""
    config = paramiko.SSHConfig.from_text(text)
    names: list[str] = []
    for match in re.finditer(r"(?im)^[ \t]*host(?:[ \t]*=[ \t]*|[ \t]+)(.+)$", text):
        for name in match.group(1).split():
            name = _unquote(name)
            if not any(c in name for c in "*?!") and name not in names:
                names.append(name)
    entries = []
    for name in names:
        found = config.lookup(name)
        entries.append(
            SshEntry(
                name=name,
                hostname=found.get("hostname", name),
                port=int(found.get("port", 22)),
                user=found.get("user", "vagrant"),
                identity_files=tuple(found.get("identityfile", [])),
            )
        )
    return entries


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_ip_addr(text: str) -> list[tuple[str, str]]:
    """(interface, IPv4 address) pairs from `ip -4 -o addr show` output."""
    pairs = []
    for line in text.splitlines():
        match = re.match(r"^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+\.\d+)/\d+", line.strip())
        if match:
            pairs.append((match.group(1), match.group(2)))
    return pairs


def select_node_ip(addresses: list[str], *, expected: str | None = None, ssh_address: str | None = None) -> str | None:
    """The address Kubernetes should use: the expected private IP if the VM has it, else the first
    address that is not loopback, link-local, the NAT 10.0.2.x or the (libvirt) management address."""
    if expected is not None:
        return expected if expected in addresses else None
    candidates = []
    for text in addresses:
        try:
            ip = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip in NAT_NETWORK:
            continue
        candidates.append(text)
    preferred = [c for c in candidates if c != ssh_address]
    chosen = preferred or candidates
    return chosen[0] if chosen else None


# --------------------------------------------------------------------------- provider contract


def validate_section(section: dict, where: str = "vagrant", located: Check | None = None) -> None:
    """Check the raw `vagrant:` mapping; raise InventoryError naming the first bad key path (file:line with `located`)."""
    check = SectionChecker(section, where, SECTION_KEYS, HINT, located)
    check.string("dir")
    check.string("settings")
    check.string("node_ip", choices=("settings", "query"))


def vagrant_dir(section: Mapping[str, Any], inventory: Mapping[str, Any]) -> Path:
    """`vagrant.dir`, relative to the inventory file (default: vagrant/ next to it)."""
    return resolve_path(section.get("dir") or "vagrant", inventory)


def resolve_hosts(section: dict, inventory: dict) -> list[dict]:
    """Hosts of `provider: vagrant`: `vagrant ssh-config` + node_ip from settings (or the VM)."""
    validate_section(section, "vagrant")
    directory = vagrant_dir(section, inventory)
    return hosts_for_dir(
        directory, settings_file=section.get("settings"), node_ip_mode=section.get("node_ip", "settings")
    )


def hosts_for_dir(directory: Path, *, settings_file: str | None = None, node_ip_mode: str = "settings") -> list[dict]:
    """Raw host dicts for the VMs of the Vagrant project in `directory`."""
    if not (directory / "Vagrantfile").is_file():
        raise InventoryError(
            f"{directory}: no Vagrantfile there",
            hint="set vagrant.dir (relative to the inventory) to the directory with the Vagrantfile",
        )
    settings_path = directory / (settings_file or "settings.yaml")
    by_name = {m.name: m for m in machines(load_settings(settings_path))} if settings_path.is_file() else {}
    entries = parse_ssh_config(run_vagrant(directory, ["ssh-config"]))
    if not entries:
        raise InventoryError(
            f"{directory}: `vagrant ssh-config` listed no machines", hint="run `vagrant up` there first"
        )
    known_hosts = refresh_known_hosts(directory, entries)
    hosts = []
    for entry in entries:
        machine = by_name.get(entry.name)
        if machine is None:
            log.warning("%s is not described by %s: role guessed from its name", entry.name, settings_path)
        expected = machine.ip if machine else None
        if node_ip_mode == "query" or expected is None:
            node_ip = _query_node_ip(directory, entry, expected)
        else:
            node_ip = expected
        host = host_dict(entry, node_ip, machine.role if machine else _role_from_name(entry.name))
        host["known_hosts"] = str(known_hosts)
        hosts.append(host)
    return sorted(hosts, key=lambda h: (h["roles"] != ["control_plane"], _natural(h["name"])))


def host_dict(entry: SshEntry, node_ip: str, role: str) -> dict[str, Any]:
    """A raw `hosts:` entry (docs/inventory.md schema) for one VM."""
    host: dict[str, Any] = {
        "name": entry.name,
        "address": entry.hostname,
        "port": entry.port,
        "user": entry.user,
        "become": entry.user != "root",
        "node_ip": node_ip,
        "roles": [role],
        "labels": {},
    }
    if entry.identity_files:
        host["ssh_key"] = entry.identity_files[0]
    return host


# --------------------------------------------------------------------------- host keys


def machine_id(directory: Path, name: str) -> str | None:
    """The Vagrant machine id of VM `name` (`.vagrant/machines/NAME/PROVIDER/id`); a re-created VM has a new one."""
    for id_file in sorted((directory / ".vagrant" / "machines" / name).glob("*/id")):
        try:
            value = id_file.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if value:
            return value
    return None


def scan_host_key(address: str, port: int, timeout: float = SCAN_TIMEOUT) -> tuple[str, str]:
    """(key type, base64) of the host key an sshd presents: the key exchange only, no login."""
    sock = socket.create_connection((address, port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return key.get_name(), key.get_base64()
    finally:
        transport.close()
        sock.close()


def _known_host_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def refresh_known_hosts(
    directory: Path, entries: list[SshEntry], scan: Callable[[str, int], tuple[str, str]] | None = None
) -> Path:
    """Bring the project's known_hosts up to date with its VMs and return its path.

    A VM keeps its recorded key while its machine id is unchanged (a changed key then stays an error
    when kprov connects). A VM without a key for its current machine id (new, or re-created) has its
    old lines dropped and its key read now. A VM whose key cannot be read (not running) is left out:
    the run reports that host unreachable."""
    path = directory / KNOWN_HOSTS
    scan = scan or scan_host_key
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        lines = []
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(
            f"{path}: cannot read: {exc}", hint="delete the file: kprov reads the keys again"
        ) from None
    kept = list(lines)
    for entry in entries:
        name = _known_host_name(entry.hostname, entry.port)
        tag = f"{_TAG}:{entry.name}:{machine_id(directory, entry.name) or '-'}"
        mine = [
            line for line in kept if line.split()[:1] == [name] or _line_tag(line).startswith(f"{_TAG}:{entry.name}:")
        ]
        if mine and all(_line_tag(line) == tag and line.split()[0] == name for line in mine):
            continue
        kept = [line for line in kept if line not in mine]
        try:
            key_type, key = scan(entry.hostname, entry.port)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            log.warning("cannot read the host key of %s at %s: %s", entry.name, name, exc)
            continue
        kept.append(f"{name} {key_type} {key} {tag}")
    if kept != lines:
        _write_private(path, "".join(f"{line}\n" for line in kept))
    return path


def _line_tag(line: str) -> str:
    fields = line.split()
    return fields[3] if len(fields) > 3 else ""


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only."""
    write_file(path, text.encode("ascii"), 0o600)


def _role_from_name(name: str) -> str:
    return "control_plane" if re.match(r"^(cp|control|master)", name) else "worker"


def _natural(name: str) -> tuple[str, int]:
    match = re.search(r"(\d+)$", name)
    return (name.rstrip("0123456789"), int(match.group(1)) if match else 0)


def _query_node_ip(directory: Path, entry: SshEntry, expected: str | None) -> str:
    output = run_vagrant(directory, ["ssh", entry.name, "-c", "ip -4 -o addr show"])
    addresses = [ip for _, ip in parse_ip_addr(output)]
    node_ip = select_node_ip(addresses, expected=expected, ssh_address=entry.hostname)
    if node_ip is None:
        wanted = f"the private network address {expected}" if expected else "a private network address"
        raise InventoryError(
            f"VM {entry.name} does not have {wanted} (it has: {', '.join(addresses) or 'none'})",
            hint="check the private_network line of the Vagrantfile and run `vagrant reload` for that VM",
        )
    return node_ip


def run_vagrant(directory: Path, args: list[str]) -> str:
    """Run `vagrant ARGS` in `directory`; return stdout or raise a readable error."""
    binary = shutil.which("vagrant")
    if binary is None:
        raise PrerequisiteMissing(
            "vagrant is not installed (needed for provider: vagrant)",
            hint="install Vagrant (e.g. apt install vagrant) or write a static inventory",
        )
    argv = [binary, *args]
    try:
        proc = subprocess.run(argv, cwd=directory, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise InventoryError(
            f"`{shlex.join(['vagrant', *args])}` timed out after {COMMAND_TIMEOUT}s in {directory}"
        ) from None
    if proc.returncode != 0:
        raise InventoryError(
            f"`{shlex.join(['vagrant', *args])}` failed in {directory} (exit {proc.returncode})",
            hint="are the VMs up? run `vagrant status` / `vagrant up` in that directory",
            detail=(proc.stderr or proc.stdout).strip()[-2000:] or None,
        )
    return proc.stdout


class VagrantProvider:
    """`provider: vagrant` (providers/base.py): the VMs of a Vagrant project."""

    name = "vagrant"

    def validate_section(self, section: Mapping[str, Any], where: str, check: Check) -> None:
        validate_section(dict(section), where, check)

    def resolve_hosts(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
        return resolve_hosts(dict(section), dict(inventory))

    def connection_defaults(self, section: Mapping[str, Any]) -> dict[str, Any]:
        return {}  # ssh-config gives each host its own user, port and key

    def resolve_endpoint(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> str | None:
        return None


PROVIDER = VagrantProvider()
