#!/usr/bin/env python3
"""Fan-out speed: `kprov apply` of a 7-task role vs a bare parallel paramiko fan-out (the floor).

    sudo .venv/bin/python benchmarks/fanout.py [--nodes 30] [--lab kbf] [--reps 3] [--keep]

Brings up a lab of N nodes, then measures in the same run:
  floor     a bare paramiko fan-out: one thread and one connection per host (connect included),
            the shell commands equivalent to the role's 7 tasks, one exec each, sequential per host;
  first     `kprov apply --roles-dir benchmarks/roles bench_prereq --log-format json` (the CLI, as a
            subprocess: interpreter start-up and imports included) on nodes the role has not touched;
  no-op     the same command again: must report 0 changed (the run fails loudly otherwise).
Every repetition first undoes the role with a bare fan-out (`cleanup`), so each first run sees nodes
in their fresh state. Before timing, the floor's equivalence is checked: floor, then kprov must
report 0 changed. Each repetition also runs the Runner in-process (first run and rerun) with a
counting transport: SSH round trips per host, and the engine's time without CLI start-up (connect vs
role). Node-side cost is measured too: CPU of all nodes (the lab's cpuacct cgroup) and processes
started on the first node.

Prints a table (medians, ratios kprov/floor, targets) and writes
benchmarks/results/fanout-<UTC time>.json. The lab is removed at the end unless --keep (the cached
base image stays). Traffic goes only to the lab's own nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import paramiko  # noqa: E402
import yaml  # noqa: E402

from provisioner.lab import Lab  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROLES_DIR = BENCH / "roles"
TEMPLATES_DIR = BENCH / "templates"
RESULTS = BENCH / "results"
ROLE = "bench_prereq"
KPROV = REPO / ".venv" / "bin" / "kprov"
TARGETS = {"first": 1.5, "noop": 2.0}
#: values of a new network namespace (a fresh lab node); the cleanup puts them back
FRESH_SYSCTL = {"net.ipv4.ip_forward": "0", "net.ipv4.tcp_keepalive_time": "7200"}
CONNECT_TIMEOUT = 60.0  # the machine may be very busy; a slow handshake is data, not a failure


class BenchError(Exception):
    """The benchmark cannot give a valid number (a failed command, a non-idempotent rerun, ...)."""


@dataclass(frozen=True)
class Target:
    name: str
    address: str


class NodeMeter:
    """Work done inside the nodes: CPU of all of them (the lab's cpuacct cgroup) and the processes
    started on the first node (its PID namespace's last PID, from /proc/loadavg via nsenter)."""

    def __init__(self, lab: Lab, first: Any) -> None:
        from provisioner.lab import cgroups

        dirs = [d / "cpuacct.usage" for d in cgroups.find_lab_dirs(lab.name) if (d / "cpuacct.usage").is_file()]
        self.usage = dirs[0] if dirs else None
        children = Path(f"/proc/{first.pid}/task/{first.pid}/children") if first.pid else None
        pids = children.read_text().split() if children and children.exists() else []
        self.init_pid = int(pids[0]) if pids else None
        self.node = first.name

    def read(self) -> tuple[float | None, int | None]:
        cpu = int(self.usage.read_text()) / 1e9 if self.usage else None
        last = None
        if self.init_pid:
            out = subprocess.run(
                ["nsenter", "-t", str(self.init_pid), "-m", "-p", "cat", "/proc/loadavg"],
                capture_output=True,
                text=True,
            )
            last = int(out.stdout.split()[4]) if out.returncode == 0 else None
        return cpu, last

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
        cpu0, pid0 = self.read()
        result = fn()
        cpu1, pid1 = self.read()
        return result, {
            "nodes_cpu_s": round(cpu1 - cpu0, 3) if cpu0 is not None and cpu1 is not None else None,
            "node1_processes": pid1 - pid0 - 1 if pid0 is not None and pid1 is not None else None,
        }


# -- the floor: bare paramiko --------------------------------------------------------------------


@dataclass
class HostTiming:
    connect_s: float = 0.0
    exec_s: float = 0.0
    execs: int = 0
    error: str = ""


@dataclass
class FanOut:
    wall_s: float
    cpu_s: float  # this process's CPU (all threads): the client's share of the work
    loadavg: tuple[float, float, float]
    hosts: dict[str, HostTiming] = field(default_factory=dict)
    outputs: dict[str, list[str]] = field(default_factory=dict)
    node: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        con = [h.connect_s for h in self.hosts.values()]
        ex = [h.exec_s for h in self.hosts.values()]
        return {
            "wall_s": round(self.wall_s, 3),
            "client_cpu_s": round(self.cpu_s, 3),
            "loadavg_1m": self.loadavg[0],
            "connect_s": _spread(con),
            "exec_s": _spread(ex),
            "execs_per_host": sorted({h.execs for h in self.hosts.values()}),
            **self.node,
        }


def fan_out(
    targets: Sequence[Target], commands: Callable[[Target], list[str]], key: Path, known_hosts: Path, user: str = "root"
) -> FanOut:
    """Run each host's commands over one fresh connection per host, all hosts in parallel (one thread each)."""
    timings = {t.name: HostTiming() for t in targets}
    outputs: dict[str, list[str]] = {t.name: [] for t in targets}
    cmds = {t.name: commands(t) for t in targets}  # built before the clock starts
    pkey = paramiko.Ed25519Key.from_private_key_file(str(key))
    barrier = threading.Barrier(len(targets) + 1)

    def one(t: Target) -> None:
        tm = timings[t.name]
        barrier.wait()
        t0 = time.monotonic()
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                t.address,
                username=user,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
            )
            t1 = time.monotonic()
            tm.connect_s = t1 - t0
            for cmd in cmds[t.name]:
                _, stdout, stderr = client.exec_command(cmd)
                out = stdout.read().decode("utf-8", "replace")
                err = stderr.read().decode("utf-8", "replace")
                rc = stdout.channel.recv_exit_status()
                tm.execs += 1
                outputs[t.name].append(out)
                if rc != 0:
                    tm.error = f"rc={rc} for {cmd[:80]!r}: {err.strip()[-300:]}"
                    return
            tm.exec_s = time.monotonic() - t1
        except Exception as exc:
            tm.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(t,), name=f"floor-{t.name}") for t in targets]
    for th in threads:
        th.start()
    load = os.getloadavg()
    cpu0 = time.process_time()
    barrier.wait()
    t0 = time.monotonic()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    result = FanOut(wall, time.process_time() - cpu0, load, timings, outputs)
    failed = {n: h.error for n, h in timings.items() if h.error}
    if failed:
        raise BenchError(
            f"fan-out failed on {len(failed)} host(s): " + "; ".join(f"{n}: {e}" for n, e in sorted(failed.items())[:3])
        )
    return result


