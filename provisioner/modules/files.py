"""File-shaped modules: file, template, line, fetch, upload."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisioner.errors import RoleError
from provisioner.facts.parsers import FileState, file_state_script, parse_file_state
from provisioner.hashing import file_sha256
from provisioner.modules.base import (
    ArgRenderer,
    Change,
    Decision,
    FactQuery,
    LocalWrite,
    Module,
    NoChange,
    Param,
    Upload,
    fail_on_apply,
    q,
    register,
    text_diff,
    write_file_script,
)


def _mode_str(mode: Any) -> str | None:
    """Normalise a mode to octal digits ("644"). YAML's unquoted 0644 arrives as int 420."""
    if mode is None:
        return None
    if isinstance(mode, int) and not isinstance(mode, bool):
        if not 0 <= mode <= 0o7777:
            raise RoleError(f"invalid file mode {mode!r}", hint='quote octal modes: mode: "0644"')
        if mode > 0o777 and re.fullmatch(r"[0-7]{3}", str(mode)):
            # `mode: 644` is the decimal number 644 (octal 1204), never what was meant
            raise RoleError(
                f"file mode {mode} is a decimal number (octal {oct(mode)[2:]})",
                hint=f'quote octal modes: mode: "0{mode}"',
            )
        return oct(mode)[2:].rjust(3, "0")
    s = str(mode).strip()
    if not re.fullmatch(r"[0-7]{3,4}", s):
        raise RoleError(f"invalid file mode {mode!r}", hint='quote octal modes: mode: "0644"')
    return s.lstrip("0").rjust(3, "0") if len(s) == 4 and s[0] == "0" else s


def _mode_arg(mode: Any, where: str) -> str | None:
    """_mode_str for a task argument: errors name the task."""
    try:
        return _mode_str(mode)
    except RoleError as exc:
        raise RoleError(f"{where}: {exc.message}", hint=exc.hint) from None


def _attrs_differ(state: FileState, mode: str | None, owner: str | None, group: str | None) -> list[str]:
    out = []
    if mode and state.mode.lstrip("0") != mode.lstrip("0"):
        out.append(f"mode {state.mode} -> {mode}")
    if owner and state.owner != owner:
        out.append(f"owner {state.owner} -> {owner}")
    if group and state.group != group:
        out.append(f"group {state.group} -> {group}")
    return out


def _content_bytes(content: Any) -> bytes:
    if isinstance(content, bytes):
        return content
    return str(content).encode()


