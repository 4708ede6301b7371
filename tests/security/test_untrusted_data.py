"""Untrusted data never becomes code: cluster data in the pod-routes script (issue 10 item 1), Jinja2
escapes in inventory and -e values (item 13), no fixed /tmp paths in what kprov runs (item 4),
registry mirrors given with -e (item 2).

The pod-routes script is rendered by the real template and run by a real `sh`; `ip` on its PATH is a
recorder (the only stand-in: the script must not change this machine's routes)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.engine.roles import ROLES_DIR, TEMPLATES_DIR
from provisioner.engine.templating import Renderer, make_env
from provisioner.errors import ExitStatus, TemplateError
from provisioner.k8s.nodes import nodes_table as _nodes_table
from provisioner.modules.base import get_module
from tests.cli.helpers import kprov

REPO = Path(__file__).resolve().parents[2]


def node(name: str, ip: str, cidr: str) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


GOOD = node("w1", "10.215.0.21", "10.244.1.0/24")

# (what is hostile, name, InternalIP, podCIDR): each row must be dropped
HOSTILE_ROWS = [
    ("command substitution in the IP", "w2", "10.215.0.22 $(touch {canary})", "10.244.2.0/24"),
    ("backticks in the IP", "w2", "10.215.0.22`touch {canary}`", "10.244.2.0/24"),
    ("; in the IP", "w2", "10.215.0.22;touch {canary}", "10.244.2.0/24"),
    ("newline in the IP", "w2", "10.215.0.22\ntouch {canary}", "10.244.2.0/24"),
    ("quote in the IP", "w2", "10.215.0.22'\"", "10.244.2.0/24"),
    ("scoped IPv6 address", "w2", "fe80::1%eth0;touch {canary}", "10.244.2.0/24"),
    ("command substitution in the podCIDR", "w2", "10.215.0.22", "10.244.2.0/24 $(touch {canary})"),
    ("host bits in the podCIDR", "w2", "10.215.0.22", "10.244.2.7/24"),
    ("glob as podCIDR", "w2", "10.215.0.22", "/*"),
    ("newline in the name", "w2\ntouch {canary}", "10.215.0.22", "10.244.2.0/24"),
    ("command substitution in the name", "w2$(touch {canary})", "10.215.0.22", "10.244.2.0/24"),
]

IP_RECORDER = """#!/bin/sh
# records every call (arguments end with \\037, calls with \\036), answers `ip route show` with nothing
for a in "$@"; do printf '%s\\037' "$a"; done >> "$IP_LOG"
printf '\\036' >> "$IP_LOG"
exit 0
"""


def render_routes(rows: list[dict]) -> str:
    variables = {"cni_pod_routes": rows}
    return Renderer(make_env(TEMPLATES_DIR), variables, "test").render_file("cni/kprov-pod-routes.sh.j2")


def run_script(script: str, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ip").write_text(IP_RECORDER)
    (bin_dir / "ip").chmod(0o755)
    path = tmp_path / "kprov-pod-routes"
    path.write_text(script)
    log = tmp_path / "ip.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "IP_LOG": str(log)}
    proc = subprocess.run(["sh", str(path), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    text = log.read_text() if log.exists() else ""
    return proc, [" ".join(call.split("\x1f")[:-1]) for call in text.split("\x1e")[:-1]]


@pytest.mark.parametrize("what,name,ip,cidr", HOSTILE_ROWS, ids=[r[0] for r in HOSTILE_ROWS])
def test_hostile_node_rows_are_dropped_with_a_warning_and_nothing_runs(what, name, ip, cidr, tmp_path, caplog):
    canary = tmp_path / "pwned"
    hostile = node(name.format(canary=canary), ip.format(canary=canary), cidr.format(canary=canary))
    caplog.set_level(logging.WARNING, logger="provisioner.k8s.nodes")
    rows = _nodes_table(json.dumps({"items": [GOOD, hostile]}))
    assert [r["name"] for r in rows] == ["w1"], f"{what}: the hostile row was kept"
    assert any("ignoring node" in r.getMessage() for r in caplog.records), "no warning for the dropped row"

    proc, calls = run_script(render_routes(rows), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not canary.exists()
    assert calls == ["route show exact 10.244.1.0/24", "route replace 10.244.1.0/24 via 10.215.0.21"]


@pytest.mark.parametrize("mode", ["", "--check", "--remove"])
@pytest.mark.parametrize("what,name,ip,cidr", HOSTILE_ROWS, ids=[r[0] for r in HOSTILE_ROWS])
def test_route_script_quotes_values_even_when_validation_is_bypassed(what, name, ip, cidr, mode, tmp_path):
    """Defence in depth: rows straight into the template (no validation): still data, never code."""
    canary = tmp_path / "pwned"
    row = {"name": name.format(canary=canary), "ip": ip.format(canary=canary), "pod_cidr": cidr.format(canary=canary)}
    proc, calls = run_script(render_routes([row]), tmp_path, *([mode] if mode else []))
    assert not canary.exists(), f"{what}: the script ran the value"
    if mode != "--check":  # --check stops at the first missing route, before any change
        assert proc.returncode == 0, proc.stderr
    assert calls[0] == f"route show exact {row['pod_cidr']}", "the value did not arrive literally"
    if mode == "":
        assert calls[1] == f"route replace {row['pod_cidr']} via {row['ip']}"


def test_well_formed_cluster_data_is_kept_in_canonical_form():
    rows = _nodes_table(
        json.dumps(
            {
                "items": [
                    node("w1", "10.215.0.21", "10.244.1.0/24"),
                    node("w6", "fd00:0::6", "fd10::/64"),
                    node("new", "", ""),
                ]
            }
        )
    )
    assert [(r["name"], r["ip"], r["pod_cidr"]) for r in rows] == [
        ("w1", "10.215.0.21", "10.244.1.0/24"),
        ("w6", "fd00::6", "fd10::/64"),
        ("new", "", ""),
    ]


# --- Jinja2 sandbox: inventory and -e values cannot reach Python ---------------------------------------

ESCAPES = [
    "{{ cycler.__init__.__globals__.os.getpid() }}",
    "x-{{ cycler.__init__.__globals__.os.getpid() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__['os'].system('id') }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


@pytest.mark.parametrize("value", ESCAPES)
def test_sandbox_refuses_python_escapes(value):
    with pytest.raises(TemplateError) as err:
        Renderer(make_env(TEMPLATES_DIR), {"x": 1}, "inventory").render(value)
    assert err.value.exit_status == ExitStatus.BAD_INPUT
    assert "unsafe" in err.value.message


def loopback_inventory(tmp_path: Path, cluster_vars: dict | None = None) -> Path:
    """The static example on loopback addresses nothing listens on (the commands below fail before SSH)."""
    doc = yaml.safe_load((REPO / "inventories" / "static-example.yaml").read_text())
    for i, h in enumerate(doc["hosts"]):
        h["address"] = h["node_ip"] = f"127.0.0.{100 + i}"
    doc["cluster"]["vars"] = cluster_vars or {}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("where", ["-e", "cluster.vars"])
def test_cli_refuses_a_python_escape_as_bad_input(where, tmp_path):
    value = "{{ cycler.__init__.__globals__.os.getpid() }}"
    if where == "-e":
        res = kprov("smoke", "-i", str(loopback_inventory(tmp_path)), "-e", f"smoke_namespace={value}")
    else:
        res = kprov("smoke", "-i", str(loopback_inventory(tmp_path, {"smoke_namespace": value})))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: variable 'smoke_namespace': refused to render")
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in res.stderr and str(os.getpid()) not in res.stdout + res.stderr


# --- no fixed /tmp paths in anything kprov runs as root ----------------------------------------------

FIXED_TMP = re.compile(r"(?<![\w$.-])/(?:var/)?tmp/")


def _text_files() -> list[Path]:
    return sorted([*ROLES_DIR.glob("*/*.yaml"), *TEMPLATES_DIR.rglob("*.j2")])


@pytest.mark.parametrize("path", _text_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_role_or_template_names_a_fixed_tmp_path(path):
    hits = [f"{i}: {ln.strip()}" for i, ln in enumerate(path.read_text().splitlines(), 1) if FIXED_TMP.search(ln)]
    assert hits == [], "use mktemp (a fixed /tmp name is a symlink trap for root)"


WAITS = [{"port": 6443}, {"argv": ["kubectl", "get", "nodes"]}, {"shell": "test -e /etc/kubernetes/admin.conf"}]


@pytest.mark.parametrize("args", WAITS, ids=["port", "argv", "shell"])
def test_wait_for_scripts_use_mktemp(args):
    module = get_module("wait_for", "test")
    script = module.check(module.validate(args, "test"), {}).script
    assert not FIXED_TMP.search(script), script
    assert "$(mktemp)" in script


def test_every_module_script_is_free_of_fixed_tmp_paths():
    """Each module's change script for a typical task (the engine adds only framing around them)."""
    from provisioner.facts.parsers import FileState
    from provisioner.modules.base import REGISTRY

    absent = FileState(False)
    samples = {
        "file": ({"path": "/etc/x", "content": "x"}, {"file": absent}),
        "line": ({"path": "/etc/x", "line": "x"}, {"file": absent}),
        "apt_repository": (
            {"name": "x", "uri": "http://a/", "suites": "s", "key_url": "http://a/k"},
            {"list": absent, "key": absent},
        ),
        "command": ({"argv": ["true"]}, {}),
    }
    for name, (args, facts) in samples.items():
        module = REGISTRY[name]
        script = module.check(module.validate(args, "test"), facts).script
        assert not FIXED_TMP.search(script), f"{name}: {script}"


