"""Downloads for `bundle build --base-url/--cni-url/--crictl-url`, with checksum files when published."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Literal, overload

from provisioner.errors import BundleError

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"\b([0-9a-fA-F]{64})\b")


def _open(url: str, timeout: float):
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise BundleError(f"unsupported URL {url!r}", hint="use http://, https:// or file:// URLs")
    return urllib.request.urlopen(url, timeout=timeout)


def fetch_checksum(url: str, timeout: float = 60) -> str | None:
    """The sha256 published at `url` (`HEX` or `HEX  name` format), or None when there is none (404)."""
    try:
        with _open(url, timeout) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise BundleError(f"download failed: {url}: HTTP {exc.code}") from None
    except FileNotFoundError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        raise BundleError(
            f"download failed: {url}: {getattr(exc, 'reason', exc)}",
            hint="check the URL and that the server is reachable",
        ) from None
    m = _SHA256_RE.search(text)
    if not m:
        raise BundleError(f"{url}: not a sha256 checksum file")
    return m.group(1).lower()


@overload
def download(
    url: str, dest: Path, *, timeout: float = ..., checksum_url: str | None = ..., required: Literal[True] = ...
) -> Path: ...
@overload
def download(
    url: str, dest: Path, *, timeout: float = ..., checksum_url: str | None = ..., required: bool
) -> Path | None: ...
def download(
    url: str, dest: Path, *, timeout: float = 60, checksum_url: str | None = None, required: bool = True
) -> Path | None:
    """Download `url` to `dest`, verifying it against `checksum_url` when that file exists.

    Returns None for a 404 when not `required`; any other failure is a BundleError and leaves no file.
    """
    expected = fetch_checksum(checksum_url, timeout) if checksum_url else None
    tmp = dest.with_name(f".{dest.name}.part")
    h = hashlib.sha256()
    try:
        with _open(url, timeout) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        if exc.code == 404 and not required:
            return None
        raise BundleError(
            f"download failed: {url}: HTTP {exc.code}",
            hint="check --base-url/--kubernetes-version/--arch against the release layout",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, FileNotFoundError) and not required:
            return None
        raise BundleError(
            f"download failed: {url}: {getattr(exc, 'reason', exc)}",
            hint="check the URL and that the server is reachable",
        ) from None
    got = h.hexdigest()
    if expected is not None and got != expected:
        tmp.unlink(missing_ok=True)
        raise BundleError(
            f"checksum mismatch for {url}: got sha256 {got[:12]}…, {checksum_url} says {expected[:12]}…",
            hint="the download is corrupt or the checksum file belongs to another file",
        )
    os.replace(tmp, dest)
    log.info("downloaded %s%s", url, " (sha256 verified)" if expected else " (no checksum published)")
    return dest
