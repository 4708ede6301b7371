#!/usr/bin/env python3
"""Full clusters at scale on the lab: bare nodes -> `kprov up` (smoke passed), then `add-node`.

    sudo .venv/bin/python benchmarks/cluster_scale.py --nodes 3 10 30      # one cluster at a time

For each N: a fresh lab of N nodes (1 control plane), `kprov up` of them (bundle source, the README's lab
inventory), then one more lab node and `kprov add-node` of it. Measured in the same run, per N:
  * wall time of `up` and per role (kprov's own recap line "wall time per role");
  * the kprov process: CPU seconds and peak RSS (GNU time);
  * bytes the control machine sent to the nodes (iptables counters on the lab bridge: SSH, and all TCP);
  * CPU seconds inside the nodes (the lab's cpuacct cgroup) and of the whole machine (/proc/stat: everyone's
    work on the shared CPUs, not only this run), load average before and after;
  * memory: the nodes' peak (the lab's memory cgroup, page cache included) and their RSS at the end, and
    the largest drop of the machine's MemAvailable during `up` (sampled every second);
  * wall time of `add-node`.
A run that fails is recorded with how far it got (the last play started, kprov's last lines) instead of
numbers. Prints a table with the ratios N/first N and writes benchmarks/results/cluster_scale-<UTC time>.json.
Each lab is removed at the end. Not a test: nothing here compares a time with a target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioner.lab import cgroups, memstat  # noqa: E402
from provisioner.lab.inventory import SHARED_DISK_KUBELET_CONFIG  # noqa: E402
from provisioner.lab.network import bridge_name  # noqa: E402

KPROV = str(REPO / ".venv" / "bin" / "kprov")
RESULTS = Path(__file__).resolve().parent / "results"
TIMING = "KPROV_BENCH %e %U %S %M"  # GNU time: wall, user, sys, peak RSS KiB


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _kprov(*args: str, timeout: float = 7200) -> dict:
    """Run kprov under GNU time; wall, CPU, peak RSS, exit code and its output."""
    t0 = time.monotonic()
    # its own process group: at the timeout kprov itself (not only GNU time) is stopped, as Ctrl-C would
    with subprocess.Popen(
        ["/usr/bin/time", "-f", TIMING, KPROV, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            rc, err = -1, f"timed out after {timeout}s\n{err}"
    wall = time.monotonic() - t0
    m = re.search(r"KPROV_BENCH ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", err)
    cpu = float(m.group(2)) + float(m.group(3)) if m else None
    return {
        "rc": rc,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1) if cpu is not None else None,
        "peak_rss_mib": round(int(m.group(4)) / 1024, 1) if m else None,
        "stdout": out,
        "stderr": err,
    }


class Counters:
    """iptables rules without a target: they only count what the control machine sends to the bridge."""

    def __init__(self, bridge: str) -> None:
        self.rules = {
            "ssh": ["OUTPUT", "-o", bridge, "-p", "tcp", "--dport", "22"],
            "tcp": ["OUTPUT", "-o", bridge, "-p", "tcp"],
        }
        self.tag = f"kprov-bench-{bridge}"

    def add(self) -> None:
        for key, rule in self.rules.items():
            subprocess.run(["iptables", "-I", *rule, "-m", "comment", "--comment", f"{self.tag}-{key}"], check=True)

    def remove(self) -> None:
        for key, rule in self.rules.items():
            subprocess.run(
                ["iptables", "-D", *rule, "-m", "comment", "--comment", f"{self.tag}-{key}"],
                capture_output=True,
                check=False,
            )

    def read(self) -> dict[str, int]:
        out = subprocess.run(
            ["iptables", "-L", "OUTPUT", "-v", "-x", "-n"], capture_output=True, text=True, check=True
        ).stdout
        return {
            key: sum(int(line.split()[1]) for line in out.splitlines() if f"{self.tag}-{key} " in line + " ")
            for key in self.rules
        }


class MemSampler(threading.Thread):
    """The lowest MemAvailable of the machine while a command runs (sampled every second)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.start_kib = memstat.mem_available_kib()
        self.low_kib = self.start_kib
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.low_kib = min(self.low_kib, memstat.mem_available_kib())

    def drop_mib(self) -> int:
        self.stop.set()
        return round((self.start_kib - self.low_kib) / 1024)