@register
class FileModule(Module):
    """Ensure a file (with content/mode/owner), a directory, a symlink, or absence."""

    name = "file"
    params = {
        "path": Param(str, required=True),
        "state": Param(str, default="file", choices=("file", "directory", "absent", "link")),
        "content": Param((str, bytes)),
        "src": Param(str),
        "mode": Param((str, int)),
        "owner": Param(str),
        "group": Param(str),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        args["mode"] = _mode_arg(args["mode"], where)
        if args["state"] == "link" and not args["src"]:
            raise RoleError(f"{where}: file state=link needs src", hint="src: is the link target")
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        path = args["path"]
        if args["state"] == "link":
            qp = q(path)
            return [
                FactQuery(
                    "link",
                    f"file:{path}",
                    f"if [ -L {qp} ]; then readlink -- {qp}; elif [ -d {qp} ]; then echo '<directory>'; "
                    f"else echo '<not-a-link>'; fi",
                    lambda o, rc: o.rstrip("\n"),
                )
            ]
        return [
            FactQuery("file", f"file:{path}", file_state_script(path, args["content"] is not None), parse_file_state)
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"file:{args['path']}"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        path, state = args["path"], args["state"]
        if state == "link":
            if facts["link"] == args["src"]:
                return NoChange(f"{path} -> {args['src']}")
            if facts["link"] == "<directory>":
                # ln -sfn would put the link *inside* the directory, and change again on every run
                raise RoleError(
                    f"{path} is a directory, not a link", hint="remove it first (state: absent) or pick another path"
                )
            return Change(
                f"link {path} -> {args['src']}",
                f'mkdir -p -- "$(dirname -- {q(path)})"\nln -sfn -- {q(args["src"])} {q(path)}',
            )
        st: FileState = facts["file"]
        if state == "absent":
            if not st.exists:
                return NoChange(f"{path} already absent")
            return Change(f"remove {path}", f"rm -rf -- {q(path)}", diff=f"--- {path}\n+++ /dev/null\n")
        mode, owner, group = args["mode"], args["owner"], args["group"]
        if state == "directory":
            if st.is_dir:
                diffs = _attrs_differ(st, mode, owner, group)
                if not diffs:
                    return NoChange(f"directory {path} present")
                return Change(f"{path}: {', '.join(diffs)}", self._attr_script(path, mode, owner, group))
            script = f"mkdir -p -- {q(path)}\n" + self._attr_script(path, mode, owner, group)
            return Change(f"create directory {path}", script)
        content = args["content"]
        if content is None:
            if not st.exists:
                return fail_on_apply(
                    f"set attributes of {path}",
                    f"file {path}: absent and no content given (give content: or use state: absent)",
                )
            diffs = _attrs_differ(st, mode, owner, group)
            if not diffs:
                return NoChange(f"{path} attributes ok")
            return Change(f"{path}: {', '.join(diffs)}", self._attr_script(path, mode, owner, group))
        data = _content_bytes(content)
        want_sha = hashlib.sha256(data).hexdigest()
        if st.is_file and st.sha256 == want_sha:
            diffs = _attrs_differ(st, mode, owner, group)
            if not diffs:
                return NoChange(f"{path} up to date")
            return Change(f"{path}: {', '.join(diffs)}", self._attr_script(path, mode, owner, group))
        if st.exists and not st.is_file:
            raise RoleError(f"{path} exists and is a {st.kind}, not a file", hint="remove it or change the task's path")
        verb = "update" if st.exists else "create"
        mode = mode or (st.mode if st.exists else "644")
        return Change(
            f"{verb} {path}",
            write_file_script(path, data, mode, owner, group),
            diff=text_diff(path, st.content if st.exists else None, data),
        )

    @staticmethod
    def _attr_script(path: str, mode: str | None, owner: str | None, group: str | None) -> str:
        lines = []
        if mode:
            lines.append(f"chmod {q(mode)} -- {q(path)}")
        if owner or group:
            lines.append(f"chown {q((owner or '') + (':' + group if group else ''))} -- {q(path)}")
        return "\n".join(lines) or "true"


@register
class TemplateModule(FileModule):
    """Render templates/<src> with the host's variables and ensure the result at dest."""

    name = "template"
    params = {
        "src": Param(str, required=True),
        "dest": Param(str, required=True),
        "mode": Param((str, int)),
        "owner": Param(str),
        "group": Param(str),
        "content": Param(str, internal=True),  # filled in by the engine from src
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        file_args = {
            "path": args["dest"],
            "state": "file",
            "content": args["content"],
            "src": None,
            "mode": args["mode"],
            "owner": args["owner"],
            "group": args["group"],
        }
        out = FileModule.normalize(self, file_args, where)
        out["template"] = args["src"]
        return out

    def prepare(self, raw: Mapping[str, Any], r: ArgRenderer) -> dict[str, Any]:
        args = r.render(dict(raw))
        args["content"] = r.render_file(str(args.get("src")))
        return args


@register
class LineModule(Module):
    """Ensure a line is present (optionally replacing the line matching `regexp`) or absent."""

    name = "line"
    params = {
        "path": Param(str, required=True),
        "line": Param(str),
        "regexp": Param(str),
        "state": Param(str, default="present", choices=("present", "absent")),
        "create": Param(bool, default=True),
        "mode": Param((str, int)),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        if args["state"] == "present" and args["line"] is None:
            raise RoleError(f"{where}: line state=present needs line:", hint="add line:")
        if args["state"] == "absent" and args["line"] is None and args["regexp"] is None:
            raise RoleError(f"{where}: line state=absent needs line: or regexp:", hint="add one of them")
        if args["regexp"]:
            try:
                re.compile(args["regexp"])
            except re.error as exc:
                raise RoleError(f"{where}: invalid regexp {args['regexp']!r}: {exc}", hint="fix the regexp") from None
        args["mode"] = _mode_arg(args["mode"], where)
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        return [FactQuery("file", f"file:{args['path']}", file_state_script(args["path"]), parse_file_state)]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"file:{args['path']}"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        st: FileState = facts["file"]
        path = args["path"]
        if not st.exists:
            if args["state"] == "absent":
                return NoChange(f"{path} absent")
            if not args["create"]:
                return fail_on_apply(
                    f"edit {path}", f"{path} does not exist (set create: true or create the file first)"
                )
        if st.exists and st.kind == "symbolic link":
            # the edit is written with a rename, which would replace the link by a plain file
            raise RoleError(f"{path} is a symbolic link", hint="give the link's target as path")
        if st.exists and st.content is None:
            raise RoleError(f"{path} is too large or not a regular file for line editing", hint="use file/template")
        old = (st.content or b"").decode()
        lines = old.splitlines()
        rx = re.compile(args["regexp"]) if args["regexp"] else None
        want = args["line"]
        if args["state"] == "present":
            if rx is not None:
                hits = [i for i, ln in enumerate(lines) if rx.search(ln)]
                if hits:
                    new_lines = list(lines)
                    for i in hits:
                        new_lines[i] = want
                    # drop duplicates of the wanted line created by several matches
                    seen, dedup = False, []
                    for i, ln in enumerate(new_lines):
                        if i in hits:
                            if seen:
                                continue
                            seen = True
                        dedup.append(ln)
                    new_lines = dedup
                elif want in lines:
                    new_lines = lines
                else:
                    new_lines = lines + [want]
            else:
                new_lines = lines if want in lines else lines + [want]
        else:
            new_lines = [ln for ln in lines if not ((rx and rx.search(ln)) or (want is not None and ln == want))]
        new = "\n".join(new_lines) + ("\n" if new_lines else "")
        if new == old or (new_lines == lines and old.endswith("\n")):
            return NoChange(f"{path} already as wanted")
        data = new.encode()
        mode = args["mode"] or (st.mode if st.exists else "644")
        return Change(
            f"edit {path}",
            write_file_script(path, data, mode, st.owner or None, st.group or None),
            diff=text_diff(path, st.content if st.exists else None, data),
        )


@register
class FetchModule(Module):
    """Copy a remote file back to the operator's machine (e.g. the admin kubeconfig)."""

    name = "fetch"
    batchable = False
    params = {
        "src": Param(str, required=True),
        "dest": Param(str, required=True),
        "mode": Param((str, int), default="0600"),
        # kubeconfig: rewrite `server:` URLs to the address the operator reaches the API at
        "server": Param(str),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        args["dest"] = str(Path(args["dest"]).expanduser())
        args["mode"] = _mode_arg(args["mode"], where)
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        # the content travels with the facts whatever its size: the engine writes it locally
        return [
            FactQuery(
                "file",
                f"file:{args['src']}",
                file_state_script(args["src"], with_content=True, limit=None),
                parse_file_state,
            )
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return set()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        st: FileState = facts["file"]
        if not st.is_file:
            return fail_on_apply(
                f"fetch {args['src']} -> {args['dest']}",
                f"remote file {args['src']} does not exist (run the role that creates it first)",
            )
        dest = Path(args["dest"])
        content = st.content or b""
        if args["server"]:
            content = re.sub(rb"(?m)^(\s*server:\s*).*$", lambda m: m.group(1) + args["server"].encode(), content)
        local = dest.read_bytes() if dest.is_file() else None
        mode_ok = dest.is_file() and oct(dest.stat().st_mode & 0o777)[2:] == args["mode"].lstrip("0").rjust(3, "0")
        if local is not None and local == content and mode_ok:
            return NoChange(f"{dest} up to date")
        # the content came with the facts: nothing to run on the host, the engine writes locally
        return LocalWrite(
            f"fetch {args['src']} -> {dest}", str(dest), content, args["mode"], diff=f"local file {dest} updated"
        )


@register
class UploadModule(Module):
    """Upload a (large) local file: skipped when the host already has it, resumable, checksum-verified."""

    name = "upload"
    batchable = False
    params = {
        "src": Param(str, required=True),
        "dest": Param(str, required=True),
        "sha256": Param(str),
        "mode": Param((str, int), default="0644"),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        src = Path(args["src"]).expanduser()
        if not src.is_file():
            raise RoleError(f"{where}: upload source {src} not found", hint="check the path (e.g. cluster.bundle)")
        args["src"] = str(src)
        args["mode"] = _mode_arg(args["mode"], where)
        if not args["sha256"]:
            args["sha256"] = file_sha256(src)
        return args

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        d = q(args["dest"])
        # the checksum recorded after a verified upload (not older than the file) spares hashing
        # hundreds of MB on every run
        script = (
            f"if [ -f {d} ] && [ -f {d}.sha256 ] && [ ! {d} -nt {d}.sha256 ]; then cut -c1-64 {d}.sha256; "
            f"elif [ -f {d} ]; then sha256sum < {d} | cut -c1-64; else echo none; fi; "
            f"if [ -f {d}.part ]; then stat -c %s -- {d}.part; else echo 0; fi"
        )
        return [
            FactQuery("remote", f"file:{args['dest']}", script, lambda o, rc: tuple((o.split() + ["none", "0"])[:2]))
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"file:{args['dest']}"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        sha, part = facts["remote"]
        if sha == args["sha256"]:
            return NoChange(f"{args['dest']} present (sha256 {sha[:12]})")
        size = os.path.getsize(args["src"])
        offset = int(part) if part.isdigit() and int(part) <= size else 0
        note = f", resuming at {offset} bytes" if offset else ""
        return Upload(
            f"upload {Path(args['src']).name} ({size // 1048576} MiB) -> {args['dest']}{note}",
            src=args["src"],
            dest=args["dest"],
            sha256=args["sha256"],
            mode=args["mode"],
            offset=offset,
        )
