"""`kprov inventory import` (Ansible YAML/INI/JSON -> kprov) and `kprov inventory schema` (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli.helpers import REPO
from tests.inventory.cli import kprov_forked as kprov

INI = """\
[all:vars]
ansible_user=ubuntu
ansible_ssh_private_key_file=/keys/id_ed25519

[kube_control_plane]
node1 ansible_host=10.0.0.11
[kube_node]
node2 ansible_host=10.0.0.12 ansible_port=2222
node3 ansible_host=10.0.0.13 ansible_become=true

[gpu]
node3

[k8s_cluster:children]
kube_control_plane
kube_node
"""

YAML = """\
all:
  vars: {ansible_user: ubuntu, ansible_ssh_private_key_file: /keys/id_ed25519}
  children:
    k8s_cluster:
      children:
        kube_control_plane:
          hosts: {node1: {ansible_host: 10.0.0.11}}
        kube_node:
          hosts:
            node2: {ansible_host: 10.0.0.12, ansible_port: 2222}
            node3: {ansible_host: 10.0.0.13, ansible_become: true}
    gpu:
      hosts: {node3: {}}
"""

JSON = json.dumps(
    {
        "_meta": {
            "hostvars": {
                "node1": {
                    "ansible_host": "10.0.0.11",
                    "ansible_user": "ubuntu",
                    "ansible_ssh_private_key_file": "/keys/id_ed25519",
                },
                "node2": {
                    "ansible_host": "10.0.0.12",
                    "ansible_port": 2222,
                    "ansible_user": "ubuntu",
                    "ansible_ssh_private_key_file": "/keys/id_ed25519",
                },
                "node3": {
                    "ansible_host": "10.0.0.13",
                    "ansible_become": True,
                    "ansible_user": "ubuntu",
                    "ansible_ssh_private_key_file": "/keys/id_ed25519",
                },
            }
        },
        "all": {"children": ["ungrouped", "k8s_cluster", "gpu"]},
        "k8s_cluster": {"children": ["kube_control_plane", "kube_node"]},
        "kube_control_plane": {"hosts": ["node1"]},
        "kube_node": {"hosts": ["node2", "node3"]},
        "gpu": {"hosts": ["node3"]},
    }
)

EXPECTED = {
    "cluster": {"name": "demo"},
    "hosts": [
        {
            "name": "node1",
            "address": "10.0.0.11",
            "user": "ubuntu",
            "ssh_key": "/keys/id_ed25519",
            "roles": ["control_plane"],
        },
        {
            "name": "node2",
            "address": "10.0.0.12",
            "user": "ubuntu",
            "port": 2222,
            "ssh_key": "/keys/id_ed25519",
            "roles": ["worker"],
        },
        {
            "name": "node3",
            "address": "10.0.0.13",
            "user": "ubuntu",
            "ssh_key": "/keys/id_ed25519",
            "become": True,
            "roles": ["worker"],
        },
    ],
    "groups": {"gpu": {"hosts": ["node3"]}},
}


@pytest.mark.parametrize("name,text", [("hosts.ini", INI), ("hosts.yaml", YAML), ("inventory.json", JSON)])
def test_import_each_ansible_format(tmp_path: Path, name: str, text: str) -> None:
    src = tmp_path / name
    src.write_text(text)
    res = kprov("inventory", "import", str(src), "--cluster-name", "demo")
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout) == EXPECTED
    # the result is a kprov inventory: --list-hosts works on it without touching any host
    out = tmp_path / "kprov.yaml"
    assert kprov("inventory", "import", str(src), "--cluster-name", "demo", "-o", str(out)).returncode == 0
    listed = kprov("plan", "-i", str(out), "--list-hosts", "--limit", "gpu")
    assert listed.returncode == 0, listed.stderr
    assert "    node3" in listed.stdout and "node2" not in listed.stdout


def test_import_needs_control_planes(tmp_path: Path) -> None:
    src = tmp_path / "hosts.ini"
    src.write_text("[web]\nweb1 ansible_host=10.0.0.1\n")
    res = kprov("inventory", "import", str(src))
    assert res.returncode == 2 and "kube_control_plane" in res.stderr


@pytest.mark.parametrize("name,text", [("hosts.ini", INI), ("hosts.yaml", YAML), ("inventory.json", JSON)])
def test_plan_with_an_ansible_inventory_points_at_the_importer(tmp_path: Path, name: str, text: str) -> None:
    src = tmp_path / name
    src.write_text(text)
    res = kprov("plan", "-i", str(src))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"error: {src} is an Ansible inventory, not a kprov one",
        f"hint: convert it: kprov inventory import {src} -o kprov-inventory.yaml",
    ]


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    res = kprov("inventory", "schema")
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


EXAMPLES = sorted((REPO / "inventories").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_inventory_validates_against_the_schema(path: Path) -> None:
    errors = [e.message for e in _validator().iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: d["cluster"].update(cni="weave"), "'weave' is not one of"),
        (lambda d: d["hosts"][0].update(rolez=["worker"]), "'rolez' was unexpected"),
        (lambda d: d["hosts"][0].update(roles=["master"]), "'master' is not one of"),
        (lambda d: d["cluster"].update(smoke="no"), "'no' is not of type 'boolean'"),
    ],
)
def test_schema_rejects_what_the_loader_rejects(mutate, needle: str) -> None:
    doc = yaml.safe_load((REPO / "inventories" / "static-example.yaml").read_text())
    mutate(doc)
    assert any(needle in e.message for e in _validator().iter_errors(doc))