def _cg_file(lab: str, controller: str, name: str) -> Path | None:
    for d in cgroups.find_lab_dirs(lab):
        if f"/{controller}/" in str(d) and (d / name).is_file():
            return d / name
    return None


def _nodes_cpu_s(lab: str) -> float:
    f = _cg_file(lab, "cpuacct", "cpuacct.usage")
    return int(f.read_text()) / 1e9 if f else 0.0


def _nodes_memory(lab: str) -> dict[str, int | None]:
    peak = _cg_file(lab, "memory", "memory.max_usage_in_bytes")
    stat = _cg_file(lab, "memory", "memory.stat")
    rss = None
    if stat:
        fields = dict(line.split() for line in stat.read_text().splitlines())
        rss = int(fields.get("total_rss", 0)) + int(fields.get("total_mapped_file", 0))
    return {
        "nodes_peak_mib": round(int(peak.read_text()) / 2**20) if peak else None,
        "nodes_rss_end_mib": round(rss / 2**20) if rss is not None else None,
    }


def _machine_cpu_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _roles(stdout: str) -> dict[str, float]:
    m = re.search(r"wall time per role: (.*)", stdout)
    return {k: float(v) for k, v in re.findall(r"(\S+) ([\d.]+)s", m.group(1))} if m else {}


def _how_far(res: dict) -> dict:
    plays = re.findall(r"^ROLE (\S+)", res["stdout"], re.MULTILINE)
    return {
        "rc": res["rc"],
        "last_play": plays[-1] if plays else None,
        "tail": (res["stdout"][-2500:] + "\n" + res["stderr"][-1500:]).strip(),
    }


def one(nodes: int, name: str, tmp: Path, timeout: float) -> dict:
    inv_doc = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())
    inv_doc["cluster"]["name"] = name
    inv_doc["cluster"]["vars"]["kubelet_extra_config"] = SHARED_DISK_KUBELET_CONFIG

    def inventory(count: int) -> Path:
        inv_doc["lab"] = {"name": name, "nodes": count, "control_planes": 1}
        path = tmp / f"{name}-{count}.yaml"
        path.write_text(yaml.safe_dump(inv_doc, sort_keys=False))
        return path

    row: dict = {"nodes": nodes, "started": time.strftime("%H:%M:%SZ", time.gmtime())}
    subprocess.run([KPROV, "lab", "down", "--name", name], capture_output=True, check=False)
    t0 = time.monotonic()
    # N nodes for `up` (an inventory's lab never shrinks a lab: N+1 nodes now would make `up` refuse); the
    # node for add-node is booted after `up`, outside every measurement
    subprocess.run([KPROV, "lab", "up", "--name", name, "--nodes", str(nodes)], check=True, capture_output=True)
    row["lab_up_s"] = round(time.monotonic() - t0, 1)
    _log(f"{nodes} nodes: lab up in {row['lab_up_s']}s; kprov up")
    counters = Counters(bridge_name(name))
    counters.add()
    try:
        mem = MemSampler()
        mem.start()
        cpu_nodes0, cpu_machine0, load0 = _nodes_cpu_s(name), _machine_cpu_s(), os.getloadavg()
        up = _kprov("up", "-i", str(inventory(nodes)), timeout=timeout)
        cpu_nodes1, cpu_machine1 = _nodes_cpu_s(name), _machine_cpu_s()
        row.update(
            {
                "up_rc": up["rc"],
                "up_s": up["wall_s"],
                "roles_s": _roles(up["stdout"]),
                "kprov_cpu_s": up["cpu_s"],
                "kprov_peak_rss_mib": up["peak_rss_mib"],
                "sent_bytes": counters.read(),
                "nodes_cpu_s": round(cpu_nodes1 - cpu_nodes0, 1),
                "machine_cpu_s": round(cpu_machine1 - cpu_machine0, 1),
                "cpus": os.cpu_count(),
                "mem_available_drop_mib": mem.drop_mib(),
                **_nodes_memory(name),
                "loadavg_before": load0,
                "loadavg_after_up": os.getloadavg(),
                "smoke_passed": "smoke test passed" in up["stdout"],
            }
        )
        _log(f"{nodes} nodes: up rc={up['rc']} in {up['wall_s']}s")
        if up["rc"] != 0 or not row["smoke_passed"]:
            row["failed"] = _how_far(up)
            return row
        subprocess.run([KPROV, "lab", "up", "--name", name, "--nodes", str(nodes + 1)], check=True, capture_output=True)
        add = _kprov("add-node", "-i", str(inventory(nodes + 1)), "--host", f"{name}-{nodes + 1}")
        row.update(
            {
                "add_node_rc": add["rc"],
                "add_node_s": add["wall_s"],
                "add_node_roles_s": _roles(add["stdout"]),
                "loadavg_after_add": os.getloadavg(),
            }
        )
        if add["rc"] != 0:
            row["failed"] = {"step": "add-node", **_how_far(add)}
        _log(f"{nodes} nodes: add-node rc={add['rc']} in {add['wall_s']}s")
        return row
    finally:
        counters.remove()
        subprocess.run([KPROV, "lab", "down", "--name", name], capture_output=True, check=False)


