"""Module contract: facts (what to ask the host) -> check (pure: decide the change) -> apply (run it).

A module never talks to the host itself. It declares fact queries (shell snippets the engine
batches into one round trip per host), decides from their parsed results whether a change is
needed, and describes that change as a shell script. The engine runs the script in one round trip.
"""

from __future__ import annotations

import base64
import difflib
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from provisioner.errors import RoleError
from provisioner.facts.query import FactQuery
from provisioner.modules.decisions import (  # noqa: F401 - the decisions modules return, imported from here
    Change,
    Decision,
    Effect,
    LocalWrite,
    NoChange,
    SetVars,
    Skip,
    Upload,
)


@dataclass(frozen=True)
class Param:
    kind: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    #: filled in by the module's prepare() from the host's variables, not written in a task (not documented)
    internal: bool = False


class ArgRenderer(Protocol):
    """How the engine renders a task's arguments against the host's variables."""

    def render(self, value: Any) -> Any: ...
    def evaluate(self, expr: Any) -> bool: ...
    def render_file(self, name: str) -> str: ...


class Module:
    """Base class. Subclasses set `name`, `params` and implement facts/check.

    What the engine needs to know about a module it reads from class attributes and `touches()`,
    never from the module's name."""

    name: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}
    #: its tasks may be decided from cached facts and applied with their neighbours in one round trip
    batchable: ClassVar[bool] = True
    #: also applied for real in check mode (it only reads the host)
    runs_in_check: ClassVar[bool] = False

    def prepare(self, raw: Mapping[str, Any], r: ArgRenderer) -> dict[str, Any]:
        """The task's arguments rendered for this host (before validate)."""
        return r.render(dict(raw))

    def validate(self, args: Mapping[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in args:
            if key not in self.params:
                raise RoleError(
                    f"{where}: module {self.name!r} has no argument {key!r}",
                    hint=f"arguments of {self.name}: {', '.join(sorted(self.params))}",
                )
        for key, spec in self.params.items():
            if key not in args or args[key] is None:
                if spec.required:
                    raise RoleError(
                        f"{where}: module {self.name!r} needs argument {key!r}", hint=f"add {key}: to the task"
                    )
                out[key] = spec.default
                continue
            value = args[key]
            if spec.kind is int and isinstance(value, str) and value.isdigit():
                value = int(value)
            kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
            if (
                str in kinds
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and not any(isinstance(value, k) for k in kinds)
            ):
                # `content: "{{ n }}"` renders to the number itself; a string argument wants its text
                value = str(value)
            if not isinstance(value, spec.kind) or (spec.kind is int and isinstance(value, bool)):
                kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
                raise RoleError(
                    f"{where}: {self.name}.{key}: expected {'/'.join(k.__name__ for k in kinds)}, "
                    f"got {type(value).__name__} {value!r}",
                    hint="fix the task argument",
                )
            if spec.choices is not None and value not in spec.choices:
                raise RoleError(
                    f"{where}: {self.name}.{key}: {value!r} is not one of {list(spec.choices)}",
                    hint="fix the task argument",
                )
            out[key] = value
        return self.normalize(out, where)

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        return []

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        """Fact resources (`file:/etc/x`, `sysctl`, ...) this module's change invalidates; "*" = all."""
        return {"*"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        raise NotImplementedError

    def result_data(self, args: Mapping[str, Any], change: Change, rc: int, stdout: str, stderr: str) -> dict[str, Any]:
        """Extra data for `register` after apply (e.g. the command's stdout)."""
        return {}


REGISTRY: dict[str, Module] = {}


def register(cls: type[Module]) -> type[Module]:
    REGISTRY[cls.name] = cls()
    return cls


def get_module(name: str, where: str) -> Module:
    import provisioner.modules  # noqa: F401 - populate the registry

    try:
        return REGISTRY[name]
    except KeyError:
        raise RoleError(
            f"{where}: unknown module {name!r}", hint=f"available modules: {', '.join(sorted(REGISTRY))}"
        ) from None


# -- helpers for building change scripts ----------------------------------------------------------


def q(value: str) -> str:
    return shlex.quote(str(value))


def join(argv: Sequence[str]) -> str:
    return shlex.join(str(a) for a in argv)


def write_file_script(path: str, content: bytes, mode: str | None, owner: str | None, group: str | None) -> str:
    """Atomic write: temp file in the same directory, chmod/chown, then rename over the target."""
    encoded = base64.b64encode(content).decode()
    lines = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    qp = q(path)
    qd = q(posixpath.dirname(path) or ".")
    steps = [
        f"mkdir -p -- {qd}",
        f"tmp=$(mktemp {q((posixpath.dirname(path) or '.') + '/.kprov.XXXXXX')})",
        f"base64 -d > \"$tmp\" <<'KPROV_EOF'\n{lines}\nKPROV_EOF",
        f'chmod {q(mode or "0644")} "$tmp"',
    ]
    if owner or group:
        steps.append(f'chown {q((owner or "") + (":" + group if group else ""))} "$tmp"')
    steps.append(f'mv -f -- "$tmp" {qp}')
    return "\n".join(steps)


def fail_on_apply(msg: str, reason: str) -> Change:
    """A change that cannot be made yet (e.g. its input file does not exist).

    Check mode reports it (an earlier task of the same run may create the input), a real run fails on
    the host with `reason` on stderr."""
    return Change(msg, f"echo {q(reason)} >&2\nexit 1")


def text_diff(path: str, old: bytes | None, new: bytes) -> str:
    try:
        old_s = (old or b"").decode().splitlines(keepends=True)
        new_s = new.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"binary file {path} changed"
    return "".join(
        difflib.unified_diff(
            old_s, new_s, fromfile=f"{path} (host)" if old is not None else "/dev/null", tofile=f"{path} (kprov)"
        )
    )


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
