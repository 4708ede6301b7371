"""Modules register themselves in provisioner.modules.base.REGISTRY on import."""

from provisioner.modules import bundle, command, files, preflight, system  # noqa: F401
