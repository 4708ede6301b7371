"""`kprov add-node`: provision and join only the given hosts; the control plane mints a token and serves the
offline bundle it has (nothing else of `up` runs on the nodes already in the cluster)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from provisioner.actions.run import RunOutcome, RunRequest, Warn, execute, quiet
from provisioner.engine.roles import Play, load_plays
from provisioner.errors import InputError
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Inventory

#: the plays of `up` that deliver the offline bundle, and the tag of their tasks the seed runs (roles/bundle)
SEEDED_ROLES = ("bundle", "kubernetes")
SEED_TAG = "bundle-seed"


def seed_vars(seed: str) -> dict[str, object]:
    """The variables of a seeded run: `seed` is the seed (whatever `bundle_seed` says elsewhere), a node of the
    cluster that serves the bundle only if it has it, and is sent nothing."""
    return {"bundle_seed": seed, "bundle_seed_serves_only": True}


def seeded(play: Play, seed: str, pattern: str) -> Play:
    """`play` (one of SEEDED_ROLES) on the hosts `pattern` and on `seed`, a node of the cluster that has the
    bundle: there only the tasks tagged bundle-seed run (it serves the others, roles/bundle)."""
    return Play(play.role, f"{seed},{pattern}", play.serial, limited_hosts=seed, limited_tag=SEED_TAG)


@dataclass(frozen=True)
class AddNodeOptions:
    names: tuple[str, ...]


def add_node_plays(
    inv: Inventory,
    names: tuple[str, ...],
    site: list[Play] | tuple[Play, ...],
    *,
    inventory_path: str = "the inventory",
) -> list[Play]:
    """site.yaml's plays narrowed to the new hosts (bad names are input errors)."""
    known = {h.name: h for h in inv.hosts}
    for n in names:
        if n not in known:
            raise InputError(f"--host {n!r} is not in {inventory_path}", hint="add it to hosts: first")
        if known[n].is_control_plane and n == inv.control_planes[0].name:
            raise InputError(f"--host {n!r} is the first control plane", hint="use `kprov up` to build the cluster")
    pattern = ",".join(names)
    seed = inv.control_planes[0].name
    plays: list[Play] = []
    for p in site:
        if p.role == "control_plane" or any(q.role == p.role for q in plays):
            continue
        if p.role in SEEDED_ROLES:
            # the first control plane serves the bundle it has to the new nodes on the cluster network, as the
            # seed does in `up`: the control machine sends nothing (a node falls back to a direct upload when
            # the seed cannot serve); only the tasks tagged bundle-seed run there
            plays.append(seeded(p, seed, pattern))
            continue
        plays.append(Play(p.role, pattern, p.serial or p.role == "join"))
    # the cni play also runs on the first control plane: it re-applies the CNI manifest (flannel learns the
    # new node IP) and labels the new node; with the bridge CNI every node needs a route to its pod subnet
    cni_hosts = "all" if inv.cluster.cni == "bridge" else f"{inv.control_planes[0].name},{pattern}"
    plays = [p if p.role != "cni" else Play("cni", cni_hosts) for p in plays]
    # a new control plane is a new backend of the built-in balancer (docs/ha.md): haproxy reloads on every
    # control plane (vip) or every node (local); the API servers are not restarted
    if any(known[n].is_control_plane for n in names) and inv.cluster.api_endpoint in ("vip", "local"):
        lb_hosts = "control_plane" if inv.cluster.api_endpoint == "vip" else "all"
        plays = [p if p.role != "loadbalancer" else Play("loadbalancer", lb_hosts) for p in plays]
    return plays


def add_node(req: RunRequest, opts: AddNodeOptions, open_sink: Callable[[], Any], *, warn: Warn = quiet) -> RunOutcome:
    inv = load_inventory(req.inventory)
    plays = add_node_plays(inv, opts.names, load_plays(), inventory_path=req.inventory)
    req = replace(req, extra_vars={**req.extra_vars, **seed_vars(inv.control_planes[0].name)})
    return execute(req, plays, open_sink, inventory=inv, title="ADD-NODE", warn=warn)
