"""sha256 of local files, cached by (path, size, mtime) across runs: a 500 MB bundle is hashed once."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_LOCK = threading.Lock()
_MEMO: dict[str, str] = {}


def _cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "kprov" / "sha256.json"


def file_sha256(path: str | Path) -> str:
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}:{st.st_size}:{st.st_mtime_ns}"
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        cache = _cache_file()
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}
        if key in stored:
            _MEMO[key] = stored[key]
            return stored[key]
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        _MEMO[key] = digest
        try:
            stored = json.loads(cache.read_text()) if cache.is_file() else {}
        except (OSError, ValueError):
            stored = {}
        stored = {k: v for k, v in stored.items() if not k.startswith(f"{p}:")}
        stored[key] = digest
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(stored))
            tmp.replace(cache)
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return digest
