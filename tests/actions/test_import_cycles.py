"""Issue 12's "no import cycle": the packages under provisioner/ (inventory, providers, engine, actions, ...)
import each other one way only. Read from the source (ast), module-level and function-level imports alike;
a cycle shows as the packages that reach each other and one import that closes it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "provisioner"


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges() -> dict[str, dict[str, str]]:
    """package -> {package it imports: one importing module, as evidence}."""
    edges: dict[str, dict[str, str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        src = _package(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                dst = _package(name) if name.startswith("provisioner.") else ""
                if dst and dst != src:
                    edges.setdefault(src, {}).setdefault(dst, f"{module} imports {name}")
    return edges


def _cycles(edges: dict[str, dict[str, str]]) -> dict[tuple[str, ...], str]:
    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in edges.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reached = {p: reach(p) for p in edges}
    out: dict[tuple[str, ...], str] = {}
    for p in edges:
        group = tuple(sorted({p} | {q for q in reached[p] if p in reached.get(q, set())}))
        if len(group) > 1 and group not in out:
            out[group] = "; ".join(edges[a][b] for a in group for b in group if b in edges.get(a, {}))
    return out


def test_no_import_cycle_between_packages() -> None:
    # none known: the last one (engine/k8s/modules/transport, closed by transport/ssh.py importing the
    # host-lock script from engine/lock.py) went when that script moved to the leaf transport/host_lock.py
    assert _cycles(_edges()) == {}


def test_inventory_imports_nothing_from_providers() -> None:
    # the providers plug into the inventory (its Provider protocol, validation helper and YAML source)
    assert "providers" not in _edges().get("inventory", {})


def test_transport_imports_nothing_from_engine() -> None:
    # the transport takes a host's lock through the leaf transport/host_lock.py, not the engine's lock module
    assert "engine" not in _edges().get("transport", {})
