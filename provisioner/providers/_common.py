"""Helpers shared by the host providers: raw inventory reading, paths, section checks.

`load_raw_inventory` is the one place the provider CLI commands read an inventory file until they
are wired to the full inventory loader; it only checks what the providers need.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from provisioner.errors import InventoryError
from provisioner.inventory.check import Check
from provisioner.inventory.yamlsource import load_yaml_file

FILE_KEY = "__file__"
CLUSTER_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


def load_raw_inventory(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an inventory YAML file into a plain dict, with `__file__` set to its absolute path."""
    file = Path(path).expanduser()
    # the same bounded reader as the inventory loader: regular file, size, depth, aliases, UTF-8, `<<`
    data = load_yaml_file(file, "inventory", "pass --inventory PATH to an existing YAML file").data
    if not isinstance(data, dict):
        raise InventoryError(f"{file}: expected a mapping at the top level", hint="see docs/inventory.md")
    data = dict(data)
    data[FILE_KEY] = str(file.resolve())
    return data


def cluster_name(inventory: Mapping[str, Any]) -> str:
    """The validated `cluster.name` of a raw inventory."""
    cluster = inventory.get("cluster")
    if not isinstance(cluster, Mapping):
        raise InventoryError("cluster: expected a mapping with at least `name`", hint="see docs/inventory.md")
    name = cluster.get("name")
    if not isinstance(name, str) or not CLUSTER_NAME_RE.match(name):
        raise InventoryError(
            f"cluster.name: expected [a-z0-9-], at most 40 characters, got {name!r}",
            hint="e.g. cluster: {name: ci-smoke}",
        )
    return name


def inventory_dir(inventory: Mapping[str, Any]) -> Path:
    """Directory relative paths in the inventory are resolved against (cwd if unknown)."""
    file = inventory.get(FILE_KEY)
    return Path(file).parent if file else Path.cwd()


def resolve_path(value: str, inventory: Mapping[str, Any]) -> Path:
    """Expand `~` and resolve a path relative to the inventory file."""
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else inventory_dir(inventory) / path))


class SectionChecker:
    """Small type checks for a raw provider section; every error names the key path (and file:line when
    `check` carries the parsed inventory: the loader passes its own)."""

    def __init__(self, section: Any, where: str, known: Iterable[str], hint: str, check: Check | None = None) -> None:
        self.where = where
        self.hint = hint
        self.check = check or Check()
        if not isinstance(section, Mapping):
            self.fail("", "expected a mapping")
        self.section: Mapping[str, Any] = section
        unknown = sorted(set(map(str, section)) - set(known))
        if unknown:
            self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(known))})")

    def fail(self, key: str, what: str, hint: str | None = None) -> None:
        path = f"{self.where}.{key}" if key else self.where
        raise self.check.error(path, what, hint or self.hint)

    def string(self, key: str, *, choices: Iterable[str] | None = None, pattern: re.Pattern[str] | None = None) -> None:
        value = self.section.get(key)
        if value is None:
            return
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"invalid value {value!r}")

    def integer(self, key: str, *, minimum: int, maximum: int, section: Mapping[str, Any] | None = None, path: str | None = None) -> None:
        value = (section if section is not None else self.section).get(key)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.fail(path or key, f"expected an integer from {minimum} to {maximum}, got {value!r}")

    def cidrs(self, key: str) -> None:
        value = self.section.get(key)
        if value is None:
            return
        items = value if isinstance(value, list) else [value]
        if not items:
            self.fail(key, "expected a CIDR or a non-empty list of CIDRs")
        for item in items:
            if not isinstance(item, str) or not is_cidr(item):
                self.fail(key, f"expected an IPv4 CIDR such as 203.0.113.7/32, got {item!r}")

    def string_map(self, key: str) -> None:
        value = self.section.get(key)
        if value is None:
            return
        if not isinstance(value, Mapping):
            self.fail(key, "expected a mapping of strings")
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, (str, int, float)) or isinstance(v, bool):
                self.fail(f"{key}.{k}", f"expected a string value, got {v!r}")


def is_cidr(value: str) -> bool:
    """True for an IPv4 network in CIDR notation with no host bits set."""
    if "/" not in value:
        return False
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return True


def as_list(value: Any) -> list[Any]:
    """None -> [], scalar -> [scalar], list -> list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
