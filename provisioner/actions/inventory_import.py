"""Convert an Ansible inventory (YAML, INI, or the JSON of `ansible-inventory --list`) to a kprov inventory.

Host variables: ansible_host -> address, ansible_user -> user, ansible_port -> port,
ansible_ssh_private_key_file -> ssh_key, ansible_become -> become. Kubespray's groups give the roles:
kube_control_plane (also the older kube-master / kube_master) -> control_plane, kube_node -> worker.
Other groups are kept as kprov groups (their members only; group variables are not translated).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import InputError

CONTROL_PLANE_GROUPS = ("kube_control_plane", "kube-master", "kube_master")
WORKER_GROUPS = ("kube_node", "kube-node")
SKIP_GROUPS = {"all", "ungrouped", "k8s_cluster", "k8s-cluster", *CONTROL_PLANE_GROUPS, *WORKER_GROUPS}
VAR_MAP = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_ssh_private_key_file": "ssh_key",
    "ansible_become": "become",
}
_NAME = re.compile(r"[^a-z0-9-]+")


@dataclass
class _Parsed:
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)  # direct members
    children: dict[str, list[str]] = field(default_factory=dict)
    groupvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def host(self, name: str, variables: dict[str, Any] | None = None) -> None:
        self.hostvars.setdefault(name, {}).update(variables or {})

    def members(self, group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        if group in seen:
            return []
        out = list(self.groups.get(group, []))
        for child in self.children.get(group, []):
            out.extend(h for h in self.members(child, seen | {group}) if h not in out)
        return out


def looks_like_ansible(text: str) -> bool:
    """An Ansible inventory rather than a kprov one (used to point `plan -i ansible.ini` at the importer)."""
    if re.search(r"^\s*\[[^\]]+\]\s*$", text, re.M) and "hosts:" not in text:
        return True
    if not (re.search(r"^all\s*:", text, re.M) or '"_meta"' in text):
        return False  # cheap: hostile or broken YAML is left to the inventory loader's bounded reader
    try:
        doc = yaml.safe_load(text)
    except Exception:
        return False
    if not isinstance(doc, dict):
        return False
    if "_meta" in doc:
        return True
    top = doc.get("all")
    return isinstance(top, dict) and bool({"hosts", "children", "vars"} & set(top)) and "cluster" not in doc


def parse(path: Path) -> _Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read {path}: {exc}", hint="give an Ansible inventory file (YAML, INI or JSON)"
        ) from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return _from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: invalid JSON: {exc}", hint="give the output of `ansible-inventory --list`"
            ) from None
    if re.search(r"^\s*\[[^\]]+\]\s*$", text, re.M):
        return _from_ini(text, path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {exc}", hint="an Ansible YAML inventory starts with `all:`") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not an Ansible inventory", hint="an Ansible YAML inventory starts with `all:`")
    parsed = _Parsed()
    for name, body in doc.items():
        _yaml_group(parsed, str(name), body)
    return parsed


def _yaml_group(parsed: _Parsed, name: str, body: Any) -> None:
    body = body or {}
    if not isinstance(body, dict):
        raise InputError(f"group {name}: expected a mapping with hosts/children/vars", hint="see Ansible's YAML format")
    for host, hvars in (body.get("hosts") or {}).items():
        parsed.host(str(host), hvars if isinstance(hvars, dict) else {})
        parsed.groups.setdefault(name, []).append(str(host))
    parsed.groupvars.setdefault(name, {}).update(body.get("vars") or {})
    for child, cbody in (body.get("children") or {}).items():
        parsed.children.setdefault(name, []).append(str(child))
        _yaml_group(parsed, str(child), cbody)


def _from_ini(text: str, path: Path) -> _Parsed:
    parsed = _Parsed()
    section, kind = "ungrouped", "hosts"
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.match(r"^\[([^\]:]+)(?::(\w+))?\]$", line)
        if m:
            section, kind = m[1], m[2] or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise InputError(
                    f"{path}:{lineno}: unknown section kind :{kind}", hint="[group], [group:vars], [group:children]"
                )
            continue
        if kind == "children":
            parsed.children.setdefault(section, []).append(line)
        elif kind == "vars":
            key, _, value = line.partition("=")
            parsed.groupvars.setdefault(section, {})[key.strip()] = _ini_value(value.strip())
        else:
            name, *pairs = line.split()
            hvars = {}
            for pair in pairs:
                key, sep, value = pair.partition("=")
                if not sep:
                    raise InputError(
                        f"{path}:{lineno}: expected key=value, got {pair!r}", hint="host ansible_host=10.0.0.1"
                    )
                hvars[key] = _ini_value(value)
            parsed.host(name, hvars)
            parsed.groups.setdefault(section, []).append(name)
    return parsed


def _ini_value(value: str) -> Any:
    value = value.strip().strip("'\"")
    lowered = value.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    return int(value) if value.isdigit() else value


def _from_json(doc: Any) -> _Parsed:
    if not isinstance(doc, dict):
        raise InputError("not the JSON of `ansible-inventory --list`", hint="expected an object with _meta and groups")
    parsed = _Parsed()
    for host, hvars in ((doc.get("_meta") or {}).get("hostvars") or {}).items():
        parsed.host(host, hvars)
    for name, body in doc.items():
        if name == "_meta" or not isinstance(body, dict):
            continue
        for host in body.get("hosts") or []:
            parsed.host(host)
            parsed.groups.setdefault(name, []).append(host)
        parsed.children[name] = list(body.get("children") or [])
        parsed.groupvars[name] = dict(body.get("vars") or {})
    return parsed


def convert(path: Path, cluster_name: str | None = None) -> dict[str, Any]:
    """The kprov inventory document for the Ansible inventory at `path`."""
    parsed = parse(path)
    control = [h for g in CONTROL_PLANE_GROUPS for h in parsed.members(g)]
    workers = [h for g in WORKER_GROUPS for h in parsed.members(g)]
    if not control:
        raise InputError(
            f"{path}: no host in kube_control_plane",
            hint="put the control plane hosts in group kube_control_plane (kubespray's name) "
            "and the workers in kube_node",
        )
    order = list(dict.fromkeys(control + workers))
    hosts = []
    for name in order:
        merged: dict[str, Any] = {}
        for group in ("all", *(g for g in parsed.groups if name in parsed.members(g))):
            merged.update(parsed.groupvars.get(group, {}))
        merged.update(parsed.hostvars.get(name, {}))
        entry: dict[str, Any] = {"name": _host_name(name), "address": str(merged.get("ansible_host", name))}
        for key, target in VAR_MAP.items():
            if key in merged and target != "address":
                entry[target] = merged[key]
        entry["roles"] = ["control_plane"] if name in control else ["worker"]
        hosts.append(entry)
    doc: dict[str, Any] = {
        "cluster": {"name": _cluster_name(cluster_name or path.stem)},
        "hosts": hosts,
    }
    groups = {}
    for group in parsed.groups.keys() | parsed.children.keys():
        if group in SKIP_GROUPS:
            continue
        members = [_host_name(h) for h in parsed.members(group) if h in order]
        if members:
            groups[_NAME.sub("-", group.lower()).strip("-")] = {"hosts": members}
    if groups:
        doc["groups"] = dict(sorted(groups.items()))
    return doc


def _host_name(name: str) -> str:
    return _NAME.sub("-", name.lower().split(".")[0]).strip("-") or "host"


def _cluster_name(name: str) -> str:
    return _NAME.sub("-", name.lower()).strip("-")[:40] or "cluster"
