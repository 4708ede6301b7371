"""Providers behind one interface, registered by name (issue 12 item 4): the loader resolves any registered
provider's hosts before the model is built, and its section errors carry file:line like the loader's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from provisioner.errors import InventoryError
from provisioner.inventory.check import Check
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import PROVIDERS
from provisioner.providers import base
from provisioner.providers._common import SectionChecker


class TinyProvider:
    """A provider of `count` hosts on loopback addresses (nothing is started)."""

    name = "tiny"

    def validate_section(self, section: Mapping[str, Any], where: str, check: Check) -> None:
        SectionChecker(section, where, {"count"}, "tiny: {count: N}", check).integer("count", minimum=1, maximum=9)

    def resolve_hosts(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            {"name": f"t{i}", "address": f"127.0.0.{20 + i}", "roles": ["control_plane" if i == 1 else "worker"]}
            for i in range(1, section.get("count", 1) + 1)
        ]

    def connection_defaults(self, section: Mapping[str, Any]) -> dict[str, Any]:
        return {"user": "tiny", "port": 2200}

    def resolve_endpoint(self, section: Mapping[str, Any], inventory: Mapping[str, Any]) -> str | None:
        return "127.0.0.21:6443"


@pytest.fixture
def tiny():
    base.register(TinyProvider())
    yield
    base.unregister("tiny")


@pytest.mark.parametrize("name", [p for p in PROVIDERS if p != "static"])
def test_every_builtin_provider_implements_the_protocol(name):
    provider = base.get_provider(name)
    assert isinstance(provider, base.Provider) and provider.name == name
    assert set(base.provider_names()) == set(PROVIDERS) - {"static"}


def test_a_registered_provider_resolves_hosts_before_the_model_is_built(tiny, tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "provider: tiny\ncluster: {name: demo}\ntiny: {count: 3}\nhosts:\n  - {name: t2, labels: {disk: ssd}}\n"
    )
    loaded = load_inventory(inv)
    assert [(h.name, h.address, h.user, h.port, h.roles) for h in loaded.hosts] == [
        ("t1", "127.0.0.21", "tiny", 2200, ("control_plane",)),
        ("t2", "127.0.0.22", "tiny", 2200, ("worker",)),
        ("t3", "127.0.0.23", "tiny", 2200, ("worker",)),
    ]
    assert dict(loaded.host("t2").labels) == {"disk": "ssd"}
    assert loaded.cluster.control_plane_endpoint == "127.0.0.21:6443"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("tiny: {count: 12}", "inv.yaml:3: tiny.count: expected an integer from 1 to 9, got 12"),
        ("tiny:\n  size: 3", "inv.yaml:4: tiny.size: unknown key (known: count)"),
    ],
)
def test_a_registered_providers_errors_name_file_line_and_key(tiny, tmp_path, section, message):
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"provider: tiny\ncluster: {{name: demo}}\n{section}\n")
    with pytest.raises(InventoryError) as err:
        load_inventory(inv)
    assert err.value.message == f"{inv}:{message.split(':', 1)[1]}" and err.value.hint == "tiny: {count: N}"


def test_unregistered_names_and_incomplete_providers_are_refused(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text("provider: tiny\ncluster: {name: demo}\ntiny: {count: 1}\n")
    with pytest.raises(InventoryError, match="unknown provider 'tiny'"):
        load_inventory(inv)

    class NoHosts:
        name = "nohosts"

        def validate_section(self, section, where, check):
            pass

    with pytest.raises(TypeError, match="Provider protocol"):
        base.register(NoHosts())
