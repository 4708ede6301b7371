"""Load roles (`roles/<name>/{tasks,defaults,handlers}.yaml`) and plays (`roles/site.yaml`)."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import RoleError
from provisioner.inventory.yamlsource import load_yaml_file
from provisioner.modules.base import REGISTRY, get_module

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: where an installed wheel carries roles/ and templates/ (copied there at build time by setup.py)
PACKAGE_DATA = "_data"


def _data_dir(name: str) -> Path:
    """roles/ or templates/: the checkout's top-level directory (the source of truth) when running from
    the repository (also an editable install), else the copy shipped inside the installed package."""
    in_checkout = PROJECT_ROOT / name
    if (PROJECT_ROOT / "pyproject.toml").is_file() and in_checkout.is_dir():
        return in_checkout
    shipped = importlib.resources.files("provisioner").joinpath(PACKAGE_DATA, name)
    # wheels install as plain files, so the resource is a real directory (jinja2 and the runner need paths)
    return Path(str(shipped))


ROLES_DIR = _data_dir("roles")
TEMPLATES_DIR = _data_dir("templates")

TASK_KEYS = {
    "name",
    "when",
    "register",
    "notify",
    "tags",
    "loop",
    "loop_var",
    "changed_when",
    "failed_when",
    "ignore_errors",
    "no_log",
    "delegate_to",
    "check_mode",
    "timeout",
    "retries",
    "delay",
    "until",
    "run_once",
}


@dataclass(frozen=True)
class Task:
    name: str
    module: str
    args: Mapping[str, Any]
    role: str
    where: str
    when: Any = None
    register: str | None = None
    notify: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    loop: Any = None
    loop_var: str = "item"
    changed_when: Any = None
    failed_when: Any = None
    ignore_errors: bool = False
    no_log: bool = False
    delegate_to: str | None = None
    check_mode: str = "check"  # "check" (decide only) | "run" (read-only: also runs in plan)
    timeout: int | None = None
    retries: int = 0
    delay: float = 5
    #: run on the first host that reaches it (per delegate target and run); every other host gets its result
    run_once: bool = False
    until: Any = None


@dataclass(frozen=True)
class Role:
    name: str
    tasks: tuple[Task, ...]
    handlers: tuple[Task, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Play:
    role: str
    hosts: str
    serial: bool = False
    #: hosts of this play (a pattern) that run only the role's tasks tagged `limited_tag`, e.g. add-node's seed:
    #: a node of the cluster that serves the bundle it already has, and nothing else of the role runs there
    limited_hosts: str = ""
    limited_tag: str = ""


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


def parse_task(raw: Any, role: str, where: str) -> Task:
    if not isinstance(raw, dict):
        raise RoleError(f"{where}: a task must be a mapping", hint="each task: name: ..., <module>: {args}")
    modules = [k for k in raw if k not in TASK_KEYS]
    get_module("file", where)  # populate registry
    unknown = [k for k in modules if k not in REGISTRY]
    if unknown:
        raise RoleError(
            f"{where}: unknown module or task key {unknown[0]!r}",
            hint=f"modules: {', '.join(sorted(REGISTRY))}; task keys: {', '.join(sorted(TASK_KEYS))}",
        )
    if len(modules) != 1:
        raise RoleError(
            f"{where}: a task needs exactly one module, found {modules or 'none'}",
            hint="e.g. file: {path: /etc/x, content: ...}",
        )
    module = modules[0]
    args = raw[module] or {}
    if not isinstance(args, dict):
        raise RoleError(f"{where}: arguments of {module} must be a mapping", hint=f"{module}: {{key: value}}")
    name = raw.get("name") or f"{role} | {module}"
    return Task(
        name=str(name),
        module=module,
        args=args,
        role=role,
        where=f"{where} ({name})",
        when=raw.get("when"),
        register=raw.get("register"),
        notify=_as_tuple(raw.get("notify")),
        tags=frozenset(_as_tuple(raw.get("tags"))) | {role},  # the role name is an implicit tag: --tags containerd
        loop=raw.get("loop"),
        loop_var=raw.get("loop_var", "item"),
        changed_when=raw.get("changed_when"),
        failed_when=raw.get("failed_when"),
        ignore_errors=bool(raw.get("ignore_errors", False)),
        no_log=bool(raw.get("no_log", False)),
        delegate_to=raw.get("delegate_to"),
        check_mode=str(raw.get("check_mode", "check")),
        timeout=raw.get("timeout"),
        retries=int(raw.get("retries", 0)),
        delay=float(raw.get("delay", 5)),
        until=raw.get("until"),
        run_once=bool(raw.get("run_once", False)),
    )


def _load_list(path: Path, role: str) -> tuple[Task, ...]:
    if not path.exists():
        return ()
    doc = load_yaml_file(path).data or []
    if not isinstance(doc, list):
        raise RoleError(f"{path}: expected a list of tasks", hint="start the file with '- name: ...'")
    return tuple(
        parse_task(t, role, f"{path.relative_to(path.parents[2]) if len(path.parents) > 2 else path}[{i}]")
        for i, t in enumerate(doc)
    )


def load_role(name: str, roles_dir: Path = ROLES_DIR) -> Role:
    base = roles_dir / name
    if not (base / "tasks.yaml").is_file():
        available = (
            sorted(p.name for p in roles_dir.iterdir() if (p / "tasks.yaml").is_file()) if roles_dir.is_dir() else []
        )
        raise RoleError(f"unknown role {name!r}", hint=f"available roles: {', '.join(available) or 'none'}")
    try:
        defaults = load_yaml_file(base / "defaults.yaml").data if (base / "defaults.yaml").exists() else {}
    except Exception as exc:  # InventoryError from the YAML loader: re-badge as a role problem
        raise RoleError(str(exc), hint=getattr(exc, "hint", None)) from None
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, dict):
        raise RoleError(f"{base / 'defaults.yaml'}: expected a mapping of variables", hint="key: value lines")
    try:
        tasks = _load_list(base / "tasks.yaml", name)
        handlers = _load_list(base / "handlers.yaml", name)
    except RoleError:
        raise
    except Exception as exc:
        raise RoleError(str(exc), hint=getattr(exc, "hint", None)) from None
    names = {h.name for h in handlers}
    for t in tasks:
        for n in t.notify:
            if n not in names:
                raise RoleError(
                    f"{t.where}: notifies unknown handler {n!r}",
                    hint=f"handlers of {name}: {', '.join(sorted(names)) or 'none'}",
                )
    return Role(name=name, tasks=tasks, handlers=handlers, defaults=defaults)


def load_plays(path: Path | None = None) -> tuple[Play, ...]:
    """The `up` sequence: roles/site.yaml, a list of {role, hosts}."""
    path = path or ROLES_DIR / "site.yaml"
    if not path.is_file():
        # an empty plan that exits 0 would hide a broken install: say so loudly
        raise RoleError(
            f"no plays: {path} does not exist",
            hint="reinstall kprov from a wheel or the repository (`pip install .`); "
            "the package ships roles/ and templates/",
        )
    doc = load_yaml_file(path).data or []
    if not isinstance(doc, list) or not doc:
        raise RoleError(f"no plays in {path}", hint="list plays as - {role: NAME, hosts: PATTERN}")
    plays = []
    for i, p in enumerate(doc):
        if not isinstance(p, dict) or "role" not in p:
            raise RoleError(f"{path}[{i}]: expected {{role: NAME, hosts: PATTERN}}", hint="fix roles/site.yaml")
        plays.append(Play(role=str(p["role"]), hosts=str(p.get("hosts", "all")), serial=bool(p.get("serial", False))))
    return tuple(plays)
