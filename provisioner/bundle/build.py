"""Building a bundle from pluggable sources: a local directory, a release base URL, CNI/crictl URLs, image dirs."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.bundle import dockerarchive
from provisioner.bundle.fetch import download
from provisioner.bundle.manifest import (
    CORE_IMAGES,
    IMAGE_KEY_RE,
    MANIFEST_NAME,
    OPTIONAL_IMAGES,
    FileEntry,
    ImageFile,
    Manifest,
    Skipped,
    normalize_version,
    one_line,
)
from provisioner.bundle.sidecar import write_sidecar
from provisioner.errors import BundleError, InputError

log = logging.getLogger(__name__)

REQUIRED_BINARIES = ("kubeadm", "kubelet", "kubectl")
#: images published next to the binaries in the official release layout
RELEASE_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_ELF = b"\x7fELF"


@dataclass(frozen=True)
class BuildSpec:
    """What to put in a bundle and where to take it from (sources are combined; a path may come from one only)."""

    kubernetes_version: str
    arch: str = "amd64"
    label: str = ""
    image_repository: str = "k8s.gcr.io"
    #: a directory laid out like a bundle: bin/, cni/bin/ (or cni/), images/*.tar, tools/
    from_dir: Path | None = None
    #: official release layout: {base_url}/v{V}/bin/linux/{arch}/{kubeadm,kubelet,kubectl}[.sha256]
    base_url: str | None = None
    #: with base_url, also take kube-apiserver/controller-manager/scheduler/proxy .tar from there
    release_images: bool = True
    #: a CNI plugins .tgz (flat, as containernetworking/plugins releases); {url}.sha256 checked when present
    cni_url: str | None = None
    #: a crictl binary or a .tar.gz holding `crictl` (cri-tools release); {url}.sha256 checked when present
    crictl_url: str | None = None
    #: directories of docker-archive tars; images/<stem>.tar in the bundle, <stem> the key in `images`
    images_dirs: tuple[Path, ...] = ()
    #: reasons for things left out (or shipped as stand-ins); merged with automatic entries
    skipped: tuple[Skipped, ...] = ()
    #: allow missing core images (each recorded in `skipped`) instead of failing
    partial: bool = False
    timeout: float = 60.0
    #: ISO 8601 creation time (default: now, or $SOURCE_DATE_EPOCH)
    created: str | None = None


class _Sources:
    """Bundle path -> local file, refusing the same path from two sources."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.origin: dict[str, str] = {}

    def add(self, bundle_path: str, local: Path, origin: str) -> None:
        if bundle_path in self.files:
            raise InputError(
                f"{bundle_path} comes from both {self.origin[bundle_path]} and {origin}",
                hint="give each file from one source only",
            )
        self.files[bundle_path] = local
        self.origin[bundle_path] = origin


def _bundle_path_in_dir(rel: str) -> str | None:
    parts = rel.split("/")
    if len(parts) == 2 and parts[0] in ("bin", "tools"):
        return rel
    if len(parts) == 2 and parts[0] == "images" and parts[1].endswith(".tar"):
        return rel
    if len(parts) == 2 and parts[0] == "cni":
        return f"cni/bin/{parts[1]}"
    if len(parts) == 3 and parts[:2] == ["cni", "bin"]:
        return rel
    return None