class FloorCommands:
    """The shell equivalent of each task of roles/bench_prereq, one command per task."""

    def __init__(self, inventory: dict[str, Any]) -> None:
        from provisioner.engine.templating import make_env

        self.defaults = yaml.safe_load((ROLES_DIR / ROLE / "defaults.yaml").read_text())
        self.cluster = inventory["cluster"]
        self.node_ip = {h["name"]: h.get("node_ip") or h["address"] for h in inventory["hosts"]}
        self.template = make_env(TEMPLATES_DIR).get_template(f"{ROLE}/node.conf.j2")

    def __call__(self, t: Target) -> list[str]:
        d = self.defaults
        modules = "# managed by kprov\n" + "".join(f"{m}\n" for m in d["bench_prereq_kernel_modules"])
        sysctl = {k: str(v) for k, v in d["bench_prereq_sysctl"].items()}
        sysctl_file = "# managed by kprov\n" + "".join(f"{k} = {v}\n" for k, v in sysctl.items())
        node_conf = self.template.render(
            cluster=self.cluster, inventory_hostname=t.name, host={"node_ip": self.node_ip[t.name]}
        )
        env_line = f"BENCH_NODE={t.name}"
        q = shlex.quote
        return [
            # swap
            "swapoff -a && sed -i -E 's@^([[:space:]]*[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$"
            "@# \\1@' /etc/fstab",
            # kernel_module
            f"printf %s {q(modules)} > /etc/modules-load.d/bench.conf && modprobe -a "
            + " ".join(q(m) for m in d["bench_prereq_kernel_modules"]),
            # sysctl
            f"printf %s {q(sysctl_file)} > /etc/sysctl.d/99-bench.conf && sysctl -q -w "
            + " ".join(q(f"{k}={v}") for k, v in sysctl.items()),
            # file state=directory
            "mkdir -p /var/lib/bench && chmod 0750 /var/lib/bench",
            # file with content
            f"mkdir -p /etc/bench && printf %s {q(d['bench_prereq_config'])} > /etc/bench/bench.conf "
            "&& chmod 0640 /etc/bench/bench.conf",
            # template
            f"mkdir -p /etc/bench && printf %s {q(node_conf)} > /etc/bench/node.conf && chmod 0644 /etc/bench/node.conf",
            # line
            f"if grep -q '^BENCH_NODE=' /etc/environment; then sed -i 's/^BENCH_NODE=.*/{env_line}/' /etc/environment; "
            f"else echo {q(env_line)} >> /etc/environment; fi",
        ]

    def cleanup(self) -> Callable[[Target], list[str]]:
        """Undo the role: remove its files and the line, put the sysctls back to a fresh node's values."""
        missing = set(self.defaults["bench_prereq_sysctl"]) - set(FRESH_SYSCTL)
        if missing:
            raise BenchError(f"FRESH_SYSCTL has no fresh value for {sorted(missing)}")
        restore = " ".join(shlex.quote(f"{k}={v}") for k, v in FRESH_SYSCTL.items())

        def commands(t: Target) -> list[str]:
            return [
                "rm -rf /etc/bench /var/lib/bench /etc/modules-load.d/bench.conf /etc/sysctl.d/99-bench.conf && "
                f"sed -i '/^BENCH_NODE=/d' /etc/environment && sysctl -q -w {restore}"
            ]

        return commands


