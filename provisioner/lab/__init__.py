"""Local lab of real machines: systemd-nspawn containers booted from a Debian bookworm image.

Used by `kprov lab`, by `provider: lab` inventories and by the test-suite fixtures.
"""

from provisioner.lab.lab import DEFAULT_NAME, DEFAULT_NODES, Lab, Node

__all__ = ["DEFAULT_NAME", "DEFAULT_NODES", "Lab", "Node"]
