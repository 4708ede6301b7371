"""The one way kprov replaces a file on the operator's machine: atomically, never readable by others on the way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_file(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> None:
    """Replace `path` with `data` (str: UTF-8): written to a private temp file in the same directory,
    given `mode`, then renamed over the target, so a reader sees the old file or the new one, never half,
    and a secret is never readable by others, not even briefly. The temp file is removed on failure."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".kprov-tmp", dir=dest.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
