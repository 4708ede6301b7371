"""The actions under the CLI, called directly: typed options in, a report out (no click, no subprocess)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from provisioner.actions.add_node import add_node_plays
from provisioner.actions.apply import ApplyOptions, apply, apply_plays
from provisioner.actions.kubeconfig import KubeconfigOptions, kubeconfig
from provisioner.actions.plan import plan
from provisioner.actions.reset import targets
from provisioner.actions.run import RunRequest, select
from provisioner.engine.roles import Play, load_plays, load_role
from provisioner.errors import InputError
from provisioner.inventory.loader import load_inventory

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "static-example.yaml"


def _inventory(tmp_path: Path, edit=None) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["hosts"].append({"name": "cp2", "address": "192.0.2.13", "node_ip": "10.0.0.13", "roles": ["control_plane"]})
    doc["hosts"].append({"name": "w3", "address": "192.0.2.14", "node_ip": "10.0.0.14", "roles": ["worker"]})
    doc["cluster"]["control_plane_endpoint"] = "10.0.0.100:6443"
    if edit:
        edit(doc)
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _never(*_a):
    raise AssertionError("a listing-only run opened its sink")


@pytest.mark.parametrize(
    "names, endpoint, cni, expect",
    [
        # a worker: every play but control_plane, narrowed to it; cni also on the first control plane
        (("w3",), None, "flannel", {"join": "w3", "cni": "cp1,w3", "loadbalancer": "w3"}),
        # the bridge CNI: every node needs a route to the new pod subnet
        (("w3",), None, "bridge", {"cni": "all"}),
        # a second control plane behind the built-in balancer: haproxy reloads where it runs
        (("cp2",), "vip", "flannel", {"loadbalancer": "control_plane", "join": "cp2"}),
        (("cp2",), "local", "flannel", {"loadbalancer": "all"}),
        (("w3", "cp2"), None, "flannel", {"join": "w3,cp2", "cni": "cp1,w3,cp2"}),
    ],
)
def test_add_node_plays(tmp_path, names, endpoint, cni, expect):
    def edit(doc):
        doc["cluster"]["cni"] = cni
        if endpoint:
            del doc["cluster"]["control_plane_endpoint"]
            doc["cluster"]["api_endpoint"] = endpoint
            if endpoint == "vip":
                doc["cluster"]["api_vip"] = "10.0.0.100"

    inv = load_inventory(_inventory(tmp_path, edit), resolve=False)
    plays = add_node_plays(inv, names, load_plays())
    by_role = {p.role: p for p in plays}
    assert "control_plane" not in by_role
    assert by_role["join"].serial
    for role, hosts in expect.items():
        assert by_role[role].hosts == hosts, role
    # the bundle's plays also run on the first control plane, the seed, limited to the tasks tagged bundle-seed
    pattern = ",".join(names)
    for role in ("bundle", "kubernetes"):
        assert by_role[role] == Play(role, f"cp1,{pattern}", limited_hosts="cp1", limited_tag="bundle-seed")
    assert all(not p.limited_hosts for p in plays if p.role not in ("bundle", "kubernetes"))
    assert by_role["prerequisites"].hosts == pattern


def test_only_the_seed_tasks_are_tagged_bundle_seed():
    """What add-node runs on a node of the cluster: reading a free port, then serving; nothing that changes it."""

    tagged = {
        (role, t.name, t.module)
        for role in ("bundle", "kubernetes")
        for t in load_role(role).tasks
        if "bundle-seed" in t.tags
    }
    assert tagged == {
        ("bundle", "bundle | a port and a token for serving the bundle to the other nodes", "command"),
        (
            "kubernetes",
            "kubernetes | serve the bundle to the other nodes (seed node; stops when each has its copy)",
            "bundle_serve",
        ),
    }


@pytest.mark.parametrize(
    "names, message",
    [
        (("nope",), "--host 'nope' is not in"),
        (("cp1",), "--host 'cp1' is the first control plane"),
    ],
)
def test_add_node_refuses(tmp_path, names, message):
    inv = load_inventory(_inventory(tmp_path), resolve=False)
    with pytest.raises(InputError, match=message):
        add_node_plays(inv, names, load_plays())


@pytest.mark.parametrize(
    "roles, own_dir, expect",
    [
        (("containerd",), False, [Play("containerd", "all")]),
        (("join", "containerd"), False, [p for p in load_plays() if p.role == "join"] + [Play("containerd", "all")]),
        (("mine",), False, [Play("mine", "all")]),  # not in site.yaml: all hosts
        (("join",), True, [Play("join", "all")]),  # --roles-dir: site.yaml does not apply
    ],
)
def test_apply_plays(roles, own_dir, expect):
    assert apply_plays(roles, own_roles_dir=own_dir) == expect


@pytest.mark.parametrize(
    "limit, tags, hosts, warnings",
    [
        (None, (), None, 0),
        (("worker",), (), ("w1", "w2", "w3"), 0),
        (("w*", "!w2"), (), ("w1", "w3"), 0),
        (None, ("nosuch",), None, 2),  # unknown tag, and the selection selects no task
        (None, ("containerd",), None, 0),
    ],
)
def test_select(tmp_path, limit, tags, hosts, warnings):
    req = RunRequest(str(_inventory(tmp_path)), limit=limit, tags=frozenset(tags))
    inv = load_inventory(req.inventory, resolve=False)
    sel = select(req, inv, load_plays())
    assert sel.limit == hosts
    assert len(sel.warnings) == warnings
    assert [pl.play.role for pl in sel.listed] == [p.role for p in load_plays()]


def test_select_refuses_a_limit_that_selects_nothing(tmp_path):
    req = RunRequest(str(_inventory(tmp_path)), limit=("w1", "&cp1"))
    with pytest.raises(InputError, match="selects no host"):
        select(req, load_inventory(req.inventory, resolve=False), load_plays())


def test_listing_only_never_connects_nor_opens_the_sink(tmp_path):
    """--list-* is answered from the inventory and the roles (its addresses are TEST-NET: unreachable)."""
    warned: list[str] = []
    outcome = plan(
        RunRequest(str(_inventory(tmp_path)), list_tasks=True, tags=frozenset({"nosuch"})), _never, warn=warned.append
    )
    assert outcome.report is None and outcome.exit_status == 0
    assert outcome.listed and all(pl.hosts for pl in outcome.listed)
    assert warned and "nosuch" in warned[0]


@pytest.mark.parametrize(
    "limit, expect",
    [
        (None, ["cp1", "w1", "w2", "cp2", "w3"]),
        (("worker",), ["w1", "w2", "w3"]),
    ],
)
def test_reset_targets(tmp_path, limit, expect):
    req = RunRequest(str(_inventory(tmp_path)), limit=limit)
    assert targets(req, load_inventory(req.inventory, resolve=False)) == expect


@pytest.mark.parametrize(
    "opts, message",
    [
        (dict(use=True), "--use needs --merge"),
        (dict(merge=True, remove=True), "exclude each other"),
        (dict(), "no kubeconfig for cluster demo"),
    ],
)
def test_kubeconfig_refuses(tmp_path, monkeypatch, opts, message):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the admin kubeconfig lives in ~/.kube
    with pytest.raises(InputError, match=message):
        kubeconfig(KubeconfigOptions(str(_inventory(tmp_path)), **opts))


def test_kubeconfig_merge_and_remove(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "user-config"))
    inv_path = _inventory(tmp_path)
    admin = kubeconfig(KubeconfigOptions(str(inv_path), remove=True)).path  # nothing merged yet: a no-op
    assert admin.is_relative_to(tmp_path)
    admin.parent.mkdir(parents=True, exist_ok=True)
    admin.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kubernetes-admin@demo",
                "clusters": [
                    {
                        "name": "demo",
                        "cluster": {"server": "https://10.0.0.10:6443", "certificate-authority-data": "Q0E="},
                    }
                ],
                "users": [
                    {"name": "kubernetes-admin", "user": {"client-certificate-data": "Qw==", "client-key-data": "Sw=="}}
                ],
                "contexts": [
                    {"name": "kubernetes-admin@demo", "context": {"cluster": "demo", "user": "kubernetes-admin"}}
                ],
            }
        )
    )
    merged = kubeconfig(KubeconfigOptions(str(inv_path), merge=True, use=True)).merged
    assert merged is not None and merged.switched and merged.written == (tmp_path / "user-config",)
    assert yaml.safe_load((tmp_path / "user-config").read_text())["current-context"] == "kprov-demo"
    removed = kubeconfig(KubeconfigOptions(str(inv_path), remove=True)).removed
    assert removed is not None and removed.was_current
    assert not yaml.safe_load((tmp_path / "user-config").read_text()).get("contexts")


@pytest.mark.netns
def test_apply_on_real_hosts_reports_per_host(fleet, tmp_path, monkeypatch):
    """The apply action on two netns sshd hosts with the read-only preflight role: a report, a recap."""
    monkeypatch.setenv("KPROV_HOME", str(tmp_path / "home"))

    names = [f"act{os.environ.get('KPROV_TEST_TAG', '')}-{i}" for i in (1, 2)]

    def two(doc):  # own host names: the per-host lock (/run/kprov/<host>.lock) is shared by netns hosts
        doc["hosts"] = [{**copy.deepcopy(h), "name": n} for h, n in zip(doc["hosts"][:2], names)]

    inv = fleet.inventory_path(two)
    recaps: list[str] = []

    class Sink:
        def play_start(self, role, hosts):
            pass

        def emit(self, event):
            pass

        def play_end(self, role, duration_s):
            pass

        def recap(self, report, title):
            recaps.append(title)

    outcome = apply(RunRequest(str(inv)), ApplyOptions(("preflight",)), Sink)
    assert outcome.exit_status == 0, outcome.report
    assert sorted(outcome.report.hosts) == names
    assert all(r.failed == 0 and r.changed == 0 for r in outcome.report.hosts.values())
    assert recaps == ["RECAP"]
