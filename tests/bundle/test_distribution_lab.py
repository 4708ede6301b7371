"""Bundle distribution on real lab nodes: the `bundle` and `kubernetes` plays on 4 nodes (1 control plane, 3
workers) with the real lab bundle. The control machine sends the bundle to the seed only (bytes counted in the
upload path: independent of the node count), the others pull from the seed; every node's copy verifies, a
worker holds no control-plane image, the seed's server is gone afterwards, and a rerun changes nothing.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from provisioner.engine.events import Status
from provisioner.engine.roles import Play
from provisioner.engine.runner import Runner, RunOptions
from provisioner.inventory.loader import load_inventory
from provisioner.k8s.context import cluster_vars
from provisioner.secrets import Redactor
from provisioner.transport.ssh import ConnectOptions, SSHHost
from tests.e2e.labkit import BUNDLE, REPO

LAB = "kbd" + os.environ.get("KPROV_TEST_TAG", "")
NODES = 4
PLAYS = [Play("prerequisites", "all"), Play("containerd", "all"), Play("bundle", "all"), Play("kubernetes", "all")]

pytestmark = [pytest.mark.lab]


class CountingSSH(SSHHost):
    """The real transport, counting what the control machine sends: uploads and script/command bytes."""

    def __init__(self, host, options, redactor, counts: dict[str, dict[str, int]]) -> None:
        super().__init__(host, options, redactor)
        self.counts = counts.setdefault(host.name, {"upload": 0, "exec": 0})

    def put_stream(self, remote_path, fh, *, offset=0, chunk=1 << 20):
        sent = super().put_stream(remote_path, fh, offset=offset, chunk=chunk)
        self.counts["upload"] += sent
        return sent

    def exec(self, command, *, stdin=None, **kw):
        self.counts["exec"] += len(command) + len(stdin or b"")
        return super().exec(command, stdin=stdin, **kw)


@pytest.fixture(scope="module")
def inventory(lab_factory, tmp_path_factory):
    if not BUNDLE.is_file():
        pytest.skip(f"needs the lab bundle {BUNDLE} (scripts/setup builds it)")
    lab = lab_factory(LAB, NODES)
    doc = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())
    doc["lab"] = {"name": LAB, "nodes": NODES, "control_planes": 1}
    doc["cluster"]["name"] = LAB
    doc["cluster"]["bundle"] = str(BUNDLE)
    path = tmp_path_factory.mktemp("dist") / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_inventory(path), lab


def run(inv, plays, **extra) -> tuple[object, dict[str, dict[str, int]], dict]:
    counts: dict[str, dict[str, int]] = {}
    redactor = Redactor()
    base = cluster_vars(inv, redactor)
    runner = Runner(
        inv,
        RunOptions(forks=16, extra_vars=extra),
        redactor=redactor,
        base_vars=base,
        connector=lambda h: CountingSSH(h, ConnectOptions(), redactor, counts),
    )
    try:
        report = runner.run(plays)
    finally:
        runner.close()
    return report, counts, base


def node_sh(lab, node: str, script: str) -> str:
    res = lab.capture(node, ["sh", "-c", script])
    assert res.returncode == 0, f"{node}: {script}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def verify_node(lab, host, v) -> None:
    """The node's unpacked copy holds exactly what its role needs, every file sha256-verified."""
    install_dir = f"/opt/kprov/bundle/{v['bundle_sha256'][:16]}"
    cp = "control_plane" in host.roles
    want = [f for f in v["bundle_files"] if cp or not f["cp_only"]]
    sums = "".join(f"{f['sha256']}  {f['path']}\n" for f in want)
    node_sh(lab, host.name, f"cd {install_dir} && printf '%s' '{sums}' | sha256sum --quiet -c -")
    present = set(node_sh(lab, host.name, f"cd {install_dir} && find . -type f | sed 's|^./||'").split())
    if present != {f["path"] for f in want}:
        # a node that fell back to a direct upload unpacked the whole bundle: still verified, just more
        assert present == {f["path"] for f in v["bundle_files"]}, (host.name, present)
    images = node_sh(lab, host.name, "ctr -n k8s.io images ls -q")
    assert ("kube-apiserver" in images) == cp, (host.name, images)
    assert "kube-proxy" in images, (host.name, images)


