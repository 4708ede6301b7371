"""What `ssh` would do differently from kprov: ~/.ssh/config blocks that rewrite an inventory host.

kprov never reads ~/.ssh/config to connect (docs/security.md: the inventory is the whole truth about
how to reach a host). A user who tests with `ssh lab-1` may still reach another address, user, port or
jump host than kprov does; one note per such host says both. Reading the file only for this note runs
nothing and resolves nothing: `Match` blocks (which may `exec` commands) and CanonicalizeHostname
(DNS lookups) are left out before paramiko parses it, and an unreadable file is no note at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import paramiko

from provisioner.inventory.model import Host

#: the keys that change where `ssh` goes and as whom
ROUTE_KEYS = ("hostname", "user", "port", "proxyjump", "proxycommand")
#: a host name no Host block names: what it gets is what `Host *` blocks give every host
_NOBODY = "kprov-no-such-host.invalid"
_SECTION = re.compile(r"^\s*(host|match)\b", re.IGNORECASE)
_CANONICAL = re.compile(r"^\s*canonical", re.IGNORECASE)


def default_ssh_config() -> Path:
    return Path.home() / ".ssh" / "config"


def _safe_text(text: str) -> str:
    """The config without Match blocks and Canonical* lines: lookups then run no command and no DNS query."""
    kept, in_match = [], False
    for line in text.splitlines():
        section = _SECTION.match(line)
        if section:
            in_match = section.group(1).lower() == "match"
        if not in_match and not _CANONICAL.match(line):
            kept.append(line)
    return "\n".join(kept) + "\n"


def _load(path: Path) -> paramiko.SSHConfig | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return paramiko.SSHConfig.from_text(_safe_text(text))
    except Exception:  # a file kprov does not use must never stop a run
        return None


def _specific(config: paramiko.SSHConfig, name: str) -> dict[str, str]:
    """Route settings that Host blocks naming `name` give it beyond what `Host *` gives everyone."""
    try:
        found, everyone = config.lookup(name), config.lookup(_NOBODY)
    except Exception:  # e.g. an unknown %token: no note rather than no run
        return {}
    out = {}
    for key in ROUTE_KEYS:
        value = found.get(key)
        if key == "hostname":
            if value and value != name:
                out[key] = value
        elif value is not None and value != everyone.get(key):
            out[key] = str(value)
    return out


def _kprov_target(host: Host) -> str:
    target = f"{host.user}@{host.address}:{host.port}"
    if host.bastion is not None:
        b = host.bastion
        target += f" via bastion {b.user}@{b.address}:{b.port}"
    return target


def ssh_config_notes(hosts: Iterable[Host], path: Path | None = None) -> list[str]:
    """One line per inventory host that ~/.ssh/config would send elsewhere than kprov goes."""
    config = _load(path or default_ssh_config())
    if config is None:
        return []
    notes = []
    for host in hosts:
        for name in dict.fromkeys((host.name, host.address)):
            rewrite = _specific(config, name)
            if not rewrite:
                continue
            user = rewrite.get("user", host.user)
            port = int(rewrite.get("port", host.port))
            ssh_target = f"{user}@{rewrite.get('hostname', name)}:{port}"
            if "proxyjump" in rewrite:
                ssh_target += f" via ProxyJump {rewrite['proxyjump']}"
            elif "proxycommand" in rewrite:
                ssh_target += " via its ProxyCommand"
            if ssh_target == _kprov_target(host):
                continue
            notes.append(
                f"{path or '~/.ssh/config'} rewrites {name!r} for ssh (`ssh {name}` would go to {ssh_target}); "
                f"kprov does not read it and connects to {host.name} at {_kprov_target(host)}, "
                "as the inventory says"
            )
            break
    return notes
