"""The one validation helper of inventories and provider sections.

Every complaint is one line: `file:line: key.path: problem`, plus a hint. The file and line come from the
parsed document (yamlsource.Located) when there is one; a section checked on its own (a provider command,
a library call) says `key.path: problem` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provisioner.errors import InventoryError
from provisioner.inventory.yamlsource import Located

TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "a mapping", list: "a list"}
DEFAULT_HINT = "fix the value's type in the inventory"


class Check:
    """Builds InventoryErrors that name where the bad value is; the typed checks every validator needs."""

    def __init__(self, doc: Located | None = None) -> None:
        self.doc = doc

    def error(self, where: str, problem: str, hint: str) -> InventoryError:
        """The error for the value at key path `where` (dotted, `[i]` for list items)."""
        prefix = self.doc.where(where) if self.doc is not None else where
        return InventoryError(f"{prefix}: {problem}" if prefix else problem, hint=hint)

    def expect(self, value: Any, kind: type, where: str, hint: str | None = None) -> Any:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            got = "nothing" if value is None else f"{type(value).__name__} {value!r}"
            raise self.error(where, f"expected {TYPE_NAMES[kind]}, got {got}", hint or DEFAULT_HINT)
        return value

    def keys(self, mapping: Mapping[Any, Any], allowed: Iterable[str], where: str) -> None:
        allowed = set(allowed)
        for key in mapping:
            if key not in allowed:
                path = f"{where}.{key}" if where else str(key)
                raise self.error(path, f"unknown key {key!r}", f"allowed keys here: {', '.join(sorted(allowed))}")
