"""Load YAML while remembering the line of every value, so errors can point at `hosts[2].address (line 14)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import InventoryError


@dataclass
class Located:
    """A parsed YAML document plus a map from value path to 1-based line number."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    path: Path | None = None

    def line(self, where: str) -> int | None:
        """Line of `where`, or of its closest parent that has one."""
        probe = where
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return None

    def where(self, where: str) -> str:
        """`file:line: path` prefix for error messages."""
        line = self.line(where)
        name = str(self.path) if self.path else "<inventory>"
        loc = f"{name}:{line}" if line else name
        return f"{loc}: {where}" if where else loc


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _convert(node: yaml.Node, prefix: str, lines: dict[str, int], loader: yaml.SafeLoader, name: str = "<inventory>") -> Any:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            path = _join(prefix, key)
            if key in out:
                raise InventoryError(
                    f"{name}:{key_node.start_mark.line + 1}: {path}: duplicate key {key!r}",
                    hint="each key may appear only once in a mapping",
                )
            lines[path] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path, lines, loader, name)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, _join(prefix, i), lines, loader, name) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml_text(text: str, path: Path | None = None) -> Located:
    """Parse YAML text into plain Python values with a line map; syntax errors become InventoryError."""
    name = str(path) if path else "<inventory>"
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(None, {}, path)
        lines: dict[str, int] = {}
        data = _convert(node, "", lines, loader, name)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise InventoryError(
            f"{name}{line}: YAML syntax error: {problem}",
            hint="check indentation and quoting near that line",
        ) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{name}: YAML error: {exc}", hint="check the file is valid YAML") from None
    finally:
        loader.dispose()
    return Located(data, lines, path)


def load_yaml_file(path: Path) -> Located:
    """Read and parse a YAML file; a missing or unreadable file becomes InventoryError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{path}: file not found", hint="check the path given to --inventory") from None
    except IsADirectoryError:
        raise InventoryError(f"{path}: is a directory, expected a YAML file", hint="pass the inventory file itself") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}: cannot read: {exc}", hint="check file permissions and encoding") from None
    return load_yaml_text(text, path)