def _table(rows: list[dict]) -> None:
    ok = [r for r in rows if "failed" not in r]
    base = ok[0] if ok else None
    roles = list(dict.fromkeys(k for r in rows for k in r.get("roles_s", {})))
    print(
        f"\n{'nodes':>5} {'up s':>7} {'x':>5} {'kprov CPU':>9} {'nodes CPU':>9} {'machine CPU':>11} "
        f"{'SSH MB':>7} {'RSS MiB':>7} {'nodes MiB':>9} {'add-node s':>10} {'load':>5}  "
        + " ".join(f"{r[:11]:>11}" for r in roles)
    )
    for r in rows:
        x = f"{r['up_s'] / base['up_s']:.2f}" if base and "up_s" in r else "-"
        print(
            f"{r['nodes']:>5} {r.get('up_s', '-'):>7} {x:>5} {r.get('kprov_cpu_s', '-'):>9} "
            f"{r.get('nodes_cpu_s', '-'):>9} {r.get('machine_cpu_s', '-'):>11} "
            f"{r.get('sent_bytes', {}).get('ssh', 0) / 1e6:>7.1f} {r.get('kprov_peak_rss_mib', '-'):>7} "
            f"{r.get('nodes_peak_mib', '-'):>9} {r.get('add_node_s', '-'):>10} "
            f"{r.get('loadavg_before', [0])[0]:>5.1f}  "
            + " ".join(f"{r.get('roles_s', {}).get(k, 0):>11.1f}" for k in roles)
            + (f"  FAILED: {r['failed'].get('last_play')}" if "failed" in r else "")
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[3, 10, 30])
    ap.add_argument("--name", default="bsc", help="lab and cluster name")
    ap.add_argument(
        "--timeout", type=float, default=7200, help="stop `up` after this many seconds (recorded as failed)"
    )
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cluster_scale-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    rows = []
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nodes:
            rows.append(one(n, args.name, Path(tmp), args.timeout))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "failed"}), flush=True)
            # written after every cluster: a 30-node run that is cut short still leaves the smaller ones
            out.write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(), "commit": commit}, indent=2) + "\n")
    _table(rows)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
