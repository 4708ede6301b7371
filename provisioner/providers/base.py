"""The Provider protocol and registry, as provider implementations import them (provisioner/inventory/provider.py
holds them, beside the loader: the inventory package imports nothing from providers/)."""

from provisioner.inventory.provider import BUILTIN, Provider, get_provider, provider_names, register, unregister

__all__ = ["BUILTIN", "Provider", "get_provider", "provider_names", "register", "unregister"]
