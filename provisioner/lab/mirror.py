"""The Debian mirror, read at run time from this machine's own apt configuration.

The repository never names a registry host: whatever the operator's apt uses, the lab uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import PrerequisiteMissing


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


@dataclass(frozen=True)
class Mirrors:
    main: str
    security: str | None


def parse_deb822(text: str) -> list[AptSource]:
    """Parse the `Types: deb` stanzas of a *.sources file."""
    out: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        out.extend(AptSource(uri, suites) for uri in fields.get("uris", "").split())
    return out


def parse_one_line(text: str) -> list[AptSource]:
    """Parse `deb [opts] URI suite comp...` lines of sources.list."""
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            out.append(AptSource(words[0], (words[1],)))
    return out


def choose(sources: list[AptSource]) -> Mirrors | None:
    """The first plain-Debian URI and the first security URI (by suite name)."""
    main = next((s.uri for s in sources if any(not x.endswith("-security") for x in s.suites)), None)
    security = next((s.uri for s in sources if any(x.endswith("-security") for x in s.suites)), None)
    return Mirrors(main.rstrip("/"), security.rstrip("/") if security else None) if main else None


def host_mirrors(etc_apt: Path = Path("/etc/apt")) -> Mirrors:
    """Mirrors from /etc/apt/sources.list.d/*.sources and /etc/apt/sources.list."""
    sources: list[AptSource] = []
    for f in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        sources += parse_deb822(f.read_text())
    for f in [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]:
        if f.is_file():
            sources += parse_one_line(f.read_text())
    mirrors = choose(sources)
    if mirrors is None:
        raise PrerequisiteMissing(
            f"no Debian mirror found in {etc_apt}/sources.list or {etc_apt}/sources.list.d/*.sources",
            hint="configure apt on this machine (kprov lab uses the same mirror for debootstrap and nodes)",
        )
    return mirrors