# --- registry mirrors given with -e are validated like the inventory's ---------------------------------


@pytest.mark.parametrize(
    "mirrors",
    [
        {"docker.io'$(touch /pwned)'": ["http://m:5000"]},
        {"docker.io\n[host.x]": ["http://m:5000"]},
        {"../../etc/cron.d": ["http://m:5000"]},
        {"docker.io": ['http://m:5000"; touch /pwned; "']},
        {"docker.io": ["http://m:5000\n"]},
        ["docker.io"],
    ],
)
def test_hostile_registry_mirrors_are_bad_input(mirrors):
    env = make_env(TEMPLATES_DIR)
    with pytest.raises(TemplateError) as err:
        Renderer(env, {"m": mirrors}, "containerd").render("{{ m | mirror_items }}")
    assert err.value.exit_status == ExitStatus.BAD_INPUT


@pytest.mark.parametrize(
    "doc",
    [
        "[1, 2]",
        '{"items": 3}',
        '{"items": [1, "x", null]}',
        '{"items": [{"metadata": [], "spec": "x", "status": {"addresses": {"a": 1}, "conditions": 5}}]}',
        '{"items": [{"metadata": {"name": "w1"}, "spec": {"podCIDR": 7}, "status": []}]}',
    ],
)
def test_malformed_node_lists_give_no_rows_instead_of_an_internal_error(doc):
    rows = _nodes_table(doc)
    assert all(r["name"] and r["pod_cidr"] == "" and r["ip"] == "" for r in rows)