def test_bundle_sent_once_pulled_by_the_others_verified_everywhere(inventory) -> None:
    inv, lab = inventory
    report, counts, v = run(inv, PLAYS)
    assert not report.failed_hosts and not report.unreachable_hosts, [h.first_error for h in report.hosts.values()]
    seed = inv.control_planes[0].name
    size = BUNDLE.stat().st_size

    # the control machine uploads the bundle once, to the seed: the node count does not show up in the bytes
    uploads = {h: c["upload"] for h, c in counts.items() if c["upload"]}
    assert uploads == {seed: size}, uploads
    assert all(c["exec"] < 1 << 20 for h, c in counts.items() if h != seed), counts  # scripts only

    pulled = {
        e.host: e.msg
        for e in report.events
        if e.task.startswith("kubernetes | pull the bundle") and e.status is not Status.SKIPPED
    }
    assert set(pulled) == {h.name for h in inv.hosts} - {seed}
    uploaded_to = {
        e.host for e in report.events if e.task.startswith("kubernetes | upload") and e.status is Status.CHANGED
    }
    assert uploaded_to == set(), uploaded_to  # nobody fell back

    for h in inv.hosts:
        verify_node(lab, h, v)
        install_dir = f"/opt/kprov/bundle/{v['bundle_sha256'][:16]}"
        files = node_sh(lab, h.name, f"find {install_dir} -type f | wc -l").strip()
        assert int(files) == len([f for f in v["bundle_files"] if "control_plane" in h.roles or not f["cp_only"]])

    # the seed's server is gone, and nothing of it is left listening
    served = next(e.msg for e in report.events if e.host == seed and e.task.startswith("kubernetes | serve"))
    port = re.search(r":(\d+) to", served)
    assert port, served
    assert node_sh(lab, seed, f"ss -Hltn 'sport = :{port.group(1)}'").strip() == ""
    assert "kprov-bundle-serve" not in node_sh(lab, seed, "ps -eo args")

    again, counts2, _ = run(inv, PLAYS[2:])
    changed = [(e.host, e.task) for e in again.events if e.changed]
    assert not changed and not again.failed_hosts, changed
    assert sum(c["upload"] for c in counts2.values()) == 0

    # a node that cannot reach the seed gets the bundle uploaded directly; the others still pull
    workers = [h for h in inv.hosts if "worker" in h.roles]
    blocked, pulling = workers[0], workers[1]
    seed_ip = inv.control_planes[0].node_ip or inv.control_planes[0].address
    for h in (blocked, pulling):
        node_sh(lab, h.name, "rm -rf /opt/kprov/bundle/* /var/cache/kprov/bundle-*")
    node_sh(lab, blocked.name, f"iptables -I OUTPUT -d {seed_ip} -p tcp -j REJECT")
    try:
        third, counts3, _ = run(inv, PLAYS[2:], bundle_pull_wait=30, bundle_serve_idle=10)
    finally:
        node_sh(lab, blocked.name, f"iptables -D OUTPUT -d {seed_ip} -p tcp -j REJECT")
    assert not third.failed_hosts and not third.unreachable_hosts, [h.first_error for h in third.hosts.values()]
    assert {h: c["upload"] for h, c in counts3.items() if c["upload"]} == {blocked.name: size}
    fell_back = {
        e.host: e.msg
        for e in third.events
        if e.task.startswith("kubernetes | pull the bundle") and e.status is not Status.SKIPPED
    }
    assert fell_back[blocked.name] == "fallback: the seed did not answer within 30s", fell_back
    assert fell_back[pulling.name].startswith("pull "), fell_back
    for h in (blocked, pulling):
        verify_node(lab, h, v)
