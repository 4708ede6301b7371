"""Load YAML while remembering the line of every value, so errors can point at `hosts[2].address (line 14)`.

Inventories and `-e @file` are user input read by a process that goes on to act as root on every host,
so reading is bounded: regular files only (a FIFO or /dev/zero is refused, never read), at most
MAX_YAML_BYTES, UTF-8 without NUL bytes, at most MAX_YAML_DEPTH levels of nesting and MAX_YAML_NODES values
after aliases are expanded (a 342-byte alias bomb expands to billions). Each limit is one line of error
(exit 2). The merge key `<<` is supported as YAML 1.1 defines it: explicit keys win, then earlier sources.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import InventoryError

#: an inventory of a few thousand hosts is well below this; PyYAML parses ~1 MiB in a few seconds
MAX_YAML_BYTES = 1024 * 1024
#: far deeper than any inventory, far shallower than Python's recursion limit
MAX_YAML_DEPTH = 64
#: values after alias expansion: a 1,000-host inventory has ~15,000; 50,000 are walked in ~0.2 s
MAX_YAML_NODES = 50_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_YAML_DEPTH (it recurses once per level)."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.kprov_name = name
        self.kprov_depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # the scanner's pending simple keys make deep `[[[[...` quadratic: stop before the composer would
        if self.flow_level >= MAX_YAML_DEPTH:
            raise self._too_deep(self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def _too_deep(self, mark: Any) -> InventoryError:
        return InventoryError(
            f"{self.kprov_name}:{mark.line + 1}: nesting deeper than {MAX_YAML_DEPTH} levels",
            hint="an inventory is a few levels deep: check the file is the one you meant",
        )

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.kprov_depth += 1
        try:
            if self.kprov_depth > MAX_YAML_DEPTH:
                raise self._too_deep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.kprov_depth -= 1


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


class _Budget:
    """Counts values as aliases are expanded, so an alias bomb stops at MAX_YAML_NODES."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.left = MAX_YAML_NODES

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise InventoryError(
                f"{self.name}:{node.start_mark.line + 1}: more than {MAX_YAML_NODES} values once aliases are expanded",
                hint="aliases (*name) must not multiply the document: write the values out or use fewer aliases",
            )


