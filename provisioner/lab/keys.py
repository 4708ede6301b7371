"""ed25519 keys in OpenSSH format, generated in-process (no ssh-keygen per node: fast at 30 nodes)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private_openssh: bytes
    public_openssh: str  # "ssh-ed25519 AAAA..."


def generate(comment: str = "") -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private, f"{public} {comment}".strip())


def write(pair: KeyPair, private_path: Path) -> None:
    """Write KEY (0600) and KEY.pub."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pair.private_openssh)
    Path(f"{private_path}.pub").write_text(pair.public_openssh + "\n")


def ensure(private_path: Path, comment: str) -> str:
    """Create the key pair if missing; returns the public key line."""
    pub = Path(f"{private_path}.pub")
    if not (private_path.exists() and pub.exists()):
        write(generate(comment), private_path)
    return pub.read_text().strip()
