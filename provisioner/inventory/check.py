"""The one validation helper of inventories, provider sections and settings files.

Every complaint is one line: `file:line: key.path: problem`, plus a hint. The file and line come from the
parsed document (yamlsource.Located) when there is one; a section checked on its own (a provider command,
a library call) says `key.path: problem` only.

    check = Check(doc)                                   # the inventory loader: typed values, IPs, CIDRs
    sec = check.section(raw["ec2"], "ec2", KNOWN, HINT)  # a provider's section: known keys, optional values
    sec.string("region"); sec.integer("count", minimum=1, maximum=50)
"""

from __future__ import annotations

import ipaddress
import re
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

    #: the loader's name for it
    fail = error

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

    def integer(self, value: Any, where: str, minimum: int, maximum: int, hint: str | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.error(
                where, f"expected an integer from {minimum} to {maximum}, got {value!r}", hint or DEFAULT_HINT
            )
        return value

    def cidr(self, value: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        self.expect(value, str, where)
        try:
            return ipaddress.ip_network(value, strict=True)
        except ValueError:
            raise self.error(
                where, f"invalid CIDR {value!r}", "use network/prefix with host bits zero, e.g. 10.244.0.0/16"
            ) from None

    def ip(self, value: Any, where: str) -> str:
        self.expect(value, str, where, "write the IP address as a string, e.g. 10.0.0.10")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise self.error(
                where,
                f"expected an IP address, got {value!r}",
                "node_ip is the address Kubernetes uses on this host, e.g. 10.0.0.10",
            ) from None

    def port(self, value: Any, where: str) -> int:
        self.expect(value, int, where)
        if not 1 <= value <= 65535:
            raise self.error(where, f"port {value} out of range", "use a TCP port between 1 and 65535")
        return value

    def section(self, section: Any, where: str, known: Iterable[str], hint: str) -> Section:
        """A mapping whose keys must be among `known` (a provider's section, a settings file)."""
        return Section(section, where, known, hint, self)


def is_cidr(value: str) -> bool:
    """True for an IPv4 network in CIDR notation with no host bits set."""
    if "/" not in value:
        return False
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return True


class Section:
    """Checks of optional values in one mapping; every error names the key path (and file:line when the
    Check carries the parsed document: the loader passes its own) and falls back to the section's hint."""

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

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if key and self.where else key or self.where

    def fail(self, key: str, what: str, hint: str | None = None) -> None:
        raise self.check.error(self.path(key), what, hint or self.hint)

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

    def integer(
        self, key: str, *, minimum: int, maximum: int, section: Mapping[str, Any] | None = None, path: str | None = None
    ) -> None:
        value = (section if section is not None else self.section).get(key)
        if value is not None:
            self.check.integer(value, self.path(path or key), minimum, maximum, self.hint)

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
