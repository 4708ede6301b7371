"""bundle_serve, bundle_pull: the seed node serves the unpacked bundle, the other nodes pull it.

The control machine uploads the bundle to one node only (the seed); see docs/bundle.md, "Distribution
between nodes", and provisioner/bundle/distribution.py for the scripts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.bundle.distribution import needed_files, pull_script, serve_script
from provisioner.bundle.manifest import MANIFEST_NAME
from provisioner.errors import RoleError
from provisioner.modules.base import Change, Decision, FactQuery, Module, NoChange, Param, q, register


def _peers(value: Any) -> list[str]:
    return [str(p) for p in (value.split() if isinstance(value, str) else value or [])]


@register
class BundleServeModule(Module):
    """Serve `root` (an unpacked, verified bundle) over HTTP on bind:port until every peer has its copy;
    `meanwhile` is shell the seed runs while it serves (its own install and image import)."""

    name = "bundle_serve"
    params = {
        "root": Param(str, required=True),
        "bind": Param(str, required=True),
        "port": Param(int, default=0),
        "token": Param(str, default=""),
        "peers": Param((list, str), default=[]),
        "idle": Param(int, default=60),
        "deadline": Param(int, default=1200),
        "unavailable": Param(str, default=""),
        "meanwhile": Param(str, default=""),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        args["peers"] = _peers(args["peers"])
        if args["token"] and not args["token"].isalnum():
            raise RoleError(f"{where}: bundle_serve.token must be letters and digits", hint="fix the task")
        return args

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return set()

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        if not args["peers"]:
            return NoChange("no other node needs the bundle")
        if args["unavailable"] or not args["port"] or not args["token"]:
            return NoChange(f"not served ({args['unavailable'] or 'no port'}): the other nodes upload directly")
        script = serve_script(
            args["root"],
            args["bind"],
            args["port"],
            args["token"],
            args["peers"],
            args["idle"],
            args["deadline"],
            args["meanwhile"],
        )
        return Change(
            f"serve the bundle on {args['bind']}:{args['port']} to {len(args['peers'])} nodes",
            script,
            reports_changed=False,
        )

    def result_data(self, args: Mapping[str, Any], change: Change, rc: int, stdout: str, stderr: str) -> dict[str, Any]:
        # the server's summary (bytes served, to whom, why it stopped) is what the run reports
        out = stdout.strip()
        return {"stdout": out, "stdout_lines": out.splitlines(), "rc": rc, "msg": out or change.msg}


@register
class BundlePullModule(Module):
    """Pull the files this node needs from the seed into `dest`; `fallback: ...` when it cannot."""

    name = "bundle_pull"
    params = {
        "dest": Param(str, required=True),
        "url": Param(str, default=""),
        "files": Param(list, required=True),
        "control_plane": Param(bool, default=True),
        "peer": Param(str, required=True),
        "wait": Param(int, default=60),
        "why_not": Param(str, default=""),
    }

    def normalize(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        for f in args["files"]:
            if not isinstance(f, Mapping) or not {"path", "sha256", "size"} <= set(f):
                raise RoleError(
                    f"{where}: bundle_pull.files: each entry needs path, sha256 and size",
                    hint='files: "{{ bundle_files }}"',
                )
        args["files"] = needed_files(args["files"], args["control_plane"])
        return args

    def _marker(self, args: Mapping[str, Any]) -> str:
        return f"{args['dest']}/{MANIFEST_NAME}"

    def facts(self, args: Mapping[str, Any]) -> list[FactQuery]:
        m = self._marker(args)
        # the same resource as the unpack task's `creates`: a pull invalidates it
        return [
            FactQuery("present", f"file:{m}", f"[ -e {q(m)} ] && echo yes || echo no", lambda o, rc: o.strip() == "yes")
        ]

    def touches(self, args: Mapping[str, Any]) -> set[str]:
        return {f"file:{self._marker(args)}"}

    def check(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        if facts["present"]:
            return NoChange(f"{args['dest']} present")
        if not args["url"]:
            why = args["why_not"] or "no seed serves the bundle in this run"
            return Change(f"upload directly: {why}", f"echo {q('fallback: ' + why)}", reports_changed=False)
        size = sum(int(f["size"]) for f in args["files"])
        script = pull_script(args["dest"], args["url"], args["files"], args["peer"], args["wait"])
        return Change(f"pull {len(args['files'])} files ({size // 1048576} MiB) from {args['url']}", script)

    def result_data(self, args: Mapping[str, Any], change: Change, rc: int, stdout: str, stderr: str) -> dict[str, Any]:
        out = stdout.strip()
        return {
            "stdout": out,
            "stdout_lines": out.splitlines(),
            "rc": rc,
            "msg": out or change.msg,
            "pulled": "pulled:" in out,
            "fallback": "fallback:" in out,
        }