def _expanded_size(node: yaml.Node, name: str, memo: dict[int, int], open_: set[int]) -> int:
    """How many values `node` becomes once aliases are expanded, counted over distinct nodes only (a
    bomb is refused without being walked); an alias to one of its own ancestors is refused too."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        raise InventoryError(
            f"{name}:{node.start_mark.line + 1}: an alias refers to a value that contains it",
            hint="a value cannot contain itself: write the values out",
        )
    open_.add(key)
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, name, memo, open_) + _expanded_size(v, name, memo, open_) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, name, memo, open_) for item in node.value)
    open_.discard(key)
    memo[key] = size
    if size > MAX_YAML_NODES:
        raise InventoryError(
            f"{name}:{node.start_mark.line + 1}: more than {MAX_YAML_NODES} values once aliases are expanded",
            hint="aliases (*name) must not multiply the document: write the values out or use fewer aliases",
        )
    return size


def _merge_sources(key: yaml.Node, node: yaml.Node, prefix: str, name: str) -> list[yaml.MappingNode]:
    """The mappings a `<<` key merges: one mapping (usually an alias) or a list of them."""
    items: list[yaml.MappingNode] = []
    for item in node.value if isinstance(node, yaml.SequenceNode) else [node]:
        if not isinstance(item, yaml.MappingNode):
            raise InventoryError(
                f"{name}:{key.start_mark.line + 1}: {_join(prefix, '<<')}: the merge key << needs a mapping "
                "or a list of mappings",
                hint="write <<: *anchor where &anchor names a mapping, or <<: [*a, *b]",
            )
        items.append(item)
    return items


def _convert(node: yaml.Node, prefix: str, lines: dict[str, int], loader: yaml.SafeLoader, budget: _Budget) -> Any:
    budget.spend(node)
    lines.setdefault(prefix, node.start_mark.line + 1)
    name = budget.name
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in _merge_sources(key_node, value_node, prefix, name):
                    for k, v in _convert(source, prefix, lines, loader, budget).items():
                        merged.setdefault(k, v)
                continue
            key = loader.construct_object(key_node, deep=True)
            path = _join(prefix, key)
            try:
                duplicate = key in out
            except TypeError:  # a mapping or list as a key (`? [a]: 1`)
                raise InventoryError(
                    f"{name}:{key_node.start_mark.line + 1}: {prefix or 'top level'}: "
                    f"a key must be a plain value, got {type(key).__name__}",
                    hint="write keys as plain words, e.g. name:",
                ) from None
            if duplicate:
                raise InventoryError(
                    f"{name}:{key_node.start_mark.line + 1}: {path}: duplicate key {key!r}",
                    hint="each key may appear only once in a mapping",
                )
            lines[path] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path, lines, loader, budget)
        for k, v in merged.items():
            out.setdefault(k, v)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, _join(prefix, i), lines, loader, budget) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:  # e.g. an implicit timestamp like 2024-13-45
        raise InventoryError(
            f"{name}:{node.start_mark.line + 1}: {prefix or 'top level'}: invalid value {node.value!r}: {exc}",
            hint="quote values that are meant as strings",
        ) from None


def load_yaml_text(text: str, path: Path | None = None) -> Located:
    """Parse YAML text into plain Python values with a line map; syntax errors become InventoryError."""
    name = str(path) if path else "<inventory>"
    nul = text.find("\0")
    if nul >= 0:
        raise InventoryError(
            f"{name}:{text.count(chr(10), 0, nul) + 1}: NUL byte in the file",
            hint="an inventory is a text file: check the file is the one you meant",
        )
    try:
        loader = _BoundedLoader(text, name)  # the reader refuses control characters right here
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InventoryError(
            f"{name}:{line}: control character 0x{exc.character:02x} is not allowed in YAML",
            hint="an inventory is a text file: remove control characters",
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(None, {}, path)
        _expanded_size(node, name, {}, set())
        lines: dict[str, int] = {}
        data = _convert(node, "", lines, loader, _Budget(name))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise InventoryError(
            f"{name}{at}: YAML syntax error: {problem}",
            hint="check indentation and quoting near that line",
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InventoryError(f"{name}: YAML error: {first}", hint="check the file is valid YAML") from None
    except (ValueError, OverflowError) as exc:  # e.g. an implicit timestamp like 2024-13-45
        raise InventoryError(f"{name}: invalid value: {exc}", hint="quote values that are meant as strings") from None
    finally:
        loader.dispose()
    return Located(data, lines, path)


def read_text_file(path: Path, what: str = "inventory", hint: str = "check the path given to --inventory") -> str:
    """The UTF-8 text of a regular file of at most MAX_YAML_BYTES; anything else is InventoryError.

    The file is opened non-blocking so that a FIFO without a writer is refused instead of waiting forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise InventoryError(f"{path}: file not found", hint=hint) from None
    except IsADirectoryError:
        raise InventoryError(
            f"{path}: is a directory, expected a YAML file", hint=f"pass the {what} file itself"
        ) from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read: {exc.strerror}", hint="check file permissions") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InventoryError(f"{path}: is a directory, expected a YAML file", hint=f"pass the {what} file itself")
        if not stat.S_ISREG(st.st_mode):
            raise InventoryError(
                f"{path}: not a regular file ({_file_kind(st.st_mode)})", hint=f"give the {what} as a regular YAML file"
            )
        data = f.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise InventoryError(
            f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB",
            hint=f"an {what} file is far smaller: check the file is the one you meant",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InventoryError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            hint="save the file as UTF-8",
        ) from None


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"


def load_yaml_file(path: Path, what: str = "inventory", hint: str = "check the path given to --inventory") -> Located:
    """Read (bounded, see the module docstring) and parse a YAML file; any problem becomes InventoryError."""
    return load_yaml_text(read_text_file(path, what, hint), path)
