"""The bundle manifest (format 1): typed model, JSON (de)serialisation and validation.

The format is a contract with the installer role; docs/bundle.md is its specification.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

from provisioner.errors import BundleError, InputError

FORMAT = 1
MANIFEST_NAME = "manifest.json"

#: what a file is for; the installer decides where it goes from this and its path
KINDS = ("binary", "cni", "image", "tool")

#: the images a kubeadm control plane needs offline (keys of Manifest.images)
CORE_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "pause", "etcd")
#: images that may be absent (then null in Manifest.images and listed in Manifest.skipped)
OPTIONAL_IMAGES = ("coredns", "smoke")

#: MAJOR.MINOR.PATCH with an optional pre-release label (the lab's upgrade rehearsal target is 1.20.3-lab.0)
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z][0-9A-Za-z.]*)?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MODE_RE = re.compile(r"^0[0-7]{3}$")
_ARCH_RE = re.compile(r"^[a-z0-9_]+$")
IMAGE_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (tarfile's "could not be opened" lists every method on its own line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and lines[-1].startswith("- method tar:"):
        return lines[-1][len("- method tar:") :].strip().rstrip(")")
    return " ".join(lines)


def normalize_version(version: str) -> str:
    """'v1.20.2' or '1.20.2' -> '1.20.2'; anything else is an InputError."""
    m = _VERSION_RE.match(version.strip()) if isinstance(version, str) else None
    if not m:
        raise InputError(
            f"bad Kubernetes version {version!r}: expected MAJOR.MINOR.PATCH",
            hint="e.g. --kubernetes-version 1.20.2 (a leading 'v' is accepted)",
        )
    return ".".join(m.groups()[:3]) + (m.group(4) or "")


def safe_member_path(path: object) -> str:
    """A normalised relative POSIX path, or BundleError for absolute/escaping/odd paths."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        raise BundleError(f"bad path in bundle: {path!r}")
    norm = posixpath.normpath(path)
    if norm.startswith("/") or norm == "." or norm.split("/")[0] == "..":
        raise BundleError(f"unsafe path in bundle: {path!r}", hint="a bundle path must be relative and stay inside")
    return norm


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle, as listed in manifest.json."""

    path: str
    sha256: str
    size: int
    mode: int = 0o644
    kind: str = "tool"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "mode": f"{self.mode:04o}",
            "kind": self.kind,
        }


@dataclass(frozen=True)
class ImageFile:
    """A docker-archive tar in the bundle and the one image reference it holds."""

    ref: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "path": self.path}


@dataclass(frozen=True)
class Skipped:
    """Something a complete bundle would contain but this one does not (or only as a stand-in), and why."""

    what: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "why": self.why}


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest.json of a bundle."""

    kubernetes_version: str
    arch: str
    created: str
    label: str
    image_repository: str
    images: Mapping[str, str | None]
    files: tuple[FileEntry, ...]
    image_files: tuple[ImageFile, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    format: int = FORMAT
    _by_path: Mapping[str, FileEntry] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", MappingProxyType(dict(self.images)))
        object.__setattr__(self, "_by_path", MappingProxyType({f.path: f for f in self.files}))

    def file(self, path: str) -> FileEntry | None:
        """The entry for a bundle path, or None."""
        return self._by_path.get(path)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "kubernetes_version": self.kubernetes_version,
            "arch": self.arch,
            "created": self.created,
            "label": self.label,
            "image_repository": self.image_repository,
            "images": dict(self.images),
            "files": [f.to_dict() for f in self.files],
            "image_files": [i.to_dict() for i in self.image_files],
            "skipped": [s.to_dict() for s in self.skipped],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"{source}: not valid JSON ({exc})", hint="the bundle is corrupt; rebuild it") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        """Validate a decoded manifest; any problem is a one-line BundleError naming the field."""
        p = _Parser(source)
        if not isinstance(data, dict):
            p.fail("the manifest is not a JSON object")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise BundleError(
                f"{source}: unsupported bundle format {fmt!r} (this kprov reads format {FORMAT})",
                hint="rebuild the bundle with this kprov version",
            )
        version = p.string(data, "kubernetes_version")
        try:
            version = normalize_version(version)
        except InputError:
            p.fail(f"kubernetes_version {version!r} is not MAJOR.MINOR.PATCH")
        arch = p.string(data, "arch")
        if not _ARCH_RE.match(arch):
            p.fail(f"bad arch {arch!r}")
        files = tuple(p.file_entry(i, e) for i, e in enumerate(p.list(data, "files")))
        seen: set[str] = set()
        for f in files:
            if f.path in seen or f.path == MANIFEST_NAME:
                p.fail(f"file {f.path!r} listed twice (or clashes with {MANIFEST_NAME})")
            seen.add(f.path)
        images_raw = data.get("images")
        if not isinstance(images_raw, dict):
            p.fail("'images' must be an object")
        images: dict[str, str | None] = {}
        for key, ref in images_raw.items():
            if (
                not isinstance(key, str)
                or not IMAGE_KEY_RE.match(key)
                or not (ref is None or isinstance(ref, str) and ref)
            ):
                p.fail(f"bad images entry {key!r}: {ref!r}")
            images[key] = ref
        image_files = tuple(p.image_file(i, e) for i, e in enumerate(p.list(data, "image_files")))
        for im in image_files:
            entry = next((f for f in files if f.path == im.path), None)
            if entry is None or entry.kind != "image":
                p.fail(f"image_files entry {im.ref!r} points at {im.path!r}, which is not an image file of the bundle")
        skipped = tuple(
            Skipped(p.string(s, "what"), p.string(s, "why"))
            if isinstance(s, dict)
            else p.fail(f"bad skipped entry {s!r}")
            for s in p.list(data, "skipped", required=False)
        )
        return cls(
            format=fmt,
            kubernetes_version=version,
            arch=arch,
            created=p.string(data, "created"),
            label=p.string(data, "label", allow_empty=True),
            image_repository=p.string(data, "image_repository"),
            images=images,
            files=files,
            image_files=image_files,
            skipped=skipped,
        )


