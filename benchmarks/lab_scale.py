#!/usr/bin/env python3
"""Lab at scale: bring up N nodes, record boot time and memory (PSS) per node, tear down.

    sudo .venv/bin/python benchmarks/lab_scale.py --nodes 30

Prints a table and writes benchmarks/results/lab_scale-<N>n-<UTC time>.json. The lab (default
name `bench`) is removed at the end unless --keep; a lab of that name that exists is removed first,
so every run boots from nothing but the cached base image.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.lab import Lab, memstat

RESULTS = Path(__file__).resolve().parent / "results"


def _wait_settled(lab: Lab, names: list[str]) -> dict[str, str]:
    """`systemctl is-system-running --wait` on every node (parallel): the boot is really over."""

    def one(name: str) -> str:
        return lab.capture(name, ["systemctl", "is-system-running", "--wait"], timeout=600).stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=30)
    ap.add_argument("--name", default="bench")
    ap.add_argument(
        "--settle", type=float, default=20.0, help="idle seconds before measuring memory (user@0 sessions end)"
    )
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    lab = Lab(args.name)
    if lab.exists():
        lab.down()
    avail_before = memstat.mem_available_kib()
    load_before = os.getloadavg()
    t0 = time.monotonic()
    nodes = lab.up(args.nodes)
    up_seconds = time.monotonic() - t0
    states = _wait_settled(lab, [n.name for n in nodes])
    time.sleep(args.settle)
    nodes = lab.status()
    mem = memstat.measure([(n.name, n.pid) for n in nodes if n.pid])
    avail_after = memstat.mem_available_kib()
    boots = [n.boot_seconds for n in nodes if n.boot_seconds is not None]
    pss = [m.pss_kib / 1024 for m in mem]
    down_seconds = None
    if not args.keep:
        t1 = time.monotonic()
        lab.down()
        down_seconds = round(time.monotonic() - t1, 1)

    print(f"{'node':<10} {'IP':<14} {'boot_s':>7} {'procs':>5} {'RSS_MiB':>8} {'PSS_MiB':>8}  state")
    by_name = {m.name: m for m in mem}
    for n in nodes:
        m = by_name.get(n.name)
        print(f"{n.name:<10} {n.address:<14} {n.boot_seconds or 0:>7.2f} {m.processes if m else 0:>5} "
              f"{(m.rss_kib if m else 0) / 1024:>8.1f} {(m.pss_kib if m else 0) / 1024:>8.1f}  {states.get(n.name)}")  # fmt: skip
    summary = {
        "nodes": args.nodes,
        "up_seconds": round(up_seconds, 1),
        "down_seconds": down_seconds,
        "boot_seconds": {"min": min(boots), "median": statistics.median(boots), "max": max(boots)},
        "pss_mib_per_node": {
            "min": round(min(pss), 1),
            "median": round(statistics.median(pss), 1),
            "max": round(max(pss), 1),
        },
        "pss_mib_total": round(sum(pss), 1),
        "mem_available_drop_mib": round((avail_before - avail_after) / 1024, 1),
        "all_running": all(s == "running" for s in states.values()),
        "image": asdict(lab.image_info) if lab.image_info else None,
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "loadavg_before": load_before},
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("image", "host")}, indent=None))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"lab_scale-{args.nodes}n-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    report = {"summary": summary, "per_node": [
        {**asdict(n), **({"rss_kib": by_name[n.name].rss_kib, "pss_kib": by_name[n.name].pss_kib,
                          "processes": by_name[n.name].processes} if n.name in by_name else {}),
         "system_state": states.get(n.name)} for n in nodes]}  # fmt: skip
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0 if summary["all_running"] else 1


if __name__ == "__main__":
    sys.exit(main())
