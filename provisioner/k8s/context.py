"""Cluster-wide variables computed once per run (between role defaults and inventory vars)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from provisioner.errors import BundleError, InputError
from provisioner.hashing import file_sha256
from provisioner.inventory.model import Inventory
from provisioner.secrets import Redactor

#: where bundle files of each kind are installed on the hosts
BINARY_DEST = {
    "kubeadm": "/usr/bin/kubeadm",
    "kubelet": "/usr/bin/kubelet",
    "kubectl": "/usr/bin/kubectl",
    "crictl": "/usr/local/bin/crictl",
}
CNI_DEST_DIR = "/opt/cni/bin"

log = logging.getLogger(__name__)


def default_image_repository(version: str) -> str:
    major, minor = (int(x) for x in version.split(".")[:2])
    return "registry.k8s.io" if (major, minor) >= (1, 25) else "k8s.gcr.io"


def kubeconfig_path(inv: Inventory) -> Path:
    return Path.home() / ".kube" / f"kprov-{inv.cluster.name}.conf"


def cluster_vars(inv: Inventory, redactor: Redactor) -> dict[str, Any]:
    """Variables every role sees: image repository, bundle contents, a certificate key (secret)."""
    c = inv.cluster
    cert_key = secrets.token_hex(32)
    redactor.add(cert_key)
    out: dict[str, Any] = {
        "kubeadm_image_repository": default_image_repository(c.kubernetes_version),
        "kubeadm_certificate_key": cert_key,
        "kprov_kubeconfig": str(kubeconfig_path(inv)),
        "bundle_path": None,
        "bundle_sha256": None,
        "bundle_sums": "",
        "bundle_binaries": [],
        "bundle_image_files": [],
        "bundle_images": {},
        "bundle_files": [],
        "bundle_cp_only_paths": [],
        "bundle_worker_bytes": 0,
        "bundle_full_bytes": 0,
    }
    if c.kubernetes_source != "bundle":
        return out
    from provisioner.bundle import read_manifest
    from provisioner.bundle.sidecar import check_digest, sidecar_path

    path = Path(c.bundle or "")
    if not path.is_file():
        raise InputError(
            f"{inv.path}: cluster.bundle: {path} not found",
            hint="build it with `kprov bundle build` (or scripts/build-lab-bundle for the lab)",
        )
    try:
        manifest = read_manifest(path)
    except BundleError as exc:
        raise InputError(f"{path}: {exc.message}", hint=exc.hint or "rebuild the bundle") from None
    bundle_sha256 = file_sha256(path)
    try:  # the whole archive against <bundle>.sha256 (the manifest alone can be rewritten with the files)
        if not check_digest(path, bundle_sha256, allow_missing=c.allow_unverified_bundle):
            log.warning(
                "%s: no %s: using the bundle unverified (cluster.allow_unverified_bundle)",
                path,
                sidecar_path(path).name,
            )
    except BundleError as exc:
        raise InputError(f"{inv.path}: cluster.bundle: {exc.message}", hint=exc.hint) from None
    if manifest.kubernetes_version != c.kubernetes_version:
        raise InputError(
            f"{inv.path}: cluster.kubernetes_version {c.kubernetes_version} does not match the bundle "
            f"({manifest.kubernetes_version})",
            hint=f'set kubernetes_version: "{manifest.kubernetes_version}" or use a bundle for {c.kubernetes_version}',
        )
    binaries = []
    for f in manifest.files:
        name = os.path.basename(f.path)
        if f.kind in ("binary", "tool") and name in BINARY_DEST:
            binaries.append({"path": f.path, "dest": BINARY_DEST[name]})
        elif f.kind == "cni":
            binaries.append({"path": f.path, "dest": f"{CNI_DEST_DIR}/{name}"})
    out.update(
        {
            "bundle_path": str(path.resolve()),
            "bundle_sha256": bundle_sha256,
            "bundle_sums": "".join(f"{f.sha256}  {f.path}\n" for f in manifest.files),
            "bundle_binaries": binaries,
            "bundle_image_files": [{"ref": i.ref, "path": i.path} for i in manifest.image_files],
            "bundle_images": dict(manifest.images),
            "bundle_skipped": [{"what": s.what, "why": s.why} for s in manifest.skipped],
            "kubeadm_image_repository": manifest.image_repository,
        }
    )
    from provisioner.bundle.distribution import distribution_vars

    out.update(distribution_vars(path, manifest))  # bundle distribution between nodes (docs/bundle.md)
    return out
