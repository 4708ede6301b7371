"""Helpers shared by the host providers: raw inventory reading, paths, section checks.

`load_raw_inventory` is the one place the provider CLI commands read an inventory file until they
are wired to the full inventory loader; it only checks what the providers need.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisioner.errors import InventoryError
from provisioner.inventory.check import Section as SectionChecker  # noqa: F401 - the providers' name
from provisioner.inventory.check import is_cidr  # noqa: F401 - re-exported
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


def as_list(value: Any) -> list[Any]:
    """None -> [], scalar -> [scalar], list -> list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
