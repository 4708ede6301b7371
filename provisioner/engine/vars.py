"""Variable merging for one host and role (precedence in docs/engine.md, "Variables")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from provisioner.engine.roles import PROJECT_ROOT
from provisioner.engine.templating import resolve_vars
from provisioner.inventory.loader import host_vars_layers
from provisioner.inventory.model import Host, Inventory


def merge_host_vars(
    env: jinja2.Environment,
    inventory: Inventory,
    host: Host,
    *,
    role_name: str,
    role_defaults: Mapping[str, Any],
    base_vars: Mapping[str, Any],
    extra_vars: Mapping[str, Any],
    run_vars: Mapping[str, Any],
    all_run_vars: Mapping[str, Mapping[str, Any]],
    check: bool,
    dead: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Role defaults < cluster-wide computed vars < inventory layers < -e, then the host's registered and
    set_fact results (below -e), then the names the engine provides; templated values rendered last.

    `run_vars` are this host's registered/set_fact results, `all_run_vars` every host's (for hostvars); `dead`
    the hosts that failed or became unreachable earlier in this run (not in `live_hosts`)."""
    merged: dict[str, Any] = dict(role_defaults)
    merged.update(base_vars)
    for layer in host_vars_layers(inventory, host):
        merged.update(layer)
    merged.update(extra_vars)
    templated = set(merged)
    merged.update({k: v for k, v in run_vars.items() if k not in extra_vars})
    merged.update(
        {
            "inventory_hostname": host.name,
            "host": host.public_view(),
            "cluster": inventory.cluster.public_view(),
            "hosts": [h.public_view() for h in inventory.hosts],
            "groups": inventory.group_members(),
            # the inventory's hosts minus those that failed or became unreachable earlier in this run: what a
            # cluster-wide wait should wait for (a host that is down must not fail the others' tasks)
            "live_hosts": [h.name for h in inventory.hosts if h.name not in dead],
            "hostvars": {h.name: {**h.public_view(), **all_run_vars.get(h.name, {})} for h in inventory.hosts},
            "check_mode": check,
            "role_name": role_name,
            "operator_home": str(Path.home()),
            "project_dir": str(PROJECT_ROOT),
        }
    )
    # registered output is data, never a template: only the layers above it are rendered
    return resolve_vars(env, merged, templated - set(run_vars))