# -- kprov -----------------------------------------------------------------------------------------


@dataclass
class KprovRun:
    wall_s: float
    cpu_s: float  # CPU of the kprov process (user + sys)
    loadavg: tuple[float, float, float]
    rc: int
    recap: dict[str, dict[str, int]]
    node: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(r["changed"] for r in self.recap.values())

    def summary(self) -> dict[str, Any]:
        per_host = [r["changed"] for r in self.recap.values()]
        return {
            "wall_s": round(self.wall_s, 3),
            "client_cpu_s": round(self.cpu_s, 3),
            "loadavg_1m": self.loadavg[0],
            "rc": self.rc,
            "changed_total": self.changed,
            "changed_per_host": sorted(set(per_host)),
            "hosts": len(self.recap),
            **self.node,
        }


def kprov_apply(inventory: Path) -> KprovRun:
    argv = [str(KPROV), "apply", "-i", str(inventory), "--roles-dir", str(ROLES_DIR), ROLE, "--log-format", "json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    recap, errors = {}, []
    for line in proc.stdout.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "recap" in obj:
            recap[obj["recap"]] = {k: obj[k] for k in ("ok", "changed", "failed", "skipped", "unreachable")}
        elif obj.get("status") in ("failed", "unreachable"):
            errors.append(
                f"{obj['host']} {obj['task']!r}: {obj['status']}: {obj.get('msg', '')}"
                + (f" | {obj['stderr_tail'][-300:]}" if obj.get("stderr_tail") else "")
            )
    run = KprovRun(wall, cpu, load, proc.returncode, recap)
    if proc.returncode != 0 or errors:
        raise BenchError(
            f"kprov apply exited {proc.returncode} after {wall:.1f}s; {len(errors)} failure(s):\n  "
            + "\n  ".join(errors[:10])
            + f"\n{proc.stderr.strip()[-2000:]}"
        )
    return run


def in_process(inventory: Path) -> dict[str, Any]:
    """The Runner in this process with a transport that counts round trips (one exec = one round trip)."""
    from provisioner.engine.roles import Play
    from provisioner.engine.runner import Runner, RunOptions
    from provisioner.inventory.loader import load_inventory
    from provisioner.k8s.context import cluster_vars
    from provisioner.secrets import Redactor
    from provisioner.transport.ssh import SSHHost

    class CountingSSHHost(SSHHost):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.round_trips = 0

        def exec(self, command: str, **kw: Any) -> Any:
            self.round_trips += 1
            return super().exec(command, **kw)

    t_start = time.monotonic()
    inv = load_inventory(str(inventory))
    redactor = Redactor()
    options = RunOptions()
    transports: dict[str, CountingSSHHost] = {}

    def connector(host: Any) -> CountingSSHHost:
        transports[host.name] = CountingSSHHost(host, options.connect, redactor)
        return transports[host.name]

    runner = Runner(
        inv,
        options,
        redactor=redactor,
        roles_dir=ROLES_DIR,
        templates_dir=TEMPLATES_DIR,
        connector=connector,
        base_vars=cluster_vars(inv, redactor),
    )
    cpu0 = time.process_time()
    t0 = time.monotonic()
    try:
        runner.connect(inv.hosts)
        t1 = time.monotonic()
        report = runner.run([Play(role=ROLE, hosts="all")])
        t2 = time.monotonic()
    finally:
        runner.close()
    cpu = time.process_time() - cpu0
    bad = report.failed_hosts + report.unreachable_hosts
    if bad:
        first = next((e.msg for e in report.events if e.host in bad and e.msg), "")
        raise BenchError(f"in-process run failed on {sorted(bad)[:5]}: {first}")
    rts = [t.round_trips for t in transports.values()]
    return {
        "setup_s": round(t0 - t_start, 3),
        "connect_s": round(t1 - t0, 3),
        "role_s": round(t2 - t1, 3),
        "wall_s": round(t2 - t0, 3),
        "client_cpu_s": round(cpu, 3),
        "changed_total": report.changed,
        "round_trips_per_host": _spread(rts, digits=0),
        "connections_per_host": 1,
    }


def cli_import_seconds(samples: int = 3) -> dict[str, Any]:
    """Interpreter start-up + the imports `kprov apply` pays before it touches a host (wall and CPU)."""
    py = str(REPO / ".venv" / "bin" / "python")
    out: dict[str, Any] = {}
    for name, code in (
        ("kprov_cli_imports", "import provisioner.cli.main, provisioner.cli.run"),
        ("python_plus_paramiko", "import paramiko"),
    ):
        walls, cpus = [], []
        for _ in range(samples):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            subprocess.run([py, "-c", code], check=True, cwd=REPO)
            walls.append(time.monotonic() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        out[f"{name}_s"] = _spread(walls)
        out[f"{name}_cpu_s"] = _spread(cpus)
    return out


# -- helpers -----------------------------------------------------------------------------------------


def _spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    if not values:
        return {}
    r = (lambda v: round(v, digits)) if digits else (lambda v: int(v) if float(v).is_integer() else round(v, 1))
    return {"min": r(min(values)), "median": r(statistics.median(values)), "max": r(max(values))}


def _median_of(rows: Sequence[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.2f}" if isinstance(med, float) and not med.is_integer() else str(int(med))


def _median(runs: Sequence[Any]) -> float:
    return statistics.median(r.wall_s for r in runs)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the benchmark ------------------------------------------------------------------------------------


def run_benchmark(lab: Lab, nodes: int, reps: int) -> dict[str, Any]:
    load_start = os.getloadavg()
    t0 = time.monotonic()
    up = lab.up(nodes)
    up_s = time.monotonic() - t0
    targets = [Target(n.name, str(n.address)) for n in up]
    key, known = Path(lab.key_path), Path(lab.known_hosts_path)
    inventory = Path(lab.inventory_path)
    floor = FloorCommands(yaml.safe_load(inventory.read_text()))
    _log(f"lab {lab.name}: {len(targets)} nodes up in {up_s:.1f}s; waiting for boot to settle")
    fan_out(targets, lambda t: ["systemctl is-system-running --wait >/dev/null || true"], key, known)

    cleanup = floor.cleanup()

    _log("start-up cost of the CLI (interpreter + imports)")
    startup = cli_import_seconds()

    _log("equivalence check: cleanup, floor, then kprov must find nothing to change")
    fan_out(targets, cleanup, key, known)
    fan_out(targets, floor, key, known)
    check = kprov_apply(inventory)
    if check.changed != 0:
        raise BenchError(
            f"the floor's commands and the role differ: kprov changed {check.changed} task(s) after "
            f"the floor ran ({check.recap})"
        )

    meter = NodeMeter(lab, up[0])

    def measured(fn: Callable[[], Any]) -> Any:
        result, node = meter.measure(fn)
        if isinstance(result, dict):
            result.update(node)
        else:
            result.node = node
        return result

    floor_fresh: list[FanOut] = []
    floor_conv: list[FanOut] = []
    first: list[KprovRun] = []
    noop: list[KprovRun] = []
    engine_first: list[dict[str, Any]] = []
    engine_noop: list[dict[str, Any]] = []
    for i in range(reps):
        _log(f"repetition {i + 1}/{reps}")
        fan_out(targets, cleanup, key, known)
        floor_fresh.append(measured(lambda: fan_out(targets, floor, key, known)))
        fan_out(targets, cleanup, key, known)
        run = measured(lambda: kprov_apply(inventory))
        no_change = [h for h, r in run.recap.items() if r["changed"] == 0]
        if len(run.recap) != len(targets) or no_change:
            raise BenchError(
                f"first run on cleaned nodes changed nothing on {no_change[:5]} ({len(run.recap)} hosts in the recap)"
            )
        first.append(run)
        run = measured(lambda: kprov_apply(inventory))
        if run.changed != 0:
            raise BenchError(
                f"NOT IDEMPOTENT: the no-op rerun changed {run.changed} task(s): "
                f"{ {h: r for h, r in run.recap.items() if r['changed']} }"
            )
        noop.append(run)
        floor_conv.append(measured(lambda: fan_out(targets, floor, key, known)))
        # the same engine in this process: no interpreter start-up or imports, round trips counted
        fan_out(targets, cleanup, key, known)
        engine_first.append(measured(lambda: in_process(inventory)))
        engine_noop.append(measured(lambda: in_process(inventory)))
        if engine_noop[-1]["changed_total"] != 0:
            raise BenchError(
                f"NOT IDEMPOTENT (in-process): the rerun changed {engine_noop[-1]['changed_total']} task(s)"
            )
        _log(
            f"  floor {floor_fresh[-1].wall_s:.2f}s / {floor_conv[-1].wall_s:.2f}s, "
            f"kprov first {first[-1].wall_s:.2f}s, no-op {noop[-1].wall_s:.2f}s, "
            f"in-process first {engine_first[-1]['wall_s']:.2f}s, no-op {engine_noop[-1]['wall_s']:.2f}s, "
            f"load {os.getloadavg()[0]:.1f}"
        )

    floor_all = floor_fresh + floor_conv
    med = {
        "floor": _median(floor_all),
        "floor_fresh": _median(floor_fresh),
        "floor_converged": _median(floor_conv),
        "first": _median(first),
        "noop": _median(noop),
        "engine_first": statistics.median(r["wall_s"] for r in engine_first),
        "engine_noop": statistics.median(r["wall_s"] for r in engine_noop),
    }
    ratios = {
        "first": med["first"] / med["floor_fresh"],
        "noop": med["noop"] / med["floor_converged"],
        "engine_first": med["engine_first"] / med["floor_fresh"],
        "engine_noop": med["engine_noop"] / med["floor_converged"],
    }
    per_rep = {
        "first": [round(a.wall_s / b.wall_s, 2) for a, b in zip(first, floor_fresh)],
        "noop": [round(a.wall_s / b.wall_s, 2) for a, b in zip(noop, floor_conv)],
    }
    return {
        "meta": {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "nodes": len(targets),
            "lab": lab.name,
            "reps": reps,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "paramiko": paramiko.__version__,
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "lab_up_s": round(up_s, 1),
            "first_run_method": "every repetition: bare fan-out cleanup (files, line, sysctls back to their "
            "values before the run) so each first run sees untouched nodes",
        },
        "medians_s": {k: round(v, 3) for k, v in med.items()},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
        "ratios_per_repetition": per_rep,
        "targets": TARGETS,
        "met": {k: ratios[k] <= TARGETS[k] for k in TARGETS},
        "round_trips_per_host": {
            "floor": {"connections": 1, "execs": 7},
            "kprov_first": {"connections": 1, "execs": engine_first[-1]["round_trips_per_host"]},
            "kprov_noop": {"connections": 1, "execs": engine_noop[-1]["round_trips_per_host"]},
        },
        "startup": startup,
        "runs": {
            "floor_fresh": [r.summary() for r in floor_fresh],
            "floor_converged": [r.summary() for r in floor_conv],
            "kprov_first": [r.summary() for r in first],
            "kprov_noop": [r.summary() for r in noop],
            "equivalence_check": check.summary(),
            "in_process_first": engine_first,
            "in_process_noop": engine_noop,
        },
    }


def print_table(res: dict[str, Any]) -> None:
    m, runs, rt, ratios, targets = (
        res["medians_s"],
        res["runs"],
        res["round_trips_per_host"],
        res["ratios"],
        res["targets"],
    )
    meta = res["meta"]
    print(
        f"\nfan-out benchmark: {meta['nodes']} nodes, {meta['reps']} repetitions, {meta['cpus']} CPUs, "
        f"load average (1 min) {meta['loadavg_start'][0]:.1f} at start, {meta['loadavg_end'][0]:.1f} at end"
    )
    print(
        f"{'measurement':<31} {'median s':>8} {'ratio':>6} {'target':>7} {'CPU s: client':>13} {'nodes':>6} "
        f"{'execs/host':>10} {'procs/node':>10}  runs (s)"
    )
    rows = [
        ("floor, fresh nodes", "floor_fresh", "floor_fresh", None, "7"),
        ("floor, converged nodes", "floor_converged", "floor_converged", None, "7"),
        ("kprov apply CLI, first run", "kprov_first", "first", "first", rt["kprov_first"]["execs"]["median"]),
        ("kprov apply CLI, no-op rerun", "kprov_noop", "noop", "noop", rt["kprov_noop"]["execs"]["median"]),
        (
            "engine in-process, first",
            "in_process_first",
            "engine_first",
            "engine_first",
            rt["kprov_first"]["execs"]["median"],
        ),
        (
            "engine in-process, no-op",
            "in_process_noop",
            "engine_noop",
            "engine_noop",
            rt["kprov_noop"]["execs"]["median"],
        ),
    ]
    for label, key, med_key, ratio_key, execs in rows:
        walls = " ".join(f"{r['wall_s']:.2f}" for r in runs[key])
        cpu = statistics.median(r["client_cpu_s"] for r in runs[key])
        node_cpu = _median_of(runs[key], "nodes_cpu_s")
        procs = _median_of(runs[key], "node1_processes")
        ratio = f"{ratios[ratio_key]:.2f}x" if ratio_key else ""
        target = f"<={targets[ratio_key]:.1f}x" if ratio_key in targets else ""
        print(
            f"{label:<31} {m[med_key]:>8.2f} {ratio:>6} {target:>7} {cpu:>13.2f} {node_cpu:>6} {execs:>10} "
            f"{procs:>10}  {walls}"
        )
    print(
        "per-repetition ratios (kprov CLI / floor of the same repetition): "
        f"first {res['ratios_per_repetition']['first']}, no-op {res['ratios_per_repetition']['noop']}"
    )
    eng = runs["in_process_first"], runs["in_process_noop"]
    print(
        "engine in-process split (median): "
        + ", ".join(
            f"{name} connect {statistics.median(r['connect_s'] for r in rs):.2f}s + role "
            f"{statistics.median(r['role_s'] for r in rs):.2f}s"
            for name, rs in zip(("first", "no-op"), eng)
        )
    )
    st = res["startup"]
    print(
        f"CLI start-up (python + kprov imports): median {st['kprov_cli_imports_s']['median']:.2f}s wall, "
        f"{st['kprov_cli_imports_cpu_s']['median']:.2f}s CPU; python + paramiko alone "
        f"{st['python_plus_paramiko_s']['median']:.2f}s wall, {st['python_plus_paramiko_cpu_s']['median']:.2f}s CPU"
    )
    verdict = ", ".join(
        f"{k} {ratios[k]:.2f}x {'met' if ok else 'MISSED'} (target {targets[k]}x)" for k, ok in res["met"].items()
    )
    print(f"targets: {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=30)
    ap.add_argument("--lab", default="kbf", help="lab name (created if missing, reused if it exists)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of floor, first run and no-op rerun")
    ap.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    args = ap.parse_args()

    lab = Lab(args.lab)
    try:
        res = run_benchmark(lab, args.nodes, args.reps)
    except BenchError as exc:
        print(f"fanout: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            _log(f"removing lab {args.lab}")
            lab.down()
    print_table(res)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fanout-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"results: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
