"""Bundle distribution between nodes: the control machine sends the bundle once, to a seed node; the other
nodes pull what they need from the seed over HTTP (docs/bundle.md, "Distribution between nodes").

This module only builds data and shell scripts (pure); the `bundle_serve` and `bundle_pull` modules
(provisioner/modules/bundle.py) hand them to the engine, which runs them on the hosts.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from provisioner.bundle.manifest import MANIFEST_NAME, Manifest, safe_member_path
from provisioner.errors import BundleError

#: images only a control plane runs (static pods); a worker never needs them
CONTROL_PLANE_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
#: binaries only a control plane runs (present in some bundles next to the images)
CONTROL_PLANE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "etcdctl")

SERVER_SOURCE = Path(__file__).with_name("serve.py")


def control_plane_only(manifest: Manifest) -> frozenset[str]:
    """Bundle paths a worker does not need: the control-plane images and binaries."""
    out = {i.path for i in manifest.image_files if any(manifest.images.get(k) == i.ref for k in CONTROL_PLANE_IMAGES)}
    out |= {
        f.path
        for f in manifest.files
        if f.kind in ("binary", "tool")
        and f.path.startswith("bin/")
        and os.path.basename(f.path) in CONTROL_PLANE_BINARIES
    }
    return frozenset(out)


def manifest_bytes(path: Path | str) -> bytes:
    """The raw manifest.json of a bundle (its sha256 lets nodes verify the copy they pull)."""
    path = Path(path)
    try:
        with tarfile.open(path, "r|*") as t:
            for member in t:
                if member.isfile() and safe_member_path(member.name) == MANIFEST_NAME:
                    f = t.extractfile(member)
                    return f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{path.name}: cannot read {MANIFEST_NAME} ({exc})", hint="rebuild the bundle") from None
    raise BundleError(f"{path.name}: no {MANIFEST_NAME} inside", hint="this is not a kprov bundle")


def distribution_vars(path: Path | str, manifest: Manifest) -> dict[str, Any]:
    """Cluster-wide variables for the roles: every file with its checksum, size and who needs it."""
    cp_only = control_plane_only(manifest)
    raw = manifest_bytes(path)
    files = [{"path": f.path, "sha256": f.sha256, "size": f.size, "cp_only": f.path in cp_only} for f in manifest.files]
    files.append({"path": MANIFEST_NAME, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw), "cp_only": False})
    return {
        "bundle_files": files,
        "bundle_cp_only_paths": sorted(cp_only),
        "bundle_worker_bytes": sum(f["size"] for f in files if not f["cp_only"]),
        "bundle_full_bytes": sum(f["size"] for f in files),
    }


def needed_files(files: Iterable[Mapping[str, Any]], control_plane: bool) -> list[Mapping[str, Any]]:
    """The files one node needs: everything on a control plane, no control-plane-only file on a worker."""
    return [f for f in files if control_plane or not f.get("cp_only")]


def _q(v: Any) -> str:
    return shlex.quote(str(v))


def serve_script(
    root: str, bind: str, port: int, token: str, peers: Sequence[str], idle: int, deadline: int, meanwhile: str = ""
) -> str:
    """Run the bundle server until every peer has its copy (or idle/deadline).

    `meanwhile` (shell) runs on the seed while it serves, e.g. its own image import: the seed's work then
    overlaps the others' pulls instead of starting after the last one. The script ends when both have; its
    exit code is `meanwhile`'s (the server never fails the task: the nodes fall back to direct uploads).
    The server is a child of this script: when kprov's session ends (done, Ctrl-C, killed, timed out) the
    whole process group is terminated by the engine's guard; nothing is left listening."""
    code = base64.b64encode(SERVER_SOURCE.read_bytes()).decode()
    loader = "import base64,sys;exec(compile(base64.b64decode(sys.argv.pop(1)),'kprov-bundle-serve','exec'))"
    args = " ".join(_q(a) for a in (root, bind, int(port), token, int(idle), int(deadline), *peers))
    serve = (
        f"if ! command -v python3 >/dev/null 2>&1; then echo 'not served: no python3 on the seed'; exit 0; fi\n"
        f"[ -f {_q(root + '/' + MANIFEST_NAME)} ] || {{ echo 'not served: no unpacked bundle at {root}'; exit 0; }}\n"
        f"python3 -c {_q(loader)} {code} {args} || echo 'not served: the server failed (see stderr)'"
    )
    if not meanwhile.strip():
        return serve
    # the server's summary line is printed after meanwhile's output (it waits for its own end first)
    # both in the background: `set -e` holds inside meanwhile (it would not in an && / || list)
    return (
        f"( {serve}\n) & kprov_serve=$!\n"
        f"( set -e\n{meanwhile}\n) & kprov_work=$!\n"
        f'wait "$kprov_work" && kprov_rc=0 || kprov_rc=$?\n'
        f'wait "$kprov_serve" || true\n'
        f'exit "$kprov_rc"'
    )