def _containerd_prune_task() -> dict:
    tasks = yaml.safe_load((ROLES_DIR / "containerd" / "tasks.yaml").read_text())
    (task,) = [t for t in tasks if "remove mirror configs" in t["name"]]
    return task["command"]


@pytest.mark.parametrize(
    "kept",
    [
        {"docker.io": ["http://m:5000"], "reg.example:5000": ["https://m2"]},
        {"docker.io'$(touch CANARY)'": ["http://m"], 'a" b $(touch CANARY)': []},
    ],
)
def test_mirror_pruning_keeps_listed_registries_and_runs_no_name(kept, tmp_path):
    """The real task's script and its unless probe, run by sh on a scratch config directory."""
    canary = tmp_path / "pwned"  # the scripts run in tmp_path: `touch pwned` would create it
    kept = {k.replace("CANARY", "pwned"): v for k, v in kept.items()}
    certs = tmp_path / "certs.d"
    for name in [*kept, "stale.example"]:
        (certs / name).mkdir(parents=True)
    task = _containerd_prune_task()
    r = Renderer(
        make_env(TEMPLATES_DIR),
        {"containerd_registry_mirrors": kept, "containerd_registry_config_path": str(certs)},
        "test",
    )

    def sh(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, cwd=tmp_path)

    assert sh(r.render(task["unless"])).returncode != 0, "a stale registry directory went unnoticed"
    out = sh(r.render(task["shell"]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["removed", "stale.example"]
    assert sorted(p.name for p in certs.iterdir()) == sorted(kept)
    assert sh(r.render(task["unless"])).returncode == 0
    assert not canary.exists()
