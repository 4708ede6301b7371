"""Templates against the roles that render them: every variable a template reads is defined where it is used.

The golden cases feed templates the documented contract; this checks the other side, the real roles: a
template rendered by a role's `template:` task may use only that role's defaults, the cluster-wide computed
variables, facts set by `set_fact` in the roles, the engine's variables and the task's loop `item`. A name
that differs between a role and a template fails here instead of on a host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jinja2 import meta

from tests.golden.cases import ENV, REPO, TEMPLATES

ROLES = REPO / "roles"
ENGINE_VARS = {
    "inventory_hostname",
    "host",
    "cluster",
    "hosts",
    "groups",
    "hostvars",
    "check_mode",
    "role_name",
    "operator_home",
    "project_dir",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _tasks(tasks: Any) -> Iterator[dict[str, Any]]:
    for task in tasks or []:
        if isinstance(task, dict):
            yield task
            for nested in ("block", "rescue", "always"):
                yield from _tasks(task.get(nested))


def _cluster_wide() -> set[str]:
    from provisioner.k8s.context import cluster_vars
    from provisioner.secrets import Redactor

    cluster = SimpleNamespace(name="x", kubernetes_version="1.31.2", kubernetes_source="packages", bundle=None)
    return set(cluster_vars(SimpleNamespace(cluster=cluster, path="x"), Redactor()))


def _set_facts() -> set[str]:
    names: set[str] = set()
    for tasks_file in ROLES.glob("*/tasks.yaml"):
        for task in _tasks(_load(tasks_file)):
            names |= set((task.get("set_fact") or {}).get("vars") or {})
            if task.get("register"):
                names.add(task["register"])
    return names


def _template_tasks() -> list[tuple[str, str, bool]]:
    """(role, template, has loop) for every `template:` task of every role."""
    found = []
    for tasks_file in sorted(ROLES.glob("*/tasks.yaml")):
        for task in _tasks(_load(tasks_file)):
            if isinstance(task.get("template"), dict):
                found.append((tasks_file.parent.name, task["template"]["src"], "loop" in task))
    return found


def _used(template: str) -> set[str]:
    return meta.find_undeclared_variables(ENV.parse(ENV.loader.get_source(ENV, template)[0]))


TEMPLATE_TASKS = _template_tasks()


def test_roles_render_every_template() -> None:
    """Every template has a task (or, for the smoke manifest, the smoke command) that renders it."""
    rendered = {src for _, src, _ in TEMPLATE_TASKS} | {"smoke/hello.yaml.j2"}
    templates = {str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.j2") if "_lib" not in p.parts}
    assert templates - rendered == set(), "templates no role renders"
    assert rendered - templates == set(), "tasks rendering templates that do not exist"


@pytest.mark.parametrize("role, template, looped", TEMPLATE_TASKS, ids=[f"{r}:{t}" for r, t, _ in TEMPLATE_TASKS])
def test_template_variables_are_defined_by_its_role(role: str, template: str, looped: bool) -> None:
    defined = set(_load(ROLES / role / "defaults.yaml") or {}) | _cluster_wide() | _set_facts() | ENGINE_VARS
    if looped:
        defined.add("item")
    missing = _used(template) - defined
    assert not missing, f"{template} (role {role}) uses variables its role does not define: {sorted(missing)}"


def test_smoke_manifest_variables_are_defined() -> None:
    """`kprov smoke` renders with the smoke defaults, the cluster-wide variables, `cluster` and `hosts`."""
    defined = set(_load(ROLES / "smoke" / "defaults.yaml") or {}) | _cluster_wide() | {"cluster", "hosts"}
    assert _used("smoke/hello.yaml.j2") - defined == set()


# Facts the roles set at run time (set_fact from command output), as they would look on a lab node.
def _runtime_facts(k8s: str, hosts: list[dict[str, Any]], me: dict[str, Any]) -> dict[str, Any]:
    idx = hosts.index(me)
    return {
        "containerd_major": 1,
        "containerd_minor": 6,
        "cni_bridge_subnet": f"10.244.{idx}.0/24",
        "cni_pod_routes": [
            {"name": h["name"], "pod_cidr": f"10.244.{i}.0/24", "ip": h["node_ip"]}
            for i, h in enumerate(hosts)
            if h is not me
        ],
        "join_token": "abcdef.0123456789abcdef",
        "join_ca_cert_hash": "sha256:" + "ab" * 32,
        "join_certificate_key": "cd" * 32,
        "keepalived_interface": "host0",
    }


@pytest.mark.parametrize("k8s", ["1.20.2", "1.31.2"])
@pytest.mark.parametrize("role, template, looped", TEMPLATE_TASKS, ids=[f"{r}:{t}" for r, t, _ in TEMPLATE_TASKS])
def test_templates_render_with_role_defaults(role: str, template: str, looped: bool, k8s: str) -> None:
    """Rendered the way the engine does: role defaults (templated ones resolved), cluster-wide variables,
    run-time facts; the output must parse. Catches type slips in defaults ("True" vs true, "6" vs 6)."""
    from provisioner.engine.templating import resolve_vars
    from provisioner.k8s.context import cluster_vars
    from provisioner.secrets import Redactor
    from tests.golden.cases import docs, host_vars

    engine = host_vars(
        k8s=k8s, host_index=1 if role == "join" else 0, mirrors={"docker.io": ["http://10.215.0.1:5000"]}
    )
    hosts = engine["hosts"]
    cluster = SimpleNamespace(name="lab", kubernetes_version=k8s, kubernetes_source="packages", bundle=None)
    defaults = _load(ROLES / role / "defaults.yaml") or {}
    merged = {**defaults, **cluster_vars(SimpleNamespace(cluster=cluster, path="x"), Redactor())}
    merged.update({k: engine[k] for k in ("inventory_hostname", "host", "cluster", "hosts", "groups")})
    merged.update(_runtime_facts(k8s, hosts, engine["host"]))
    merged.update(
        {
            "hostvars": {h["name"]: h for h in hosts},
            "check_mode": False,
            "role_name": role,
            "operator_home": "/root",
            "project_dir": str(REPO),
        }
    )
    variables = resolve_vars(ENV, merged, set(defaults))
    items = [None]
    if looped:
        items = ENV.compile_expression("containerd_registry_mirrors | mirror_items")(**variables)
        assert items, "the mirrors loop has items"
    for item in items:
        text = ENV.get_template(template).render(**variables, **({"item": item} if looped else {}))
        assert "None" not in text and "{{" not in text
        if template.endswith((".yaml.j2", ".yml.j2")):
            assert docs(text)
        elif template.endswith(".toml.j2"):
            import tomllib

            tomllib.loads(text)
        elif template.endswith(".conflist.j2"):
            import json

            json.loads(text)