def pull_script(
    dest: str, base_url: str, files: Sequence[Mapping[str, Any]], peer: str, wait: int, stall: int = 30
) -> str:
    """Pull `files` from the seed into `dest` (resumable, checksum-verified), then tell the seed.

    Prints `pulled: ...` on success, else `fallback: <reason>` (exit 0 both: the role then uploads the
    bundle directly). Partial files stay in `dest`.part, so a rerun resumes with Range requests."""
    sums = "".join(f"{f['sha256']}  {safe_member_path(f['path'])}\n" for f in files)
    fetch = "\n".join(
        f"get {_q(f['path'])} {int(f['size'])} || fail 'cannot fetch {f['path']} from the seed'" for f in files
    )
    total = sum(int(f["size"]) for f in files)
    dirs = sorted({os.path.dirname(f["path"]) for f in files if os.path.dirname(f["path"])})
    return f"""d={_q(dest)}
url={_q(base_url.rstrip("/"))}
done_url() {{ curl -fsS --connect-timeout 5 --max-time 10 -o /dev/null "$url/done/"{_q(peer)} 2>/dev/null || true; }}
fail() {{ echo "fallback: $1"; done_url; exit 0; }}
command -v curl >/dev/null 2>&1 || {{ echo 'fallback: no curl on this node'; exit 0; }}
command -v sha256sum >/dev/null 2>&1 || {{ echo 'fallback: no sha256sum on this node'; exit 0; }}
end=$(( $(date +%s) + {int(wait)} ))
until curl -fsS --connect-timeout 3 --max-time 5 -o /dev/null "$url/ping" 2>/dev/null; do
  [ "$(date +%s)" -lt "$end" ] || {{ echo 'fallback: the seed did not answer within {int(wait)}s'; exit 0; }}
  sleep 1
done
mkdir -p "$d.part" && cd "$d.part" || fail 'cannot write {dest}.part'
mkdir -p {" ".join(_q(x) for x in dirs) or "."}
get() {{
  have=$(stat -c %s -- "$1" 2>/dev/null || echo 0)
  [ "$have" -eq "$2" ] && return 0
  [ "$have" -lt "$2" ] || rm -f -- "$1"
  # resumable (Range), bounded: a transfer slower than 1 KiB/s for {stall}s is abandoned
  curl -fsS --connect-timeout 5 --retry 3 --retry-delay 1 --speed-limit 1024 --speed-time {int(stall)} \\
    -C - -o "$1" "$url/f/$1"
}}
verify() {{ printf '%s' {_q(sums)} | sha256sum -c - 2>/dev/null | sed -n 's/: FAILED.*//p'; }}
{fetch}
bad=$(verify)
if [ -n "$bad" ]; then
  # a corrupt piece (or a stale partial file) is fetched again once, from the start
  for f in $bad; do rm -f -- "$f"; done
  {fetch}
  bad=$(verify)
  if [ -n "$bad" ]; then for f in $bad; do rm -f -- "$f"; done; fail "checksum mismatch: $(echo $bad)"; fi
fi
cd / && rm -rf -- "$d" && mv -- "$d.part" "$d" || fail 'cannot move {dest}.part into place'
done_url
echo "pulled: {len(files)} files, {total // 1048576} MiB from $url, sha256-verified"
"""
