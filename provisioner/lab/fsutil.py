"""Files and mounts: atomic writes, mount listing, unmounting, rmtree that never crosses a mount."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from provisioner.atomic import write_file
from provisioner.errors import LabError
from provisioner.lab.host import run

log = logging.getLogger(__name__)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write via a temp file + rename, so a running node never reads half a file."""
    write_file(path, text, mode)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """write_text unless the file already has that content (a no-op `up` leaves mtimes alone)."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text(path, text, mode)
    return True


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below prefix (host mount namespace), deepest first."""
    prefix_s = str(prefix).rstrip("/")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target == prefix_s or target.startswith(prefix_s + "/"):
            found.append(Path(target))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def is_mountpoint(path: Path) -> bool:
    return path in mounts_under(path)


def unmount_all(prefix: Path) -> None:
    """Lazily unmount everything below prefix (containerd or nspawn leftovers first, then the overlay)."""
    for _ in range(3):
        targets = mounts_under(prefix)
        if not targets:
            return
        for target in targets:
            run(["umount", "-l", str(target)], check=False)
    left = mounts_under(prefix)
    if left:
        raise LabError(f"cannot unmount {left[0]}", hint="check `findmnt -R` and unmount it by hand")


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to run while anything below path is still mounted.

    A mounted overlay under a node directory would otherwise let rmtree walk into it.
    """
    if not path.exists():
        return
    if mounts_under(path):
        raise LabError(f"refusing to delete {path}: something below it is still mounted")
    shutil.rmtree(path)
