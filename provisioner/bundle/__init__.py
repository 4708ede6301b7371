"""Offline bundles: one archive with the Kubernetes binaries, CNI plugins and images for a kubeadm install.

Format: docs/bundle.md. Public API: read_manifest, verify, extract, build (+ BuildSpec, Manifest and its parts).
"""

from provisioner.bundle.archive import extract, read_manifest, verify
from provisioner.bundle.build import BuildSpec, build
from provisioner.bundle.manifest import (
    CORE_IMAGES,
    FORMAT,
    KINDS,
    OPTIONAL_IMAGES,
    FileEntry,
    ImageFile,
    Manifest,
    Skipped,
    normalize_version,
)

__all__ = [
    "CORE_IMAGES",
    "FORMAT",
    "KINDS",
    "OPTIONAL_IMAGES",
    "BuildSpec",
    "FileEntry",
    "ImageFile",
    "Manifest",
    "Skipped",
    "build",
    "extract",
    "normalize_version",
    "read_manifest",
    "verify",
]
