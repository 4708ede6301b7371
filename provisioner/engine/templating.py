"""Jinja2 rendering with StrictUndefined for task arguments, `when` expressions and template files."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shlex
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import yaml

from provisioner.errors import TemplateError
from provisioner.k8s.kubeadm import kubeadm_api_version, pause_version, version_tuple
from provisioner.k8s.nodes import nodes_table

_WHOLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)


def version_cmp(a: Any, op: str, b: Any) -> bool:
    """`'1.31.2' is version('1.31', '>=')`-style comparison on numeric components."""
    ta, tb = version_tuple(a), version_tuple(b)
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
        raise TemplateError(
            f"subnet index {index} outside {net} split into /{new_prefix}", hint="use a larger pod CIDR"
        )
    base = int(network.network_address) + index * (2 ** (network.max_prefixlen - new_prefix))
    return f"{ipaddress.ip_address(base)}/{new_prefix}"


def _nth_host(net: str, index: int) -> str:
    return str(ipaddress.ip_network(net, strict=False)[index])


def _regex_search(value: Any, pattern: str, group: int = 0, default: Any = None) -> Any:
    m = re.search(pattern, str(value), re.M)
    return m.group(group) if m else default


def _mirror_items(mirrors: Any) -> list[dict[str, Any]]:
    """{registry: [urls]} -> [{registry, mirrors}] (one hosts.toml per registry).

    The same rules as the inventory loader's: `-e containerd_registry_mirrors=...` bypasses the loader,
    and a registry name becomes a directory name on the host."""
    from provisioner.inventory.loader import MIRROR_URL_RE, REGISTRY_RE

    if not isinstance(mirrors or {}, dict):
        raise TemplateError(
            f"registry mirrors: expected a mapping, got {type(mirrors).__name__}",
            hint="{registry: [mirror URLs]}, e.g. {docker.io: ['http://mirror:5000']}",
        )
    out = []
    for reg, urls in sorted(dict(mirrors or {}).items(), key=lambda kv: str(kv[0])):
        if not isinstance(reg, str) or not REGISTRY_RE.fullmatch(reg):
            raise TemplateError(
                f"registry mirrors: invalid registry name {reg!r}",
                hint="use a registry host like docker.io, registry.example.com:5000, or _default",
            )
        urls = list(urls or [])
        for url in urls:
            if not isinstance(url, str) or not MIRROR_URL_RE.fullmatch(url):
                raise TemplateError(
                    f"registry mirrors: {reg}: invalid mirror URL {url!r}",
                    hint="use http(s)://host[:port][/path] without spaces or quotes",
                )
        out.append({"registry": reg, "mirrors": urls})
    return out


class _Sandbox(jinja2.sandbox.SandboxedEnvironment):
    """Inventory and -e values are rendered too: no attribute walk out of Jinja2 into Python."""


def make_env(template_dir: Path | None = None) -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(template_dir)) if template_dir else None
    env = _Sandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(
        {
            "to_yaml": _to_yaml,
            "to_json": lambda v, **kw: json.dumps(v, **kw),
            "b64encode": lambda s: base64.b64encode(str(s).encode()).decode(),
            "b64decode": lambda s: base64.b64decode(str(s)).decode(),
            "version_tuple": version_tuple,
            "minor": lambda v: ".".join(str(x) for x in version_tuple(v)[:2]),
            "nth_subnet": _nth_subnet,
            "nth_host": _nth_host,
            "ip_in": _ip_in,
            "regex_replace": lambda s, pat, rep: re.sub(pat, rep, str(s)),
            "basename": lambda p: str(p).rsplit("/", 1)[-1],
            "quote": lambda s: shlex.quote(str(s)),
            "regex_search": _regex_search,
            "mirror_items": _mirror_items,
            "nodes_table": nodes_table,
            "pause_version": pause_version,
            "kubeadm_api_version": kubeadm_api_version,
        }
    )
    env.tests["version"] = lambda a, b, op=">=": version_cmp(a, op, b)
    env.tests["contains"] = lambda seq, item: item in (seq or ())
    env.globals["version_cmp"] = version_cmp
    return env


_CACHE_LOCK = threading.Lock()


def _compiled(env: jinja2.Environment, kind: str, text: str) -> Any:
    cache = env.__dict__.setdefault("_kprov_cache", {})
    key = (kind, text)
    hit = cache.get(key)
    if hit is None:
        hit = env.compile_expression(text, undefined_to_none=False) if kind == "expr" else env.from_string(text)
        with _CACHE_LOCK:
            cache[key] = hit
    return hit


def has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, list):
        return any(has_template(v) for v in value)
    if isinstance(value, dict):
        return any(has_template(v) for v in value.values())
    return False


def resolve_vars(
    env: jinja2.Environment, variables: dict[str, Any], keys: Any = None, passes: int = 4
) -> dict[str, Any]:
    """Render variables whose values are templates (role defaults like `x: "{{ cluster.name }}"`).

    Values that cannot be rendered yet (they use a result registered later) stay as they are and
    are rendered again when a task uses them. Only `keys` are resolved: registered command output
    is data and is never rendered as a template."""
    out = dict(variables)
    errors: dict[str, str] = {}
    for _ in range(passes):
        pending = [k for k, v in out.items() if (keys is None or k in keys) and has_template(v)]
        if not pending:
            break
        progressed = False
        for key in pending:
            try:
                value = Renderer(env, out, "vars").render(out[key])
            except UnsafeTemplate as exc:
                raise UnsafeTemplate(f"variable {key!r}: {exc.message.split(': ', 1)[-1]}", hint=exc.hint) from None
            except Exception as exc:
                errors[key] = getattr(exc, "message", None) or str(exc)
                continue
            errors.pop(key, None)
            if value != out[key]:
                out[key] = value
                progressed = True
        if not progressed:
            break
    for key, err in errors.items():
        if key in out and has_template(out[key]):
            # using it fails with the reason instead of passing the raw "{{ ... }}" text along
            out[key] = env.undefined(
                hint=f"variable {key!r} cannot be rendered: {err.split(': cannot render ')[-1]}", name=key
            )
    return out


class UnsafeTemplate(TemplateError):
    """A template that tried to reach Python internals: refused outright (never "not resolvable yet")."""


def _unsafe(where: str, what: str, exc: Exception) -> UnsafeTemplate:
    return UnsafeTemplate(
        f"{where}: refused to render {what}: {getattr(exc, 'message', None) or exc}",
        hint="templates in inventories and -e values may use variables and filters, "
        "not Python attributes (names starting with '_')",
    )


class Renderer:
    """Render values against one host's variables."""

    def __init__(self, env: jinja2.Environment, variables: Mapping[str, Any], where: str) -> None:
        self.env = env
        self.vars = variables
        self.where = where

    def _fail(self, what: str, exc: Exception) -> TemplateError:
        msg = getattr(exc, "message", None) or str(exc)
        return TemplateError(
            f"{self.where}: cannot render {what}: {msg}",
            hint="check variable names (role defaults, inventory vars, -e) and registered results",
        )

    def render(self, value: Any) -> Any:
        """Render strings (recursively in lists/dicts). A string that is exactly `{{ expr }}` keeps its type."""
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value:
                return value
            m = _WHOLE_EXPR.match(value)
            try:
                if m:
                    result = _compiled(self.env, "expr", m.group("expr"))(**self.vars)
                    if isinstance(result, jinja2.Undefined):
                        str(result)  # raises UndefinedError with the variable's name
                    return result
                return _compiled(self.env, "tmpl", value).render(**self.vars)
            except jinja2.sandbox.SecurityError as exc:
                raise _unsafe(self.where, repr(value), exc) from None
            except jinja2.UndefinedError as exc:
                raise self._fail(repr(value), exc) from None
            except jinja2.TemplateError as exc:
                raise self._fail(repr(value), exc) from None
            except TemplateError:
                raise
            except Exception as exc:
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
            value = _compiled(self.env, "expr", text)(**self.vars)
        except jinja2.sandbox.SecurityError as exc:
            raise _unsafe(self.where, f"condition {expr!r}", exc) from None
        except jinja2.UndefinedError as exc:
            raise self._fail(f"condition {expr!r}", exc) from None
        except jinja2.TemplateError as exc:
            raise self._fail(f"condition {expr!r}", exc) from None
        except Exception as exc:
            raise self._fail(f"condition {expr!r}", exc) from None
        if isinstance(value, jinja2.Undefined):
            raise TemplateError(f"{self.where}: condition {expr!r} is undefined", hint="define the variable")
        return bool(value)

    def render_file(self, name: str) -> str:
        try:
            return self.env.get_template(name).render(**self.vars)
        except jinja2.sandbox.SecurityError as exc:
            raise _unsafe(self.where, f"template {name}", exc) from None
        except jinja2.TemplateNotFound:
            raise TemplateError(
                f"{self.where}: template {name!r} not found",
                hint="templates live in the top-level templates/<role>/ directory",
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{self.where}: template {name}:{exc.lineno}: {exc.message}", hint="fix the template syntax"
            ) from None
        except jinja2.UndefinedError as exc:
            raise self._fail(f"template {name}", exc) from None
        except TemplateError:
            raise
        except Exception as exc:
            raise self._fail(f"template {name}", exc) from None
