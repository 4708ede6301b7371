"""Write a one-layer docker-archive image tar offline (for `ctr images import`); stdlib only.

No registry is reachable from lab nodes, so test images are assembled from files. The module runs
as a library on the host or as a script inside a node (`python3 - OUT REF ITEM... < mkimage.py`):

    ITEM  SRC:DST      copy file SRC (symlinks followed) to DST in the image
          DST->TARGET  symlink DST -> TARGET
          DST/         empty directory
Parent directories are created (mode 755; /tmp 1777). `ctr images import` prefixes a bare
reference with docker.io/ (gotcha G11): run it as docker.io/<ref>.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Sequence

DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
BASE_DIRS = ("tmp", "etc", "proc", "sys", "dev", "run", "var")


def _layer(items: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def mkdirs(path: str) -> None:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d and d not in seen:
                    seen.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o1777 if d == "tmp" else 0o755
                    tar.addfile(info)

        for d in BASE_DIRS:
            mkdirs(d)
        for item in items:
            if "->" in item:
                dst, target = item.split("->", 1)
                dst = dst.strip("/")
                mkdirs(os.path.dirname(dst))
                if dst not in seen:
                    seen.add(dst)
                    info = tarfile.TarInfo(dst)
                    info.type = tarfile.SYMTYPE
                    info.linkname = target
                    tar.addfile(info)
            elif item.endswith("/") and ":" not in item:
                mkdirs(item)
            else:
                src, dst = item.split(":", 1)
                dst = dst.strip("/")
                mkdirs(os.path.dirname(dst))
                if dst not in seen:
                    seen.add(dst)
                    st = os.stat(src)
                    info = tarfile.TarInfo(dst)
                    info.size = st.st_size
                    info.mode = st.st_mode & 0o7777
                    with open(src, "rb") as fh:
                        tar.addfile(info, fh)
    return buf.getvalue()


def build(
    out: str,
    ref: str,
    items: Sequence[str],
    *,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] = DEFAULT_ENV,
) -> int:
    """Write the image archive to `out`; returns the layer size in bytes."""
    layer = _layer(items)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config: dict = {"Env": list(env)}
    if entrypoint:
        config["Entrypoint"] = list(entrypoint)
    if cmd:
        config["Cmd"] = list(cmd)
    config_blob = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "kprov mkimage"}],
        }
    ).encode()
    config_name = hashlib.sha256(config_blob).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in (("layer.tar", layer), (config_name, config_blob), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return len(layer)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("ref")
    ap.add_argument("--entrypoint", help="JSON list")
    ap.add_argument("--cmd", help="JSON list")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("items", nargs="*")
    a = ap.parse_intermixed_args(argv)
    size = build(
        a.out, a.ref, a.items,
        entrypoint=json.loads(a.entrypoint) if a.entrypoint else None,
        cmd=json.loads(a.cmd) if a.cmd else None,
        env=a.env or DEFAULT_ENV,
    )  # fmt: skip
    print(f"{a.out} {a.ref} {size // 1024} KiB")


if __name__ == "__main__":
    main()
