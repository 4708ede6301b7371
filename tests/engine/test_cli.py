"""The real `kprov apply` CLI (a subprocess) on netns hosts, with the project's read-only `preflight` role."""

from __future__ import annotations

import json

import pytest

from tests.inventory.cli import kprov

pytestmark = pytest.mark.netns

H1, H2 = "kpe-1", "kpe-2"


def _two_hosts(doc: dict) -> None:
    doc["hosts"] = [h for h in doc["hosts"] if h["name"] not in ("kpe-3", "kpe-4")]


@pytest.fixture
def home(tmp_path):
    return tmp_path / "kprov-home"


def _apply(fleet, home, *args, mutate=None, extra_hosts=None):
    def edit(doc):
        _two_hosts(doc)
        if mutate:
            mutate(doc, fleet.netns.subnet)

    inv = fleet.inventory_path(edit, extra_hosts)
    return kprov("apply", "-i", str(inv), "preflight", *args, env={"KPROV_HOME": str(home), "COLUMNS": "200"})


def test_json_log_format(fleet, home):
    res = _apply(fleet, home, "--log-format", "json")
    assert res.returncode == 0, res.stderr
    objs = [json.loads(line) for line in res.stdout.splitlines()]  # every line is one JSON object
    events = [o for o in objs if "recap" not in o]
    assert {e["host"] for e in events} == {H1, H2}
    for e in events:
        assert {"host", "role", "task", "status", "changed", "duration_ms", "msg"} <= set(e)
        assert e["role"] == "preflight" and e["status"] == "ok"
    assert {o["recap"] for o in objs if "recap" in o} == {H1, H2}


@pytest.mark.parametrize(
    "args, mutate, extra_hosts, rc, needles",
    [
        ([], None, [{"name": "ghost", "address": "127.0.0.1", "port": 1}], 3, ["ghost", "cannot connect"]),
        (
            [],
            lambda d, subnet: d["hosts"][1].update(node_ip=f"{subnet}.200"),
            None,
            1,
            [f"{H2}: node_ip {{subnet}}.200 is not an address of any interface"],
        ),
        (["-e", "preflight_min_memory_mb_worker=99999999"], None, None, 1, [f"{H2}: only", "MiB of memory"]),
        (["--limit", H1], None, None, 0, [H1]),
        (["--limit", "nope"], None, None, 2, ["error: --limit: pattern 'nope' matches no host or group"]),
        (["--tags", "no-such-tag"], None, None, 0, []),
    ],
    ids=["unreachable-3", "task-failed-1", "extra-vars-1", "limit", "bad-limit-2", "tags"],
)
def test_exit_codes_and_recap(fleet, home, args, mutate, extra_hosts, rc, needles):
    res = _apply(fleet, home, *args, mutate=mutate, extra_hosts=extra_hosts)
    out = res.stdout + res.stderr
    assert res.returncode == rc, out
    assert "Traceback" not in out
    for needle in needles:
        assert needle.format(subnet=fleet.netns.subnet) in out
    if "--limit" in args and rc == 0:
        assert H2 not in res.stdout


def test_host_keys_through_the_cli(fleet, home, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    mutate = lambda d, _subnet: d["defaults"].update(known_hosts=str(empty))  # noqa: E731
    rejected = _apply(fleet, home, mutate=mutate)
    assert rejected.returncode == 1  # a trust failure on a reachable host, not an unreachable host (3)
    assert "host key not known" in rejected.stdout and "--accept-new-host-keys" in rejected.stdout
    assert not (home / "known_hosts").exists()
    accepted = _apply(fleet, home, "--accept-new-host-keys", mutate=mutate)
    assert accepted.returncode == 0, accepted.stdout
    lines = (home / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(h.address for h in fleet.netns.hosts[:2])
    assert _apply(fleet, home, mutate=mutate).returncode == 0  # now known: no flag needed
