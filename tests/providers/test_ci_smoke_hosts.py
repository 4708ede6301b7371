"""`kprov ci-smoke` end to end with real SSH: moto stands in for EC2, network-namespace sshd hosts
stand in for the instances.

moto hands out private IPs in launch order (.4, .5, ... of the subnet), so after six filler
instances the cluster's two instances get .10 and .11 — the addresses of the two namespace hosts.
With `ec2.address: private` the real inventory loader resolves the tagged instances to those hosts,
and the real `kprov apply` (standing in for `kprov up`, whose Kubernetes roles need full machines)
runs a role on them over SSH. Then the cluster is destroyed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import sys

import pytest
import yaml

from tests.providers import conftest
from tests.providers.helpers import PUBLIC_KEY, cluster_state

pytestmark = pytest.mark.netns

SUBNET = f"10.238.{77 + sum(map(ord, os.environ.get('KPROV_TEST_TAG', ''))) % 50}"  # no route of this machine uses it (checked in the fixture)
PROBE_ROLE = """\
- name: probe | who am i
  command: {argv: [hostname]}
  register: who
  changed_when: false
- name: probe | record the inventory view on the host
  file: {path: /tmp/kprov-probe, content: "{{ inventory_hostname }} {{ host.node_ip }} {{ who.stdout }}\\n"}
"""


@pytest.fixture(scope="module")
def stand_in_hosts():
    import subprocess

    from tests.fixtures.netns import _netns_unavailable
    from tests.fixtures.netns_fleet import NetnsFleet

    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    if f"{SUBNET}." in routes:
        pytest.skip(f"{SUBNET}.0/24 is already routed on this machine")
    network = ipaddress.IPv4Network(f"{SUBNET}.0/24")
    fleet = NetnsFleet(prefix="kpc" + os.environ.get("KPROV_TEST_TAG", ""), subnet=SUBNET)
    conftest.LAB_NETWORKS.append(network)
    try:
        fleet.up(2)
        yield fleet
    finally:
        fleet.down()
        conftest.LAB_NETWORKS.remove(network)


def test_ci_smoke_provisions_the_tagged_instances_over_ssh(kprov, ec2, tmp_path, stand_in_hosts):
    fleet = stand_in_hosts
    vpc = ec2.create_vpc(CidrBlock="10.238.64.0/18")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{SUBNET}.0/24")["Subnet"]["SubnetId"]
    ami = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
    fillers = [
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0] for _ in range(6)
    ]
    assert fillers[-1]["PrivateIpAddress"] == f"{SUBNET}.9"

    (tmp_path / "id_test.pub").write_text(PUBLIC_KEY)
    roles = tmp_path / "roles"
    (roles / "probe").mkdir(parents=True)
    (roles / "probe" / "tasks.yaml").write_text(PROBE_ROLE)
    inventory = tmp_path / "e2e.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "provider": "ec2",
                "cluster": {
                    "name": "e2e",
                    "kubernetes_version": "1.31.2",
                    "pod_cidr": "10.244.0.0/16",
                    "service_cidr": "10.96.0.0/12",
                    "cni": "flannel",
                },
                "defaults": {"known_hosts": str(fleet.known_hosts)},
                "ec2": {
                    "region": "eu-west-1",
                    "ssh_cidr": "203.0.113.7/32",
                    "public_key": "id_test.pub",
                    "ssh_key": str(fleet.key),
                    "ssh_user": "root",
                    "ami": ami,
                    "subnet_id": subnet,
                    "address": "private",
                    "control_plane": {"count": 1},
                    "workers": {"count": 1},
                },
            },
            sort_keys=False,
        )
    )

    py = shlex.quote(sys.executable)
    up = f"{py} -m provisioner.cli.main apply --inventory {{inventory}} --roles-dir {shlex.quote(str(roles))} --log-file {{events}} probe"
    smoke = f"{py} -c \"print('smoke stand-in: ok')\""
    events = tmp_path / "events.jsonl"
    summary = tmp_path / "summary.md"
    rc, out, err = kprov(
        "ci-smoke",
        "--inventory",
        inventory,
        "--up-cmd",
        up,
        "--smoke-cmd",
        smoke,
        "--events",
        events,
        "--summary",
        summary,
        "--no-wait-ssh",
        "--poll",
        "0.1",
    )
    assert rc == 0, out + err

    task_events = [json.loads(line) for line in events.read_text().splitlines()]
    wrote = {
        e["host"]: e["status"] for e in task_events if e.get("task") == "probe | record the inventory view on the host"
    }
    assert wrote == {"e2e-cp-1": "changed", "e2e-worker-1": "changed"}
    text = summary.read_text()
    assert "| e2e-cp-1 |" in text and "| e2e-worker-1 |" in text and "| ec2 destroy | ✅ ok |" in text
    assert cluster_state(ec2, "e2e")["instance_count"] == 0
    # the fillers (no kprov tags) were never touched
    alive = ec2.describe_instances(InstanceIds=[f["InstanceId"] for f in fillers])["Reservations"]
    assert all(i["State"]["Name"] == "running" for r in alive for i in r["Instances"])
