#!/usr/bin/env python3
"""Write a single-layer docker-archive image offline (importable with `ctr -n k8s.io images import`).

usage: mkimage.py OUT.tar REF [--entrypoint JSON] [--cmd JSON] [--env K=V]... ITEM...
ITEM: SRC:DST  copy host file SRC (symlinks followed) to DST | DST->TARGET symlink | DST/ empty directory
      @DST=TEXT  a file DST with literal TEXT (mode 0644)
Thin wrapper over provisioner.bundle.dockerarchive (run with the repo on PYTHONPATH).
"""

import argparse
import json
import sys
from pathlib import Path

from provisioner.bundle import dockerarchive
from provisioner.errors import KprovError


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("ref")
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("items", nargs="*")
    a = ap.parse_intermixed_args()
    items = []
    for it in a.items:
        if it.startswith("@") and "=" in it:
            dst, text = it[1:].split("=", 1)
            items.append(dockerarchive.Content(dst, text.encode()))
        else:
            items.append(dockerarchive.parse_item(it))
    try:
        dockerarchive.write_image(
            Path(a.out),
            a.ref,
            items,
            entrypoint=json.loads(a.entrypoint) if a.entrypoint else None,
            cmd=json.loads(a.cmd) if a.cmd else None,
            env=a.env or None,
        )
    except KprovError as exc:
        print(f"mkimage: {exc.message}", file=sys.stderr)
        return 1
    print(f"{a.out} {a.ref} {Path(a.out).stat().st_size // 1024} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
