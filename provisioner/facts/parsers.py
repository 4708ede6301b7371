"""Pure parsers: command output -> typed facts. Tested with output captured from real hosts."""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True)
class FileState:
    exists: bool
    kind: str = ""  # "regular file", "directory", "symbolic link", ...
    mode: str = ""  # octal without leading zero padding, e.g. "644"
    owner: str = ""
    group: str = ""
    size: int = 0
    sha256: str = ""
    content: bytes | None = None  # only for small regular files

    @property
    def is_file(self) -> bool:
        return self.exists and self.kind.startswith("regular")

    @property
    def is_dir(self) -> bool:
        return self.exists and self.kind == "directory"


FILE_CONTENT_LIMIT = 262144


def file_state_script(path: str, with_content: bool = True, limit: int | None = FILE_CONTENT_LIMIT) -> str:
    """One `stat`; files up to `limit` (any size with None) come back whole, their sha256 computed locally;
    larger ones are hashed on the host."""
    import shlex

    p = shlex.quote(path)
    remote_sha = f"if [ -f {p} ]; then sha256sum < {p} | cut -c1-64; else echo; fi; echo"
    if with_content:
        small = f' && [ "${{s##*|}}" -le {limit} ]' if limit is not None else ""
        body = f"if [ -f {p} ]{small}; then echo; base64 -w0 -- {p}; echo; else {remote_sha}; fi"
    else:
        body = remote_sha
    return (
        f"if [ -e {p} ] || [ -L {p} ]; then s=$(stat -c '%F|%a|%U|%G|%s' -- {p}); echo \"$s\"; {body}; "
        f"else echo ABSENT; fi"
    )


def parse_file_state(out: str, rc: int = 0) -> FileState:
    import hashlib

    lines = out.split("\n")
    if not lines or lines[0].strip() in ("", "ABSENT"):
        return FileState(exists=False)
    kind, mode, owner, group, size = lines[0].strip().split("|", 4)
    sha = lines[1].strip() if len(lines) > 1 else ""
    raw = lines[2].strip() if len(lines) > 2 else ""
    content = base64.b64decode(raw) if raw else None
    if content is None and kind.startswith("regular") and int(size) == 0:
        content = b""
    if content is not None and not sha:
        sha = hashlib.sha256(content).hexdigest()
    return FileState(True, kind, mode, owner, group, int(size), sha, content)


@dataclass(frozen=True)
class PackageState:
    name: str
    installed: bool
    version: str = ""
    held: bool = False


def dpkg_script(names: list[str]) -> str:
    import shlex

    qn = " ".join(shlex.quote(n) for n in names)
    return (
        f"dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{db:Status-Abbrev}}\\n' {qn} 2>/dev/null; "
        f"echo '--holds--'; apt-mark showhold {qn} 2>/dev/null; true"
    )


def parse_dpkg(out: str, rc: int = 0) -> dict[str, PackageState]:
    """`dpkg-query -W` lines + `apt-mark showhold` -> name -> state."""
    states: dict[str, PackageState] = {}
    body, _, holds = out.partition("--holds--")
    held = {h.strip() for h in holds.split() if h.strip()}
    for line in body.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        name, version, abbrev = parts[0], parts[1], parts[2].strip()
        # db:Status-Abbrev is desired state, package status, error flag: "ii ", "hi ", "ri ", "rc ", "un "...
        # the package is on the host whenever its status is "i" (also when marked for removal: "ri")
        installed = len(abbrev) >= 2 and abbrev[1] == "i"
        states[name] = PackageState(
            name, installed, version if installed else "", name in held or abbrev.startswith("h")
        )
    return states


@dataclass(frozen=True)
class ServiceState:
    load: str
    active: str
    enabled: str
    sub: str = ""

    @property
    def exists(self) -> bool:
        return self.load not in ("not-found", "")

    @property
    def running(self) -> bool:
        return self.active in ("active", "activating", "reloading")


def parse_systemctl_show(out: str, rc: int = 0) -> ServiceState:
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return ServiceState(
        kv.get("LoadState", ""), kv.get("ActiveState", ""), kv.get("UnitFileState", ""), kv.get("SubState", "")
    )


def parse_sysctl_values(out: str, rc: int = 0) -> dict[str, str]:
    """Lines `key=value` (our script prints them so) -> mapping; missing keys get ''."""
    values: dict[str, str] = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            values[k.strip()] = " ".join(v.split())
    return values


@dataclass(frozen=True)
class SwapState:
    active: tuple[str, ...] = ()
    fstab_entries: tuple[str, ...] = ()


def parse_swap(out: str, rc: int = 0) -> SwapState:
    active, _, fstab = out.partition("--fstab--")
    return SwapState(
        tuple(x.strip() for x in active.splitlines() if x.strip()), tuple(x for x in fstab.splitlines() if x.strip())
    )


def parse_loaded_modules(out: str, rc: int = 0) -> set[str]:
    """Names from /proc/modules plus /sys/module entries (built-ins)."""
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def parse_os_release(out: str, rc: int = 0) -> dict[str, str]:
    info = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            info[k.strip()] = v.strip().strip('"')
    return info