class _Parser:
    """Small helpers that turn a malformed manifest into one precise BundleError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, what: str) -> NoReturn:
        raise BundleError(f"{self.source}: {what}", hint="the bundle is corrupt or was not made by kprov; rebuild it")

    def string(self, d: dict, key: str, allow_empty: bool = False) -> str:
        v = d.get(key)
        if not isinstance(v, str) or (not v and not allow_empty):
            self.fail(f"missing or bad {key!r}")
        return v

    def list(self, d: dict, key: str, required: bool = True) -> list:
        v = d.get(key, None if required else [])
        if not isinstance(v, list):
            self.fail(f"missing or bad {key!r} (expected a list)")
        return v

    def file_entry(self, i: int, e: Any) -> FileEntry:
        if not isinstance(e, dict):
            self.fail(f"files[{i}] is not an object")
        try:
            path = safe_member_path(e.get("path"))
        except BundleError as exc:
            self.fail(f"files[{i}]: {exc.message}")
        sha, size, mode, kind = e.get("sha256"), e.get("size"), e.get("mode"), e.get("kind")
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            self.fail(f"{path}: bad sha256 {sha!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            self.fail(f"{path}: bad size {size!r}")
        if not isinstance(mode, str) or not _MODE_RE.match(mode):
            self.fail(f'{path}: bad mode {mode!r} (expected e.g. "0755")')
        if kind not in KINDS:
            self.fail(f"{path}: bad kind {kind!r} (one of {', '.join(KINDS)})")
        return FileEntry(path=path, sha256=sha, size=size, mode=int(mode, 8), kind=kind)

    def image_file(self, i: int, e: Any) -> ImageFile:
        if not isinstance(e, dict):
            self.fail(f"image_files[{i}] is not an object")
        return ImageFile(ref=self.string(e, "ref"), path=safe_member_path(self.string(e, "path")))
