"""Every shipped role loads (YAML, modules, handlers) and every play of site.yaml names a real role."""

from __future__ import annotations

import pytest

from provisioner.engine.roles import ROLES_DIR, TEMPLATES_DIR, load_plays, load_role

ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks.yaml").is_file())


@pytest.mark.parametrize("name", ROLES)
def test_role_loads_and_its_templates_exist(name: str) -> None:
    role = load_role(name)
    assert role.tasks, f"role {name} has no tasks"
    for task in (*role.tasks, *role.handlers):
        assert task.name.startswith(f"{name} | ") or task in role.handlers, (
            f"task name should say its role: {task.name}"
        )
        if task.module == "template":
            src = task.args["src"]
            assert (TEMPLATES_DIR / src).is_file(), f"{task.name}: missing template {src}"
            assert src.startswith(f"{name}/") or name in ("containerd", "kubernetes", "cni", "control_plane", "join")


def test_site_plays_name_real_roles() -> None:
    plays = load_plays()
    assert [p.role for p in plays][:5] == ["preflight", "prerequisites", "containerd", "bundle", "kubernetes"]
    for play in plays:
        assert play.role in ROLES
