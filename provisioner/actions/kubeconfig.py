"""Merge a cluster's admin kubeconfig into the user's kubeconfig the way kubectl writes it.

kubectl's rules (client-go clientcmd, `PathOptions.GetDefaultFilename` and `ModifyConfig`):
  * the files are `$KUBECONFIG` (a path list; empty entries ignored, duplicates once), else ~/.kube/config;
  * an entry that already exists is updated in the file that defines it; a new entry goes to the first
    existing file of the list, or, when none exists, to the last one (with one file: that file);
  * the current context is the first non-empty `current-context` in list order; it is changed only when
    asked (`--use`) or when there is none, and it is written to the file that sets it;
  * files are written through symlinks (the link stays a link) and keep their permission bits;
    a file kprov creates is 0600.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provisioner.atomic import write_file
from provisioner.errors import InputError

_SECTIONS = ("clusters", "users", "contexts")
_LEADING_COMMENTS = re.compile(r"\A(?:[ \t]*(?:#[^\n]*)?\n)*")


@dataclass(frozen=True)
class MergeReport:
    context: str
    #: the kubeconfig file(s) written, as the user names them (symlinks not resolved)
    written: tuple[Path, ...]
    #: the current context after the merge (None: none set anywhere)
    current_context: str | None
    switched: bool
    #: written files that group or others can read (kubectl keeps modes too; the CLI warns)
    readable_by_others: tuple[Path, ...] = ()


@dataclass(frozen=True)
class RemoveReport:
    context: str
    written: tuple[Path, ...]
    #: the removed entry was the current context: no current context is set now
    was_current: bool


def context_name(cluster: str) -> str:
    return f"kprov-{cluster}"


def kubeconfig_files(environ: Mapping[str, str] | None = None, home: Path | None = None) -> list[Path]:
    """The kubeconfig files kubectl reads, in precedence order."""
    environ = os.environ if environ is None else environ
    raw = environ.get("KUBECONFIG", "")
    files = list(dict.fromkeys(Path(p).expanduser() for p in raw.split(os.pathsep) if p))
    return files or [(home or Path.home()) / ".kube" / "config"]


def default_file(files: list[Path]) -> Path:
    """Where kubectl puts a new entry: the first existing file, else the last of the list."""
    for f in files:
        if f.exists():
            return f
    return files[-1]


def merge(source: Path, cluster: str, *, use: bool = False, files: list[Path] | None = None) -> MergeReport:
    """Add/update the cluster as context kprov-<cluster> (user kprov-<cluster>-admin)."""
    files = files or kubeconfig_files()
    name = context_name(cluster)
    entries = _entries(source, name)
    docs = {f: _Doc.read(f) for f in files}
    target = next((f for f in files if docs[f].has("contexts", name)), None) or default_file(files)
    docs[target].upsert(entries)
    touched = {target}
    current = next((docs[f].current for f in files if docs[f].current), None)
    switched = False
    if use or current is None:
        # kubectl writes current-context into the file that sets it (else the file it writes to)
        holder = next((f for f in files if docs[f].current), target)
        switched = docs[holder].current != name
        docs[holder].current = name
        touched.add(holder)
        current = name
    written = tuple(f for f in files if f in touched and docs[f].write())
    loose = tuple(f for f in written if os.stat(f).st_mode & 0o077)
    return MergeReport(name, written, current, switched, loose)


def remove(cluster: str, *, files: list[Path] | None = None) -> RemoveReport:
    """Remove kprov-<cluster>'s cluster, user and context from every file that has them."""
    files = files or kubeconfig_files()
    name = context_name(cluster)
    docs = {f: _Doc.read(f) for f in files if f.exists()}
    was_current = False
    for doc in docs.values():
        doc.drop(name)
        if doc.current == name:
            doc.current = None
            was_current = True
    written = tuple(f for f, d in docs.items() if d.write())
    return RemoveReport(name, written, was_current)


def merged_into(cluster: str, files: list[Path] | None = None) -> list[Path]:
    """The kubeconfig files holding the cluster's context."""
    files = files or kubeconfig_files()
    name = context_name(cluster)
    return [f for f in files if f.exists() and _Doc.read(f).has("contexts", name)]


