"""A run stops early, with one line saying why, once every host of a play is unreachable (issue 15):
no empty roles printed after that, exit 3. Unreachable hosts are loopback ports nobody listens on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.engine.events import RunReport
from provisioner.engine.roles import Play
from provisioner.engine.runner import Runner, RunOptions
from provisioner.inventory.loader import load_inventory
from provisioner.transport.ssh import ConnectOptions
from tests.cli.helpers import KPROV

NOWHERE = [
    {"name": "gone-1", "address": "127.0.0.1", "port": 1, "node_ip": "10.9.9.1", "user": "root"},
    {"name": "gone-2", "address": "127.0.0.1", "port": 2, "node_ip": "10.9.9.2", "user": "root"},
]


def _inventory(path: Path, hosts: list[dict]) -> Path:
    for i, h in enumerate(hosts):
        h.setdefault("roles", ["control_plane"] if i == 0 else ["worker"])
    path.write_text(
        yaml.safe_dump(
            {"cluster": {"name": "ustop", "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12"}, "hosts": hosts}
        )
    )
    return path


def test_plan_on_unreachable_hosts_stops_with_one_line(tmp_path: Path) -> None:
    inv = _inventory(tmp_path / "inv.yaml", [dict(h) for h in NOWHERE])
    log = tmp_path / "run.jsonl"  # the JSON lines sink gets the same recap
    proc = subprocess.run(
        [str(KPROV), "plan", "-i", str(inv), "--connect-timeout", "3", "--log-file", str(log)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "ROLE " not in proc.stdout  # no empty roles
    line = "stopped before preflight: every host of that play is unreachable (gone-1, gone-2); the remaining plays were not run"
    assert proc.stdout.count(line) == 1
    assert {"stopped": line} in [json.loads(x) for x in log.read_text().splitlines()]


class Plays:
    def __init__(self) -> None:
        self.started: list[tuple[str, list[str]]] = []

    def play_start(self, role: str, hosts: list[str]) -> None:
        self.started.append((role, hosts))

    def emit(self, event: object) -> None:
        pass

    def play_end(self, role: str, duration_s: float) -> None:
        pass


@pytest.mark.netns
@pytest.mark.parametrize(
    "plays, started, stopped",
    [
        # the live host's play runs; the play of only unreachable hosts stops the run: the last play never starts
        (
            [("noop", "control_plane"), ("noop", "worker"), ("noop", "all")],
            [("noop", ["live"])],
            "stopped before noop: every host of that play is unreachable (gone-1, gone-2)",
        ),
        # one live host in every play: nothing stops, the unreachable ones are left out
        ([("noop", "all"), ("noop", "live,gone-1")], [("noop", ["live"]), ("noop", ["live"])], ""),
    ],
)
def test_runner_stops_at_the_first_play_without_a_reachable_host(
    netns_fleet, tmp_path: Path, plays, started, stopped
) -> None:
    live = netns_fleet.hosts[0]
    hosts = [
        {
            "name": "live",
            "address": live.address,
            "user": "root",
            "ssh_key": str(netns_fleet.key),
            "known_hosts": str(netns_fleet.known_hosts),
            "roles": ["control_plane"],
        }
    ]
    hosts += [{**dict(h), "roles": ["worker"]} for h in NOWHERE]
    inv = load_inventory(_inventory(tmp_path / "inv.yaml", hosts))
    roles = tmp_path / "roles"
    (roles / "noop").mkdir(parents=True)
    (roles / "noop" / "tasks.yaml").write_text(
        "- name: noop | hello\n  command:\n    shell: 'true'\n  changed_when: false\n"
    )
    (tmp_path / "templates").mkdir()
    sink = Plays()
    runner = Runner(
        inv,
        RunOptions(check=True, connect=ConnectOptions(connect_timeout=3, connect_retries=0)),
        sink,
        roles_dir=roles,
        templates_dir=tmp_path / "templates",
    )
    try:
        report: RunReport = runner.run([Play(role=r, hosts=h) for r, h in plays])
    finally:
        runner.close()
    assert sink.started == started
    assert report.stopped.startswith(stopped) if stopped else report.stopped == ""
    assert int(report.exit_status()) == 3
