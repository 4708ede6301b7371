"""Byte progress of uploads, for sinks that show it (a bar on a terminal, the heartbeat line in logs).

The transport reads the local file in chunks and sends each chunk whole before it reads the next, so
the position of the next read is the number of bytes sent: a reader wrapper reports it, and the
transport (any transport, including the ones tests substitute) needs no hook of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from provisioner.transport.ssh import CommandResult

#: (bytes of the file on the host so far, a resumed upload's offset included; the file's size)
OnBytes = Callable[[int, int], None]


class ProgressReader:
    """A binary file object that reports how far the reader has got, each time it reads on."""

    def __init__(self, fh: Any, total: int, on_bytes: OnBytes) -> None:
        self._fh = fh
        self._total = total
        self._on_bytes = on_bytes
        self._pos = 0
        self._reported = -1

    def _report(self) -> None:
        if self._pos != self._reported:
            self._reported = self._pos
            self._on_bytes(self._pos, self._total)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._fh.seek(pos, whence)
        self._report()  # a resumed upload starts at its offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        self._report()  # what was read before has been sent
        data = self._fh.read(size)
        self._pos += len(data)
        if not data or size is None or size < 0:
            self._report()
        return data

    def tell(self) -> int:
        return self._pos


class ProgressIO:
    """A host's IO (see modules/decisions.HostIO) whose uploads report their byte progress."""

    def __init__(self, io: Any, on_bytes: OnBytes) -> None:
        self._io = io
        self._on_bytes = on_bytes

    def script(self, script: str, *, timeout: float | None = None) -> CommandResult:
        return self._io.script(script, timeout=timeout)

    def put_stream(self, remote_path: str, fh: Any, *, offset: int = 0) -> int:
        total = os.fstat(fh.fileno()).st_size
        return self._io.put_stream(remote_path, ProgressReader(fh, total, self._on_bytes), offset=offset)
