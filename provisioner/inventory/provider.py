"""Host providers behind one interface, registered by name.

An inventory with `provider: NAME` and a `NAME:` section gets its hosts from the provider registered as
NAME: the loader validates the section through the provider (errors carry file:line like every other
inventory error, via inventory.check.Check), resolves the hosts before the model is built, and merges the
provider's connection defaults and API endpoint. The built-in providers (lab, ec2, vagrant) are imported
only when an inventory names them.

The protocol and the registry live here, beside the loader that uses them: the providers depend on the
inventory package (its validation helper, its YAML source), never the reverse, so the two packages form no
import cycle (provisioner/providers/base.py re-exports these names).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from provisioner.errors import InventoryError
from provisioner.inventory.check import Check


@runtime_checkable
class Provider(Protocol):
    """What the inventory loader needs from a host provider."""

    #: the value of `provider:` and the name of the inventory section it reads
    name: str

    def validate_section(self, section: Mapping[str, Any], where: str, check: Check) -> None:
        """Raise `check.error(...)` for the first bad key of the section (no machine or cloud access)."""

    def resolve_hosts(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Raw `hosts:` entries (docs/inventory.md). `inventory` is the raw document, `__file__` its path."""

    def connection_defaults(self, section: Mapping[str, Any]) -> dict[str, Any]:
        """`defaults:` for the provider's hosts (the inventory's own defaults win)."""

    def resolve_endpoint(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> str | None:
        """`control_plane_endpoint` when the provider runs the API's balancer, else None."""


#: built-in providers: name -> module holding `PROVIDER` (imported on first use)
BUILTIN: dict[str, str] = {
    "lab": "provisioner.lab.provider",
    "ec2": "provisioner.providers.ec2",
    "vagrant": "provisioner.providers.vagrant",
}
_registered: dict[str, Provider] = {}


def register(provider: Provider) -> None:
    """Make `provider: <provider.name>` available to inventories (a built-in of the same name is replaced)."""
    if not isinstance(provider, Provider):
        raise TypeError(f"{provider!r} does not implement the Provider protocol")
    _registered[provider.name] = provider


def unregister(name: str) -> None:
    _registered.pop(name, None)


def provider_names() -> tuple[str, ...]:
    """Every name `provider:` accepts besides `static`."""
    return tuple(sorted({*BUILTIN, *_registered}))


def get_provider(name: str) -> Provider:
    """The provider registered as `name`; InventoryError if there is none or it cannot be loaded."""
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN:
        raise InventoryError(f"unknown provider {name!r}", hint=f"use one of: static, {', '.join(provider_names())}")
    try:
        module = importlib.import_module(BUILTIN[name])
    except ModuleNotFoundError:
        raise InventoryError(
            f"provider {name!r} is not available in this build of kprov",
            hint="use provider: static with an explicit hosts list",
        ) from None
    provider = module.PROVIDER
    _registered[name] = provider
    return provider
