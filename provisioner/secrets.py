"""Secrets: values that must never reach output or logs."""

from __future__ import annotations

import re
import threading

MASK = "********"

#: secrets recognised by shape even when kprov did not create them (kubeadm prints its own)
_PATTERNS = (
    re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"),  # bootstrap token
    re.compile(r"(?i)(certificate[- ]key[\s:=\"']+)[0-9a-f]{64}\b"),  # control-plane certificate key
)


class Secret:
    """A value whose str/repr are masked; `.reveal()` is only called at the transport edge."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Redactor:
    """Collects secret strings seen during a run and scrubs them from any text before it is shown."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str | Secret | None) -> None:
        raw = value.reveal() if isinstance(value, Secret) else value
        if raw and len(raw) >= 6:
            with self._lock:
                self._values.add(raw)

    def scrub(self, text: str | None) -> str:
        if not text:
            return text or ""
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for v in values:
            text = text.replace(v, MASK)
        text = _PATTERNS[0].sub(MASK, text)
        return _PATTERNS[1].sub(lambda m: m.group(1) + MASK, text)
