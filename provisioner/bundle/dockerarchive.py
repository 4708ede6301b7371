"""docker-archive image tars: write one offline, read the reference inside, retag.

A docker-archive (what `docker save` writes) is a tar with manifest.json ->
[{"Config": "<sha>.json", "RepoTags": ["repo:tag"], "Layers": ["layer.tar"]}].
containerd imports it with `ctr -n k8s.io images import FILE`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provisioner.bundle.manifest import one_line
from provisioner.errors import BundleError

log = logging.getLogger(__name__)

_BASE_DIRS = ("tmp", "etc", "proc", "sys", "dev", "run", "var")


@dataclass(frozen=True)
class CopyFile:
    """Copy host file `src` (symlinks followed) to `dst` in the image, keeping its mode."""

    src: Path
    dst: str


@dataclass(frozen=True)
class Symlink:
    dst: str
    target: str


@dataclass(frozen=True)
class Directory:
    dst: str


@dataclass(frozen=True)
class Content:
    """A file with literal content."""

    dst: str
    data: bytes
    mode: int = 0o644


Item = CopyFile | Symlink | Directory | Content


def parse_item(spec: str) -> Item:
    """'SRC:DST' copy, 'DST->TARGET' symlink, 'DIR/' directory (the mkimage.py item syntax)."""
    if "->" in spec:
        dst, target = spec.split("->", 1)
        return Symlink(dst, target)
    if spec.endswith("/") and ":" not in spec:
        return Directory(spec)
    if ":" in spec:
        src, dst = spec.split(":", 1)
        return CopyFile(Path(src), dst)
    raise BundleError(f"bad image item {spec!r}", hint="use SRC:DST, DST->TARGET or DIR/")


def write_image(
    out: Path,
    ref: str,
    items: Iterable[Item],
    *,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    arch: str = "amd64",
    mtime: int | None = None,
) -> None:
    """Write a single-layer docker-archive image to `out`.

    Deterministic for the same inputs and `mtime` (default: $SOURCE_DATE_EPOCH or 0).
    """
    if mtime is None:
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    layer_buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as t:

        def add(ti: tarfile.TarInfo, fileobj=None) -> None:
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mtime, 0, 0, "root", "root"
            t.addfile(ti, fileobj)

        def mkdirs(path: str) -> None:
            parts = [p for p in path.strip("/").split("/") if p]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                    add(ti)

        for d in _BASE_DIRS:
            mkdirs(d)
        for item in items:
            dst = item.dst.strip("/")
            if isinstance(item, Directory):
                mkdirs(dst)
                continue
            mkdirs(os.path.dirname(dst))
            if dst in seen:
                continue
            seen.add(dst)
            ti = tarfile.TarInfo(dst)
            if isinstance(item, Symlink):
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, item.target, 0o777
                add(ti)
            elif isinstance(item, Content):
                ti.size, ti.mode = len(item.data), item.mode
                add(ti, io.BytesIO(item.data))
            else:
                try:
                    st = os.stat(item.src)
                    with open(item.src, "rb") as f:
                        ti.size, ti.mode = st.st_size, st.st_mode & 0o7777
                        add(ti, f)
                except OSError as exc:
                    raise BundleError(f"image {ref}: cannot read {item.src}: {exc.strerror}") from None
    layer = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config: dict = {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if entrypoint:
        config["Entrypoint"] = entrypoint
    if cmd:
        config["Cmd"] = cmd
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    cfg = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "created": created,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "kprov dockerarchive"}],
        },
        sort_keys=True,
    ).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
    _write_members(out, [("layer.tar", layer), (cfg_name, cfg), ("manifest.json", manifest)], mtime)
    log.info("image %s -> %s (%d KiB)", ref, out, len(layer) // 1024)


def _write_members(out: Path, members: list[tuple[str, bytes]], mtime: int) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tarfile.open(tmp, "w") as t:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime = len(data), mtime
                t.addfile(ti, io.BytesIO(data))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _read_index(path: Path) -> list:
    try:
        with tarfile.open(path, "r:*") as t:
            try:
                f = t.extractfile("manifest.json")
            except KeyError:
                f = None
            if f is None:
                raise BundleError(
                    f"{path.name}: not a docker-archive image (no manifest.json inside)",
                    hint="save images with `docker save` / `ctr images export` (docker format)",
                )
            index = json.loads(f.read())
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise BundleError(f"{path.name}: not a readable docker-archive image ({one_line(exc)})") from None
    if not isinstance(index, list) or not index:
        raise BundleError(f"{path.name}: docker-archive manifest.json is empty or malformed")
    return index


def image_refs(path: Path) -> list[str]:
    """All RepoTags of a docker-archive (normally one)."""
    return [r for entry in _read_index(path) for r in (entry.get("RepoTags") or [])]


def image_ref(path: Path) -> str:
    """The single image reference inside a docker-archive; BundleError unless exactly one."""
    refs = image_refs(path)
    if len(refs) != 1:
        raise BundleError(
            f"{path.name}: expected exactly one tagged image, found {len(refs)} ({', '.join(refs)})",
            hint="put one image per tar file",
        )
    return refs[0]


def retag(src: Path, dst: Path, ref: str) -> None:
    """Copy docker-archive `src` to `dst` with RepoTags set to [ref] (layers unchanged)."""
    index = _read_index(src)
    if len(index) != 1:
        raise BundleError(f"{src.name}: expected one image, found {len(index)}")
    index[0]["RepoTags"] = [ref]
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        with tarfile.open(src, "r:*") as t_in, tarfile.open(tmp, "w") as t_out:
            for m in t_in:
                if m.name in ("manifest.json", "repositories"):
                    continue
                t_out.addfile(m, t_in.extractfile(m) if m.isfile() else None)
            data = json.dumps(index).encode()
            ti = tarfile.TarInfo("manifest.json")
            ti.size = len(data)
            t_out.addfile(ti, io.BytesIO(data))
        os.replace(tmp, dst)
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"cannot retag {src.name} as {ref}: {one_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
