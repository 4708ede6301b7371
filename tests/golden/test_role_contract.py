"""Templates against the roles that render them: every variable a template reads is defined where it is used.

The golden cases feed templates the documented contract; this checks the other side, the real roles: a
template rendered by a role's `template:` task may use only that role's defaults, the cluster-wide computed
variables, facts set by `set_fact` in the roles, the engine's variables and the task's loop `item`. A name
that differs between a role and a template fails here instead of on a host.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import yaml
from jinja2 import meta

from tests.golden.cases import ENV, REPO, TEMPLATES

ROLES = REPO / "roles"
ENGINE_VARS = {"inventory_hostname", "host", "cluster", "hosts", "groups", "hostvars", "check_mode", "role_name",
               "operator_home", "project_dir"}


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
