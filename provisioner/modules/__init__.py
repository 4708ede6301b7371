"""Modules register themselves in provisioner.modules.base.REGISTRY on import."""

from provisioner.modules import command, files, system  # noqa: F401
