"""Modules register themselves in provisioner.modules.base.REGISTRY on import."""

from provisioner.modules import bundle, command, files, system  # noqa: F401
