"""`kprov inventory`: import an Ansible inventory, print the inventory format's JSON Schema."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
import yaml

from provisioner.actions import inventory_import, inventory_schema
from provisioner.inventory.loader import load_inventory


@click.group()
def inventory() -> None:
    """Inventory tools: import from Ansible, JSON Schema for editors."""


@inventory.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@click.option("--cluster-name", help="cluster.name (default: from the file name).")
def import_cmd(file: Path, output: Path | None, cluster_name: str | None) -> None:
    """Convert an Ansible inventory (YAML, INI, or `ansible-inventory --list` JSON) to a kprov inventory.

    kube_control_plane hosts become control planes and kube_node hosts workers (kubespray's groups);
    ansible_host/user/port/ssh_private_key_file/become become address/user/port/ssh_key/become."""
    doc = inventory_import.convert(file, cluster_name)
    text = f"# Imported from {file.name} by `kprov inventory import`; review before use.\n" + yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=False
    )
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "inventory.yaml"
        check.write_text(text)
        load_inventory(check, resolve=False)  # what we print is a valid kprov inventory, or bad input
    if output:
        output.write_text(text)
        click.echo(f"wrote {len(doc['hosts'])} host(s) to {output}", err=True)
    else:
        click.echo(text, nl=False)


@inventory.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of the inventory format (for editors: validation and completion)."""
    click.echo(json.dumps(inventory_schema.schema(), indent=2))
