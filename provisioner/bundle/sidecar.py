"""`<bundle>.sha256`: the whole-archive checksum that travels beside a bundle.

The manifest inside a bundle proves each file matches the manifest, not that the archive is the one
that was built: whoever can change the archive can rewrite its manifest too. `kprov bundle build` writes
`<bundle>.sha256` (sha256sum format); an inventory's bundle is refused without it unless
`cluster.allow_unverified_bundle: true`, and a bundle that does not match it is always refused.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from provisioner.atomic import write_file
from provisioner.errors import BundleError

SUFFIX = ".sha256"
_LINE_RE = re.compile(r"^([0-9a-fA-F]{64})(?:[ \t]+\*?(\S.*))?$")
_MAX_BYTES = 4096


def sidecar_path(bundle: Path | str) -> Path:
    bundle = Path(bundle)
    return bundle.with_name(bundle.name + SUFFIX)


def read_sidecar(bundle: Path | str, shown_as: Path | str | None = None) -> str | None:
    """The sha256 recorded beside `bundle` (lowercase hex), None when there is no such file.

    A sidecar that is not one `HEX` or `HEX  NAME` line (NAME being the bundle's file name) is BundleError,
    naming the sidecar of `shown_as` (the bundle path as the user wrote it) when given."""
    bundle = Path(bundle)
    path = sidecar_path(bundle)
    shown = sidecar_path(shown_as) if shown_as is not None else path
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"{shown}: cannot read: {exc.strerror}", hint="check the file's permissions") from None
    lines = raw.decode("utf-8", "replace").strip().splitlines() if len(raw) <= _MAX_BYTES else []
    m = _LINE_RE.match(lines[0].strip()) if len(lines) == 1 else None
    if m is None:
        raise BundleError(
            f"{shown}: not a sha256 checksum file (expected one line: HEX  {bundle.name})",
            hint="copy the .sha256 written by `kprov bundle build` along with the bundle",
        )
    if m.group(2) is not None and Path(m.group(2)).name != bundle.name:
        raise BundleError(
            f"{shown}: is the checksum of {m.group(2)!r}, not of {bundle.name}",
            hint="copy the .sha256 written by `kprov bundle build` along with the bundle",
        )
    return m.group(1).lower()


def missing_sidecar_error(bundle: Path | str) -> BundleError:
    bundle = Path(bundle)
    return BundleError(
        f"{bundle} has no checksum file {sidecar_path(bundle).name}: refusing an unverified bundle",
        hint="copy the .sha256 that `kprov bundle build` wrote along with the bundle, "
        "or set cluster.allow_unverified_bundle: true to use it unverified",
    )


def check_digest(bundle: Path | str, digest: str, *, allow_missing: bool) -> bool:
    """Compare the archive's sha256 with its sidecar: True when verified, False when the sidecar is
    missing and `allow_missing`; BundleError otherwise (a mismatch is refused even with `allow_missing`)."""
    expected = read_sidecar(bundle)
    if expected is None:
        if allow_missing:
            return False
        raise missing_sidecar_error(bundle)
    if digest.lower() != expected:
        raise BundleError(
            f"{bundle}: sha256 {digest[:12]}… does not match {sidecar_path(bundle).name} ({expected[:12]}…)",
            hint="the bundle is corrupt or was replaced: copy it and its .sha256 again from where it was built",
        )
    return True


def write_sidecar(bundle: Path | str) -> str:
    """Hash `bundle` and write `<bundle>.sha256` atomically (sha256sum format); returns the digest."""
    bundle = Path(bundle)
    h = hashlib.sha256()
    with open(bundle, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    target = sidecar_path(bundle)
    write_file(target, f"{digest}  {bundle.name}\n", 0o644)
    return digest