def _entries(source: Path, name: str) -> dict[str, dict[str, Any]]:
    try:
        src = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        c = src["clusters"][0]["cluster"]
        u = src["users"][0]["user"]
    except (KeyError, IndexError, TypeError, yaml.YAMLError):
        raise InputError(f"{source} is not a kubeconfig with a cluster and a user", hint="rerun `kprov up`") from None
    return {
        "clusters": {"name": name, "cluster": c},
        "users": {"name": f"{name}-admin", "user": u},
        "contexts": {"name": name, "context": {"cluster": name, "user": f"{name}-admin"}},
    }


class _Doc:
    """One kubeconfig file: its YAML, its leading comment block, and whether it changed."""

    def __init__(self, path: Path, data: dict[str, Any] | None, header: str) -> None:
        self.path = path
        self.exists = data is not None
        self.data = data if data is not None else {"apiVersion": "v1", "kind": "Config", "preferences": {}}
        self.header = header
        self.changed = False

    @classmethod
    def read(cls, path: Path) -> _Doc:
        if not path.exists():
            return cls(path, None, "")
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(
                f"cannot read kubeconfig {path}: {exc}", hint="fix or move the file (kubectl cannot use it either)"
            ) from None
        if not isinstance(data, dict):
            raise InputError(f"{path} is not a kubeconfig (expected a mapping)", hint="fix or move the file")
        header = _LEADING_COMMENTS.match(text).group(0) if "#" in text else ""  # type: ignore[union-attr]
        return cls(path, data, header.rstrip("\n") + "\n" if header.strip() else "")

    @property
    def current(self) -> str | None:
        current = self.data.get("current-context")
        return current if isinstance(current, str) and current else None

    @current.setter
    def current(self, value: str | None) -> None:
        if (self.data.get("current-context") or None) != value:
            self.data["current-context"] = value or ""
            self.changed = True

    def has(self, section: str, name: str) -> bool:
        return any(isinstance(e, dict) and e.get("name") == name for e in self.data.get(section) or [])

    def upsert(self, entries: dict[str, dict[str, Any]]) -> None:
        for section in _SECTIONS:
            entry = entries[section]
            items = list(self.data.get(section) or [])
            idx = next((i for i, e in enumerate(items) if isinstance(e, dict) and e.get("name") == entry["name"]), None)
            if idx is None:
                items.append(entry)
            elif items[idx] != entry:
                items[idx] = entry
            else:
                continue
            self.data[section] = items
            self.changed = True

    def drop(self, name: str) -> None:
        names = {"clusters": name, "users": f"{name}-admin", "contexts": name}
        for section in _SECTIONS:
            items = self.data.get(section) or []
            kept = [e for e in items if not (isinstance(e, dict) and e.get("name") == names[section])]
            if len(kept) != len(items):
                self.data[section] = kept
                self.changed = True

    def write(self) -> bool:
        """Write if changed: through a symlink to its target, keeping the mode (0600 for a new file)."""
        if not self.changed:
            return False
        real = Path(os.path.realpath(self.path))
        mode = real.stat().st_mode & 0o7777 if real.exists() else 0o600
        real.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_file(real, self.header + yaml.safe_dump(self.data, sort_keys=False, default_flow_style=False), mode)
        return True


@dataclass(frozen=True)
class KubeconfigOptions:
    inventory: str
    merge: bool = False
    #: with merge: also make the context the current one
    use: bool = False
    remove: bool = False


@dataclass(frozen=True)
class KubeconfigReport:
    #: the cluster's admin kubeconfig on this machine
    path: Path
    merged: MergeReport | None = None
    removed: RemoveReport | None = None


def kubeconfig(opts: KubeconfigOptions) -> KubeconfigReport:
    """`kprov kubeconfig`: the admin kubeconfig's path; merged into or removed from the user's kubeconfig."""
    from provisioner.inventory.loader import load_inventory
    from provisioner.k8s.context import kubeconfig_path

    if opts.use and not opts.merge:
        raise InputError("--use needs --merge", hint="kprov kubeconfig -i INVENTORY --merge --use")
    if opts.remove and opts.merge:
        raise InputError("--remove and --merge exclude each other", hint="give one of them")
    inv = load_inventory(opts.inventory, resolve=False)
    path = kubeconfig_path(inv)
    if opts.remove:
        return KubeconfigReport(path, removed=remove(inv.cluster.name))
    if not path.is_file():
        raise InputError(
            f"no kubeconfig for cluster {inv.cluster.name} at {path}",
            hint="run `kprov up` first (it fetches the admin kubeconfig)",
        )
    if opts.merge:
        return KubeconfigReport(path, merged=merge(path, inv.cluster.name, use=opts.use))
    return KubeconfigReport(path)
