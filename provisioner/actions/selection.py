"""Which hosts and tasks a run touches: Ansible's host patterns and tag selection.

Host patterns (`--limit` and the `hosts:` of roles/site.yaml), comma-separated parts:
  all, *              every host
  NAME                a group (built-in `control_plane`, `worker`, or from `groups:`) or a host
  GLOB                fnmatch over host and group names: `lab-*`, `w?`
  ~REGEX              regular expression over host and group names
  NAME[i], NAME[a:b]  members of a group by position, Python slice semantics as in site.yaml (`[1:]`, `[-1]`)
  !PART               exclude;  &PART  intersect
Positive parts are united in inventory order, then `&` parts intersect, then `!` parts exclude; a pattern
of only `!`/`&` parts starts from all hosts (as Ansible does).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from provisioner.engine.roles import Play, Role
from provisioner.errors import InputError
from provisioner.inventory.model import Inventory

_SUBSCRIPT = re.compile(r"^(?P<base>.+?)\[(?P<a>-?\d*)(?P<colon>:?)(?P<b>-?\d*)\]$")
_GLOB = re.compile(r"[*?\[]")  # checked after group[subscript]: `cp[12]` is a glob when cp is no group


def _hint(inv: Inventory) -> str:
    groups = sorted(g for g, members in inv.group_members().items() if members)
    return f"hosts: {', '.join(h.name for h in inv.hosts)}; groups: {', '.join(groups)}"


def _match_part(inv: Inventory, part: str, where: str) -> list[str]:
    groups = inv.group_members()
    names = [h.name for h in inv.hosts]
    if part in ("all", "*"):
        return names
    m = _SUBSCRIPT.match(part)
    if m and (m["base"] in groups or m["base"] in names):
        base = m["base"]
        members = groups.get(base, [base])
        try:
            a = int(m["a"]) if m["a"] else None
            b = int(m["b"]) if m["b"] else None
        except ValueError:
            raise InputError(f"{where}: bad subscript in {part!r}", hint="e.g. worker[0], control_plane[1:]") from None
        if m["colon"]:
            return members[a:b]
        if a is None:
            raise InputError(f"{where}: empty subscript in {part!r}", hint="e.g. worker[0], control_plane[1:]")
        return [members[a]] if -len(members) <= a < len(members) else []
    if part.startswith("~"):
        try:
            rx = re.compile(part[1:])
        except re.error as exc:
            raise InputError(f"{where}: bad regular expression {part[1:]!r}: {exc}", hint=_hint(inv)) from None
        match = lambda n: rx.search(n) is not None  # noqa: E731
    elif _GLOB.search(part):
        match = lambda n: fnmatch.fnmatchcase(n, part)  # noqa: E731
    else:
        match = lambda n: n == part  # noqa: E731
    chosen = {n for n in names if match(n)}
    for g, members in groups.items():
        if match(g):
            chosen.update(members)
    return [n for n in names if n in chosen]


def select_hosts(
    inv: Inventory, pattern: str | Sequence[str], *, where: str = "--limit", strict: bool = True
) -> list[str]:
    """Host names the pattern selects, in inventory order. With `strict`, a part that matches nothing
    is bad input (a typo must not silently widen or empty a run)."""
    parts = [
        p.strip() for item in ([pattern] if isinstance(pattern, str) else pattern) for p in item.split(",") if p.strip()
    ]
    plus: list[str] = []
    intersect: list[list[str]] = []
    minus: set[str] = set()
    for part in parts:
        kind, body = (part[0], part[1:].strip()) if part[0] in "!&" else ("", part)
        if not body:
            raise InputError(f"{where}: empty pattern after {kind!r}", hint=_hint(inv))
        found = _match_part(inv, body, where)
        if strict and not found:
            raise InputError(f"{where}: pattern {body!r} matches no host or group", hint=_hint(inv))
        if kind == "!":
            minus.update(found)
        elif kind == "&":
            intersect.append(found)
        else:
            plus.extend(n for n in found if n not in plus)
    if not plus and parts:
        plus = [h.name for h in inv.hosts]
    chosen = [n for n in plus if all(n in s for s in intersect) and n not in minus]
    order = {h.name: i for i, h in enumerate(inv.hosts)}
    return sorted(chosen, key=order.__getitem__)


@dataclass(frozen=True)
class PlayListing:
    play: Play
    hosts: tuple[str, ...]
    tasks: tuple[tuple[str, frozenset[str]], ...]  # (task name, tags) of the selected tasks
    tags: frozenset[str]  # every tag of the role
    limited: tuple[str, ...] = ()  # hosts that run only the tasks tagged play.limited_tag


def task_selected(tags: frozenset[str], only: frozenset[str], skip: frozenset[str]) -> bool:
    """Ansible's rule: --tags keeps tasks with one of them, --skip-tags drops tasks with one of them."""
    return (not only or bool(tags & only)) and not (tags & skip)


def listing(
    inv: Inventory,
    plays: Iterable[Play],
    roles: dict[str, Role],
    limit: Sequence[str] | None,
    only: frozenset[str],
    skip: frozenset[str],
) -> list[PlayListing]:
    out = []
    for play in plays:
        hosts = [
            n
            for n in select_hosts(inv, play.hosts, where=f"play {play.role}", strict=False)
            if limit is None or n in limit
        ]
        role = roles[play.role]
        tasks = tuple((t.name, t.tags) for t in role.tasks if task_selected(t.tags, only, skip))
        limited = (
            tuple(n for n in select_hosts(inv, play.limited_hosts, strict=False) if n in hosts)
            if play.limited_hosts
            else ()
        )
        out.append(PlayListing(play, tuple(hosts), tasks, frozenset().union(*(t.tags for t in role.tasks)), limited))
    return out


def known_tags(roles: Iterable[Role]) -> frozenset[str]:
    return frozenset().union(*(t.tags for r in roles for t in (*r.tasks, *r.handlers)))
