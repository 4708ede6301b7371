"""Jinja2 rendering with StrictUndefined for task arguments, `when` expressions and template files."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Mapping

import jinja2
import yaml

from provisioner.errors import TemplateError

_WHOLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)


def _version_tuple(v: Any) -> tuple[int, ...]:
    parts = re.findall(r"\d+", str(v).lstrip("v").split("-")[0].split("+")[0].split("~")[0])
    return tuple(int(p) for p in parts[:3]) or (0,)


def version_cmp(a: Any, op: str, b: Any) -> bool:
    """`'1.31.2' is version('1.31', '>=')`-style comparison on numeric components."""
    ta, tb = _version_tuple(a), _version_tuple(b)
    n = max(len(ta), len(tb))
    ta, tb = ta + (0,) * (n - len(ta)), tb + (0,) * (n - len(tb))
    return {"<": ta < tb, "<=": ta <= tb, ">": ta > tb, ">=": ta >= tb, "==": ta == tb, "!=": ta != tb}[op]


def _to_yaml(value: Any, indent: int = 2) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False, indent=indent).rstrip("\n")


def _ip_in(ip: str, net: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(net, strict=False)


def _nth_subnet(net: str, new_prefix: int, index: int) -> str:
    """The index-th /new_prefix inside net (per-node pod CIDRs for the bridge CNI)."""
    network = ipaddress.ip_network(net, strict=False)
    size = 2 ** (new_prefix - network.prefixlen)
    if not 0 <= index < size:
        raise TemplateError(f"subnet index {index} outside {net} split into /{new_prefix}",
                            hint="use a larger pod CIDR")
    base = int(network.network_address) + index * (2 ** (network.max_prefixlen - new_prefix))
    return f"{ipaddress.ip_address(base)}/{new_prefix}"


def _nth_host(net: str, index: int) -> str:
    return str(ipaddress.ip_network(net, strict=False)[index])


def make_env(template_dir: Path | None = None) -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(template_dir)) if template_dir else None
    env = jinja2.Environment(
        loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )
    env.filters.update({
        "to_yaml": _to_yaml,
        "to_json": lambda v, **kw: json.dumps(v, **kw),
        "b64encode": lambda s: base64.b64encode(str(s).encode()).decode(),
        "b64decode": lambda s: base64.b64decode(str(s)).decode(),
        "version_tuple": _version_tuple,
        "minor": lambda v: ".".join(str(x) for x in _version_tuple(v)[:2]),
        "nth_subnet": _nth_subnet,
        "nth_host": _nth_host,
        "ip_in": _ip_in,
        "regex_replace": lambda s, pat, rep: re.sub(pat, rep, str(s)),
        "basename": lambda p: str(p).rsplit("/", 1)[-1],
        "quote": lambda s: __import__("shlex").quote(str(s)),
    })
    env.tests["version"] = lambda a, b, op=">=": version_cmp(a, op, b)
    env.globals["version_cmp"] = version_cmp
    return env


class Renderer:
    """Render values against one host's variables."""

    def __init__(self, env: jinja2.Environment, variables: Mapping[str, Any], where: str) -> None:
        self.env = env
        self.vars = variables
        self.where = where

    def _fail(self, what: str, exc: Exception) -> TemplateError:
        msg = getattr(exc, "message", None) or str(exc)
        return TemplateError(f"{self.where}: cannot render {what}: {msg}",
                             hint="check variable names (role defaults, inventory vars, -e) and registered results")

    def render(self, value: Any) -> Any:
        """Render strings (recursively in lists/dicts). A string that is exactly `{{ expr }}` keeps its type."""
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value:
                return value
            m = _WHOLE_EXPR.match(value)
            try:
                if m:
                    return self.env.compile_expression(m.group("expr"), undefined_to_none=False)(**self.vars)
                return self.env.from_string(value).render(**self.vars)
            except jinja2.UndefinedError as exc:
                raise self._fail(repr(value), exc) from None
            except jinja2.TemplateError as exc:
                raise self._fail(repr(value), exc) from None
            except TemplateError:
                raise
            except Exception as exc:  # noqa: BLE001 - a filter blew up on user data
                raise self._fail(repr(value), exc) from None
        if isinstance(value, list):
            return [self.render(v) for v in value]
        if isinstance(value, dict):
            return {k: self.render(v) for k, v in value.items()}
        return value

    def evaluate(self, expr: Any) -> bool:
        """A `when`/`changed_when` expression (bare Jinja expression, or a bool)."""
        if isinstance(expr, bool):
            return expr
        if isinstance(expr, list):
            return all(self.evaluate(e) for e in expr)
        text = str(expr).strip()
        m = _WHOLE_EXPR.match(text)
        if m:
            text = m.group("expr")
        try:
            value = self.env.compile_expression(text, undefined_to_none=False)(**self.vars)
        except jinja2.UndefinedError as exc:
            raise self._fail(f"condition {expr!r}", exc) from None
        except jinja2.TemplateError as exc:
            raise self._fail(f"condition {expr!r}", exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"condition {expr!r}", exc) from None
        if isinstance(value, jinja2.Undefined):
            raise TemplateError(f"{self.where}: condition {expr!r} is undefined", hint="define the variable")
        return bool(value)

    def render_file(self, name: str) -> str:
        try:
            return self.env.get_template(name).render(**self.vars)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{self.where}: template {name!r} not found",
                                hint="templates live in the top-level templates/<role>/ directory") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{self.where}: template {name}:{exc.lineno}: {exc.message}",
                                hint="fix the template syntax") from None
        except jinja2.UndefinedError as exc:
            raise self._fail(f"template {name}", exc) from None
        except TemplateError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"template {name}", exc) from None