def _from_dir(src: _Sources, d: Path) -> list[Skipped]:
    if not d.is_dir():
        raise InputError(f"--from-dir {d}: not a directory")
    skipped: list[Skipped] = []
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_dir():
            continue
        if rel == MANIFEST_NAME:
            # an unpacked bundle: keep its notes about what it lacks
            try:
                skipped = [Skipped(s["what"], s["why"]) for s in json.loads(p.read_text()).get("skipped", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring unreadable %s", p)
            continue
        bundle_path = _bundle_path_in_dir(rel)
        if bundle_path is None or not p.is_file():
            raise InputError(
                f"--from-dir {d}: unexpected file {rel}",
                hint="expected bin/*, cni/bin/* (or cni/*), images/*.tar, tools/*",
            )
        src.add(bundle_path, p, f"{d}")
    return skipped


def _from_base_url(src: _Sources, base_url: str, spec: BuildSpec, version: str, work: Path) -> None:
    base = f"{base_url.rstrip('/')}/v{version}/bin/linux/{spec.arch}"
    for name in REQUIRED_BINARIES:
        url = f"{base}/{name}"
        src.add(f"bin/{name}", download(url, work / name, timeout=spec.timeout, checksum_url=f"{url}.sha256"), url)
    if not spec.release_images:
        return
    for name in RELEASE_IMAGES:
        url = f"{base}/{name}.tar"
        raw = download(
            url, work / f"{name}.raw.tar", timeout=spec.timeout, checksum_url=f"{url}.sha256", required=not spec.partial
        )
        if raw is None:
            continue
        # release tars are tagged e.g. k8s.gcr.io/kube-apiserver-amd64:v1.20.2; kubeadm wants the plain name
        out = work / f"{name}.tar"
        dockerarchive.retag(raw, out, f"{spec.image_repository}/{name}:v{version}")
        raw.unlink()
        src.add(f"images/{name}.tar", out, url)


def _extract_tgz(archive: Path, url: str, want: set[str] | None, dest: Path) -> list[Path]:
    """Regular files of a tgz (flat names; only `want` when given) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as t:
            for m in t:
                name = os.path.basename(m.name)
                if not m.isfile() or not name or (want is not None and name not in want):
                    continue
                target = dest / name
                f = t.extractfile(m)
                if f is None:  # not reachable: m.isfile() above
                    continue
                with f, open(target, "wb") as o:
                    shutil.copyfileobj(f, o)
                target.chmod(0o755 if m.mode & 0o111 else 0o644)
                out.append(target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{url}: not a readable .tgz ({one_line(exc)})") from None
    return out


def _from_cni_url(src: _Sources, url: str, spec: BuildSpec, work: Path) -> None:
    tgz = download(url, work / "cni.tgz", timeout=spec.timeout, checksum_url=f"{url}.sha256")
    plugins = _extract_tgz(tgz, url, None, work / "cni")
    if not plugins:
        raise BundleError(f"{url}: no CNI plugins inside")
    for p in plugins:
        src.add(f"cni/bin/{p.name}", p, url)


def _from_crictl_url(src: _Sources, url: str, spec: BuildSpec, work: Path) -> None:
    raw = download(url, work / "crictl.download", timeout=spec.timeout, checksum_url=f"{url}.sha256")
    if tarfile.is_tarfile(raw):
        found = _extract_tgz(raw, url, {"crictl"}, work / "crictl-x")
        if not found:
            raise BundleError(f"{url}: no crictl inside")
        raw = found[0]
    src.add("bin/crictl", raw, url)


def _kind(bundle_path: str, local: Path) -> str:
    top = bundle_path.split("/")[0]
    if top == "images":
        return "image"
    if top == "cni":
        return "cni"
    if top == "bin":
        with open(local, "rb") as f:
            return "binary" if f.read(4) == _ELF else "tool"
    return "tool"


def _mode(bundle_path: str, local: Path, kind: str) -> int:
    """bin/ and cni/bin/ hold programs (downloads arrive without x bits); tools keep theirs; images are data."""
    if kind == "image":
        return 0o644
    if bundle_path.startswith(("bin/", "cni/bin/")):
        return 0o755
    if local.stat().st_mode & stat.S_IXUSR:
        return 0o755
    with open(local, "rb") as f:
        return 0o755 if f.read(2) == b"#!" else 0o644


def _hash(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _contains(path: Path, needle: bytes) -> bool:
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False


def _check_binaries(src: _Sources, version: str) -> None:
    for name in REQUIRED_BINARIES:
        if f"bin/{name}" not in src.files:
            raise InputError(
                f"no {name} among the sources (bin/{name})",
                hint="give --from-dir with bin/kubeadm, bin/kubelet, bin/kubectl, or --base-url",
            )
    # kubeadm carries its version string; a mismatch means binaries of another release were picked up
    if not _contains(src.files["bin/kubeadm"], f"v{version}".encode()):
        raise BundleError(
            f"bin/kubeadm (from {src.origin['bin/kubeadm']}) is not kubeadm v{version}",
            hint="the binaries must match --kubernetes-version",
        )


def _collect_images(
    src: _Sources, spec: BuildSpec, version: str, skipped: dict[str, Skipped]
) -> tuple[dict[str, str | None], list[ImageFile]]:
    images: dict[str, str | None] = {}
    files: list[ImageFile] = []
    by_ref: dict[str, str] = {}
    for path in sorted(p for p in src.files if p.startswith("images/")):
        key = path[len("images/") : -len(".tar")]
        if not IMAGE_KEY_RE.match(key):
            raise InputError(
                f"{path}: bad image file name (from {src.origin[path]})",
                hint="name image tars <key>.tar with lowercase letters, digits, '.', '_' or '-'",
            )
        ref = dockerarchive.image_ref(src.files[path])
        if ref in by_ref:
            raise BundleError(f"{path} and {by_ref[ref]} both hold {ref}")
        by_ref[ref] = path
        if key in CORE_IMAGES + ("coredns",):
            if not ref.startswith(spec.image_repository + "/"):
                raise BundleError(
                    f"{path} holds {ref}, which is not under image repository {spec.image_repository}",
                    hint="kubeadm pulls all control-plane images from one imageRepository; "
                    "retag the image or set --image-repository",
                )
            if key in RELEASE_IMAGES and not ref.endswith(f":v{version}"):
                raise BundleError(
                    f"{path} holds {ref}, expected tag v{version}", hint="the images must match --kubernetes-version"
                )
        images[key] = ref
        files.append(ImageFile(ref=ref, path=path))
    for key in CORE_IMAGES:
        if key not in images:
            if not spec.partial:
                raise InputError(
                    f"no {key} image among the sources (images/{key}.tar)",
                    hint="add it (--images-dir/--from-dir) or pass --partial to record it as skipped",
                )
            images[key] = None
            skipped.setdefault(key, Skipped(key, "image not provided when the bundle was built"))
    for key in OPTIONAL_IMAGES:
        if key not in images:
            images[key] = None
            skipped.setdefault(key, Skipped(key, "image not provided when the bundle was built"))
    return images, files


def _write_archive(out_tmp: Path, manifest: Manifest, src: _Sources, mtime: int, gz: bool) -> None:
    with tarfile.open(out_tmp, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as t:

        def info(name: str, size: int, mode: int) -> tarfile.TarInfo:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = size, mode, mtime
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            return ti

        data = manifest.to_json().encode()
        t.addfile(info(MANIFEST_NAME, len(data), 0o644), io.BytesIO(data))
        for entry in manifest.files:
            with open(src.files[entry.path], "rb") as f:
                t.addfile(info(entry.path, entry.size, entry.mode), f)


def _check_output(out_path: Path) -> tuple[Path, bool]:
    out_path = Path(out_path)
    if not out_path.name.endswith(_SUFFIXES):
        raise InputError(f"output {out_path}: name must end in .tar or .tar.gz", hint="e.g. -o kubernetes-1.20.2.tar")
    if out_path.is_dir():
        raise InputError(f"output {out_path} is a directory")
    return out_path, not out_path.name.endswith(".tar")


def build(spec: BuildSpec, out_path: Path | str) -> Manifest:
    """Assemble a bundle at `out_path` (.tar or .tar.gz) atomically; nothing is left behind on error."""
    version = normalize_version(spec.kubernetes_version)
    out_path, gz = _check_output(Path(out_path))
    if not (spec.from_dir or spec.base_url or spec.images_dirs or spec.cni_url or spec.crictl_url):
        raise InputError("no sources given", hint="use --from-dir DIR and/or --base-url URL")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.work-", dir=out_path.parent))
    out_tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        src = _Sources()
        dir_skipped: list[Skipped] = []
        if spec.from_dir:
            dir_skipped = _from_dir(src, Path(spec.from_dir))
        if spec.base_url:
            _from_base_url(src, spec.base_url, spec, version, work)
        if spec.cni_url:
            _from_cni_url(src, spec.cni_url, spec, work)
        if spec.crictl_url:
            _from_crictl_url(src, spec.crictl_url, spec, work)
        for d in spec.images_dirs:
            d = Path(d)
            if not d.is_dir():
                raise InputError(f"--images-dir {d}: not a directory")
            for p in sorted(d.glob("*.tar")):
                src.add(f"images/{p.name}", p, str(d))
        _check_binaries(src, version)

        skipped: dict[str, Skipped] = {}
        for s in (*spec.skipped, *dir_skipped):
            skipped.setdefault(s.what, s)
        if "bin/crictl" not in src.files:
            skipped.setdefault("crictl", Skipped("crictl", "not provided when the bundle was built"))
        if not any(p.startswith("cni/bin/") for p in src.files):
            skipped.setdefault("cni", Skipped("cni", "no CNI plugins provided when the bundle was built"))
        images, image_files = _collect_images(src, spec, version, skipped)

        entries = []
        for path in sorted(src.files):
            local = src.files[path]
            digest, size = _hash(local)
            kind = _kind(path, local)
            entries.append(FileEntry(path=path, sha256=digest, size=size, mode=_mode(path, local, kind), kind=kind))
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
        created = spec.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
        manifest = Manifest(
            kubernetes_version=version,
            arch=spec.arch,
            created=created,
            label=spec.label,
            image_repository=spec.image_repository,
            images=images,
            files=tuple(entries),
            image_files=tuple(image_files),
            skipped=tuple(skipped.values()),
        )
        _write_archive(out_tmp, manifest, src, mtime, gz)
        # the sources must not have changed while they were copied
        for entry in manifest.files:
            if src.files[entry.path].stat().st_size != entry.size:
                raise BundleError(f"{src.files[entry.path]} changed while the bundle was written", hint="retry")
        os.replace(out_tmp, out_path)
        write_sidecar(out_path)  # <bundle>.sha256 travels with it; inventories refuse a bundle without it
        log.info("wrote %s: %d files, %d MiB", out_path, len(entries), manifest.total_size >> 20)
        return manifest
    except OSError as exc:
        raise BundleError(f"cannot build {out_path.name}: {one_line(exc)}") from None
    finally:
        out_tmp.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
