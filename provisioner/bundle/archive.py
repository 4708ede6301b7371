"""Reading bundles: manifest, full verification, verified extraction."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from provisioner.bundle.manifest import MANIFEST_NAME, Manifest, one_line, safe_member_path
from provisioner.errors import BundleError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_REBUILD = "rebuild the bundle (kprov bundle build) or copy it again"


def _open(path: Path, stream: bool) -> tarfile.TarFile:
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}", hint="check the path (kprov bundle build -o FILE makes one)")
    try:
        return tarfile.open(path, "r|*" if stream else "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(
            f"{path.name}: not a readable tar or tar.gz archive ({one_line(exc)})",
            hint="a bundle is a .tar or .tar.gz made by kprov bundle build",
        ) from None


def _member_name(member: tarfile.TarInfo) -> str:
    return safe_member_path(member.name)


def read_manifest(path: Path | str) -> Manifest:
    """Read and validate manifest.json of a bundle (without checking the files)."""
    path = Path(path)
    try:
        with _open(path, stream=True) as t:
            for member in t:
                if member.isfile() and _member_name(member) == MANIFEST_NAME:
                    f = t.extractfile(member)
                    return Manifest.from_json(f.read() if f else b"", f"{path.name}: {MANIFEST_NAME}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{path.name}: truncated or corrupt archive ({one_line(exc)})", hint=_REBUILD) from None
    raise BundleError(f"{path.name}: no {MANIFEST_NAME} inside", hint="this is not a kprov bundle")


def _hash_stream(f, sink: Callable[[bytes], object] | None = None) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        n += len(chunk)
        if sink:
            sink(chunk)
    return h.hexdigest(), n


def _scan(path: Path, dest: Path | None) -> Manifest:
    """One pass over the archive: hash every file (writing it under dest when given), then compare."""
    seen: dict[str, tuple[str, int, int]] = {}
    manifest_bytes: bytes | None = None
    try:
        with _open(path, stream=True) as t:
            for member in t:
                name = _member_name(member)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(
                        f"{path.name}: {name} is not a regular file (links and devices are refused)", hint=_REBUILD
                    )
                if name in seen or (name == MANIFEST_NAME and manifest_bytes is not None):
                    raise BundleError(f"{path.name}: {name} appears twice in the archive", hint=_REBUILD)
                f = t.extractfile(member)
                if f is None:  # regular files only (checked above); keeps the type narrow
                    raise BundleError(f"{path.name}: {name} cannot be read", hint=_REBUILD)
                if name == MANIFEST_NAME:
                    manifest_bytes = f.read()
                    continue
                if dest is None:
                    digest, size = _hash_stream(f)
                else:
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as out:
                        digest, size = _hash_stream(f, out.write)
                seen[name] = (digest, size, member.mode)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{path.name}: truncated or corrupt archive ({one_line(exc)})", hint=_REBUILD) from None
    if manifest_bytes is None:
        raise BundleError(f"{path.name}: no {MANIFEST_NAME} inside", hint="this is not a kprov bundle")
    manifest = Manifest.from_json(manifest_bytes, f"{path.name}: {MANIFEST_NAME}")
    for entry in manifest.files:
        got = seen.pop(entry.path, None)
        if got is None:
            raise BundleError(f"{path.name}: {entry.path} is listed in the manifest but missing", hint=_REBUILD)
        digest, size, _ = got
        if size != entry.size:
            raise BundleError(
                f"{path.name}: {entry.path} has {size} bytes, the manifest says {entry.size}", hint=_REBUILD
            )
        if digest != entry.sha256:
            raise BundleError(
                f"{path.name}: {entry.path} is corrupt (sha256 {digest[:12]}…, manifest says {entry.sha256[:12]}…)",
                hint=_REBUILD,
            )
        if dest is not None:
            os.chmod(dest / entry.path, entry.mode)
    if dest is not None:
        (dest / MANIFEST_NAME).write_bytes(manifest_bytes)
    if seen:
        extra = sorted(seen)
        raise BundleError(
            f"{path.name}: {extra[0]} is not listed in the manifest"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
            hint=_REBUILD,
        )
    return manifest


def verify(path: Path | str) -> Manifest:
    """Check every file's size and sha256 against the manifest; BundleError naming the first bad file."""
    path = Path(path)
    manifest = _scan(path, None)
    log.info("verified %s: %d files, %d bytes", path, len(manifest.files), manifest.total_size)
    return manifest


def extract(path: Path | str, dest: Path | str) -> Manifest:
    """Verify and unpack a bundle into `dest` (created; must not exist). Nothing is left behind on error."""
    path, dest = Path(path), Path(dest)
    if dest.exists():
        raise BundleError(f"cannot extract into {dest}: it already exists", hint="choose a new directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        manifest = _scan(path, tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
