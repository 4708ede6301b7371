#!/usr/bin/env python3
"""Full clusters at scale on the lab: bare nodes -> `kprov up` (smoke passed), then `add-node`.

    .venv/bin/python benchmarks/cluster_scale.py --nodes 3 10 30

For each N: a fresh lab of N+1 nodes (1 control plane), `kprov up` of the first N (bundle source, the
README's lab inventory), then `kprov add-node` of node N+1. Measured in the same run, per N: wall time
of `up` and per role (kprov's own recap), CPU seconds of the kprov process, bytes the control machine
sent to the nodes over SSH (iptables counters on the lab bridge, tcp dport 22), kprov's peak RSS, the
drop of the machine's MemAvailable, and the wall time of `add-node`. Prints a table with the ratios
N/3 and writes benchmarks/results/cluster_scale-<UTC time>.json. Each lab is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioner.lab import memstat  # noqa: E402
from provisioner.lab.network import bridge_name  # noqa: E402

KPROV = str(REPO / ".venv" / "bin" / "kprov")
RESULTS = Path(__file__).resolve().parent / "results"


def _kprov(*args: str, timeout: float = 7200) -> tuple[subprocess.CompletedProcess[str], float, float, int]:
    """Run kprov; (result, wall s, CPU s, peak RSS KiB of the children so far)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run([KPROV, *args], capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"kprov {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, wall, cpu, after.ru_maxrss


def _ssh_counter(bridge: str, action: str) -> int:
    rule = ["OUTPUT", "-o", bridge, "-p", "tcp", "--dport", "22", "-m", "comment", "--comment", "kprov-bench"]
    if action == "add":
        subprocess.run(["iptables", "-I", *rule, "-j", "RETURN"], check=True)
        return 0
    if action == "del":
        subprocess.run(["iptables", "-D", *rule, "-j", "RETURN"], check=False)
        return 0
    out = subprocess.run(["iptables", "-L", "OUTPUT", "-v", "-x", "-n"], capture_output=True, text=True).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if "kprov-bench" in line)


def _roles(stdout: str) -> dict[str, float]:
    m = re.search(r"wall time per role: (.*)", stdout)
    return {k: float(v) for k, v in re.findall(r"(\S+) ([\d.]+)s", m.group(1))} if m else {}


def one(nodes: int, name: str, tmp: Path) -> dict:
    inv_doc = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())
    inv_doc["cluster"]["name"] = name

    def inventory(count: int) -> Path:
        inv_doc["lab"] = {"name": name, "nodes": count, "control_planes": 1}
        path = tmp / f"{name}-{count}.yaml"
        path.write_text(yaml.safe_dump(inv_doc, sort_keys=False))
        return path

    subprocess.run([KPROV, "lab", "down", "--name", name], capture_output=True)
    subprocess.run([KPROV, "lab", "up", "--name", name, "--nodes", str(nodes + 1)], check=True, capture_output=True)
    bridge = bridge_name(name)
    _ssh_counter(bridge, "add")
    try:
        avail = memstat.mem_available_kib()
        up, up_wall, up_cpu, rss = _kprov("up", "-i", str(inventory(nodes)))
        sent = _ssh_counter(bridge, "read")
        mem_drop = (avail - memstat.mem_available_kib()) / 1024
        assert "smoke test passed" in up.stdout, up.stdout[-2000:]
        add, add_wall, add_cpu, _ = _kprov("add-node", "-i", str(inventory(nodes + 1)), "--host", f"{name}-{nodes + 1}")
    finally:
        _ssh_counter(bridge, "del")
        subprocess.run([KPROV, "lab", "down", "--name", name], capture_output=True)
    return {"nodes": nodes, "up_s": round(up_wall, 1), "roles_s": _roles(up.stdout), "cpu_s": round(up_cpu, 1),
            "ssh_bytes_sent": sent, "kprov_peak_rss_mib": round(rss / 1024, 1),
            "mem_available_drop_mib": round(mem_drop), "add_node_s": round(add_wall, 1),
            "loadavg_after": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[3, 10, 30])
    ap.add_argument("--name", default="bsc")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nodes:
            rows.append(one(n, args.name, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    roles = list(dict.fromkeys(r for row in rows for r in row["roles_s"]))
    print(f"\n{'nodes':>5} {'up s':>7} {'x':>5} {'CPU s':>6} {'SSH MB':>7} {'RSS MiB':>7} {'mem MiB':>7} "
          f"{'add-node s':>10}  " + " ".join(f"{r[:10]:>10}" for r in roles))
    for row in rows:
        print(f"{row['nodes']:>5} {row['up_s']:>7} {row['up_s'] / base['up_s']:>5.2f} {row['cpu_s']:>6} "
              f"{row['ssh_bytes_sent'] / 1e6:>7.1f} {row['kprov_peak_rss_mib']:>7} {row['mem_available_drop_mib']:>7} "
              f"{row['add_node_s']:>10}  " + " ".join(f"{row['roles_s'].get(r, 0):>10.1f}" for r in roles))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cluster_scale-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"rows": rows, "cpus": os.cpu_count()}, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
