#!/usr/bin/env python3
"""The `kubernetes` role at N nodes: the bundle sent once to a seed that serves the others vs sent to every node.

    sudo .venv/bin/python benchmarks/bundle_distribution.py --nodes 3 10 [--name bbench] [--keep]

For each N: a lab of N nodes (1 control plane) gets `prerequisites` + `containerd` (not timed), then per mode,
from the same clean state (no bundle, no Kubernetes binaries, no images on any node):
  * seeded: plays `bundle` + `kubernetes` (docs/bundle.md, "Distribution between nodes");
  * direct: play `kubernetes` alone, so every node gets the archive uploaded by the control machine (what every
    run did before the seed existed; the nodes report `fallback: the seed was not prepared in this run`);
  * transfer: as seeded, but the images stay in containerd (only the bundle and the binaries are wiped), so the
    import step finds nothing to do: the distribution alone, without the per-node `ctr import` CPU work.
Recorded: wall time of each play, bytes the control machine sent (uploads, and scripts/commands), its CPU
seconds (this process: the engine runs in-process, as `kprov up` would), CPU seconds spent inside the nodes
(the lab's per-node cpuacct cgroups: sum, the seed, the busiest other node) and by the whole machine
(/proc/stat, everyone's work), per-task wall time of the `kubernetes` play (the seed; max and median of the
others), load average. Table on stdout, JSON in results/bundle_distribution-<UTC time>.json. The lab is removed
at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioner.engine.roles import Play  # noqa: E402
from provisioner.engine.runner import Runner, RunOptions  # noqa: E402
from provisioner.inventory.loader import load_inventory  # noqa: E402
from provisioner.k8s.context import cluster_vars  # noqa: E402
from provisioner.lab import Lab  # noqa: E402
from provisioner.secrets import Redactor  # noqa: E402
from provisioner.transport.ssh import ConnectOptions, SSHHost  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLE = Path(os.environ.get("KPROV_LAB_BUNDLE", "/var/cache/kprov/bundles/kubernetes-1.20.2-lab-amd64.tar"))
MODES = {"seeded": ["bundle", "kubernetes"], "direct": ["kubernetes"], "transfer": ["bundle", "kubernetes"]}
#: back to a node without the bundle and the binaries (containerd stays)
WIPE_BUNDLE = "rm -rf /opt/kprov/bundle /var/cache/kprov/bundle-* /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl; "
#: ... and without the images
WIPE = WIPE_BUNDLE + "ctr -n k8s.io images ls -q | xargs -r ctr -n k8s.io images rm >/dev/null; true"
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def node_cpu(lab: str) -> dict[str, float]:
    """CPU seconds used so far inside each lab node (its cpuacct cgroup, docs/lab.md)."""
    out = {}
    for d in sorted((CPUACCT / f"kprov-{lab}").glob("*/cpuacct.usage")):
        out[d.parent.name] = int(d.read_text()) / 1e9
    return out


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (every engineer's work, not only this benchmark)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


class CountingSSH(SSHHost):
    def __init__(self, host, options, redactor, counts) -> None:
        super().__init__(host, options, redactor)
        self.counts = counts

    def put_stream(self, remote_path, fh, *, offset=0, chunk=1 << 20):
        sent = super().put_stream(remote_path, fh, offset=offset, chunk=chunk)
        self.counts["upload"] += sent
        return sent

    def exec(self, command, *, stdin=None, **kw):
        self.counts["exec"] += len(command) + len(stdin or b"")
        return super().exec(command, stdin=stdin, **kw)


def task_times(events, seed: str, role: str = "kubernetes") -> dict[str, dict[str, float]]:
    """Per task of `role`: wall seconds on the seed, and max / median over the other nodes (run tasks only)."""
    per: dict[str, dict[str, float]] = {}
    for e in events:
        if e.role == role and e.msg != "condition false":
            per.setdefault(e.task.split(" | ", 1)[-1], {})[e.host] = e.duration_ms / 1000
    out = {}
    for task, by_host in per.items():
        others = [v for h, v in by_host.items() if h != seed]
        out[task] = {
            "seed": round(by_host.get(seed, 0.0), 1),
            "others_max": round(max(others), 1) if others else 0.0,
            "others_median": round(statistics.median(others), 1) if others else 0.0,
        }
    return out


def run(inv, roles: list[str], lab: str = "") -> dict:
    counts = {"upload": 0, "exec": 0}
    redactor = Redactor()
    runner = Runner(
        inv,
        RunOptions(forks=128),
        redactor=redactor,
        base_vars=cluster_vars(inv, redactor),
        connector=lambda h: CountingSSH(h, ConnectOptions(), redactor, counts),
    )
    nodes0, machine0 = node_cpu(lab), machine_cpu()
    cpu0, load0, t0 = resource.getrusage(resource.RUSAGE_SELF), os.getloadavg()[0], time.monotonic()
    try:
        report = runner.run([Play(r, "all") for r in roles])
    finally:
        runner.close()
    wall, cpu1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF)
    nodes1, machine1 = node_cpu(lab), machine_cpu()
    seed = inv.hosts[0].name
    per_node = {h: nodes1[h] - nodes0.get(h, 0.0) for h in nodes1 if h in {x.name for x in inv.hosts}}
    others = [v for h, v in per_node.items() if h != seed]
    bad = {h: r.first_error for h, r in report.hosts.items() if r.failed or r.unreachable}
    if bad:
        raise SystemExit(f"{roles} failed: {bad}")
    pulls = [e.msg for e in report.events if e.task.startswith("kubernetes | pull the bundle")]
    served = [e.msg for e in report.events if e.task.startswith("kubernetes | serve") and e.msg != "condition false"]
    return {
        "roles": roles,
        "wall_s": round(wall, 1),
        "role_s": {k: round(v, 1) for k, v in report.role_times.items()},
        "upload_mib": round(counts["upload"] / 2**20, 1),
        "scripts_kib": round(counts["exec"] / 1024, 1),
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
        "nodes_cpu_s": round(sum(per_node.values()), 1),
        "seed_cpu_s": round(per_node.get(seed, 0.0), 1),
        "other_node_cpu_max_s": round(max(others), 1) if others else 0.0,
        "machine_cpu_s": round(machine1 - machine0, 1),
        "machine_cpus": os.cpu_count(),
        "tasks_s": task_times(report.events, seed),
        "load_before": round(load0, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "fallbacks": sum(m.startswith("fallback") for m in pulls),
        "served": served[:1],
    }


def inventory(name: str, nodes: int, work: Path) -> Path:
    doc = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())
    doc["lab"] = {"name": name, "nodes": nodes, "control_planes": 1}
    doc["cluster"]["name"] = name
    doc["cluster"]["bundle"] = str(BUNDLE)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--name", default="bbench")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    lab = Lab(args.name)
    rows = []
    try:
        for n in sorted(args.nodes):
            lab.up(n)  # grows the lab: a lab cannot shrink, so sizes go up
            inv = load_inventory(inventory(args.name, n, RESULTS))
            run(inv, ["prerequisites", "containerd"])
            for mode in args.modes:
                for node in lab.status():
                    lab.capture(
                        node.name, ["sh", "-c", WIPE_BUNDLE + "true" if mode == "transfer" else WIPE], timeout=300
                    )
                row = {"nodes": n, "mode": mode, **run(inv, MODES[mode], args.name)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        (RESULTS / f"{args.name}.yaml").unlink(missing_ok=True)
        if not args.keep:
            lab.down()
    print(
        f"\n{'nodes':>5} {'mode':<8} {'kubernetes_s':>12} {'bundle_s':>8} {'total_s':>7} {'upload_MiB':>10} "
        f"{'scripts_KiB':>11} {'cpu_s':>6} {'nodes_cpu':>9} {'machine_cpu':>11} {'load':>5}"
    )
    for r in rows:
        print(
            f"{r['nodes']:>5} {r['mode']:<8} {r['role_s'].get('kubernetes', 0):>12} {r['role_s'].get('bundle', 0):>8} "
            f"{r['wall_s']:>7} {r['upload_mib']:>10} {r['scripts_kib']:>11} {r['cpu_s']:>6} {r['nodes_cpu_s']:>9} "
            f"{r['machine_cpu_s']:>11} {r['load_before']:>5}"
        )
    for r in rows:
        print(f"\n{r['nodes']} nodes, {r['mode']}: kubernetes play per task (s): seed / others max / others median")
        for task, t in r["tasks_s"].items():
            print(f"  {t['seed']:>7} {t['others_max']:>7} {t['others_median']:>7}  {task}")
    out = RESULTS / f"bundle_distribution-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(
        json.dumps(
            {"rows": rows, "bundle_mib": round(BUNDLE.stat().st_size / 2**20, 1), "cpus": os.cpu_count()}, indent=2
        )
        + "\n"
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
