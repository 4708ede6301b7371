"""Helpers for the provider tests (inventories, state snapshots, running the real CLI)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REGION = "eu-west-1"
# A syntactically valid ed25519 public key (no private half exists anywhere).
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGj7zK0v1fP3y0sQe7yq2d9k8H0tVYH1m8YQeX8m2kq0 kprov-test\n"
UBUNTU_AMI = {"owner": "099720109477", "name": "ubuntu/images/hvm-ssd/ubuntu-*"}


def ec2_inventory(tmp_path: Path, name: str = "demo", *, file: str | None = None, **ec2_overrides: Any) -> Path:
    """Write a provider: ec2 inventory (and its public key) into tmp_path; return its path."""
    (tmp_path / "id_test.pub").write_text(PUBLIC_KEY)
    section: dict[str, Any] = {
        "region": REGION,
        "ssh_cidr": "203.0.113.7/32",
        "key_name": f"kprov-{name}",
        "public_key": "id_test.pub",
        "ami": UBUNTU_AMI,
        "control_plane": {"count": 1, "instance_type": "t3.medium"},
        "workers": {"count": 2, "instance_type": "t3.small"},
        "root_volume_gb": 20,
        "tags": {"team": "platform"},
    }
    section.update(ec2_overrides)
    section = {k: v for k, v in section.items() if v is not None}
    doc = {
        "provider": "ec2",
        "cluster": {
            "name": name,
            "kubernetes_version": "1.31.2",
            "pod_cidr": "10.244.0.0/16",
            "service_cidr": "10.96.0.0/12",
            "cni": "flannel",
        },
        "ec2": section,
    }
    path = tmp_path / (file or f"{name}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Kprov:
    """Run the real `kprov` entry point in-process; capture exit code, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        from provisioner.cli.main import main as kprov_main

        self.capsys.readouterr()
        try:
            kprov_main([str(a) for a in args])
            rc = 0
        except SystemExit as exc:
            rc = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return rc, out, err


def cluster_state(ec2_client: Any, cluster: str) -> dict[str, Any]:
    """What exists in moto for one cluster: live instances by name, groups, key pairs."""
    reservations = ec2_client.describe_instances(
        Filters=[
            {"Name": "tag:kprov:cluster", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    groups = ec2_client.describe_security_groups(Filters=[{"Name": "tag:kprov:cluster", "Values": [cluster]}])
    keys = ec2_client.describe_key_pairs(Filters=[{"Name": "tag:kprov:cluster", "Values": [cluster]}])
    return {
        "instances": sorted({t["Value"] for i in instances for t in i.get("Tags", []) if t["Key"] == "Name"}),
        "instance_count": len(instances),
        "groups": [g["GroupName"] for g in groups["SecurityGroups"]],
        "keys": [k["KeyName"] for k in keys["KeyPairs"]],
    }


def moto_post(endpoint: str, path: str, body: bytes = b"") -> dict[str, Any]:
    request = urllib.request.Request(
        f"{endpoint}{path}", data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")
