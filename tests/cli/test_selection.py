"""Selecting hosts and tasks the Ansible way, and per-command options (issue 15).

Host patterns are checked as a table against a static inventory; the CLI cases use --list-* (which exit
before any connection), so nothing here touches a host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from provisioner.actions.selection import select_hosts
from provisioner.cli.common import parse_extra_vars
from provisioner.cli.main import EXAMPLES
from provisioner.errors import InputError
from provisioner.inventory.loader import load_inventory
from tests.cli.helpers import REPO
from tests.inventory.cli import kprov_forked as kprov  # the real entry point, forked: no start-up cost

HOSTS = ["cp1", "cp2", "cp3", "w1", "w2", "w10"]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sel") / "inv.yaml"
    doc = {
        "cluster": {
            "name": "sel",
            "kubernetes_version": "1.20.2",
            "cni": "bridge",
            "control_plane_endpoint": "10.0.0.1:6443",
        },
        "defaults": {"user": "root"},
        "hosts": [
            {"name": n, "address": f"10.0.0.{i + 1}", "roles": ["control_plane" if n.startswith("cp") else "worker"]}
            for i, n in enumerate(HOSTS)
        ],
        "groups": {"edge": {"hosts": ["w2", "w10"]}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


PATTERNS = {
    "all": HOSTS,
    "*": HOSTS,
    "worker": ["w1", "w2", "w10"],
    "w1": ["w1"],
    "cp1,w2": ["cp1", "w2"],
    "w2,cp1": ["cp1", "w2"],  # inventory order
    "w*": ["w1", "w2", "w10"],
    "w?": ["w1", "w2"],
    "cp[12]": ["cp1", "cp2"],  # a glob character class (not a group subscript)
    "control_plane[0]": ["cp1"],
    "control_plane[1:]": ["cp2", "cp3"],
    "control_plane[-1]": ["cp3"],
    "worker[:2]": ["w1", "w2"],
    "all,!w1": ["cp1", "cp2", "cp3", "w2", "w10"],
    "!control_plane": ["w1", "w2", "w10"],  # only exclusions: starts from all (Ansible)
    "worker,&edge": ["w2", "w10"],
    "worker,!edge": ["w1"],
    "~^w\\d$": ["w1", "w2"],
    "edge,cp1": ["cp1", "w2", "w10"],
}


@pytest.mark.parametrize("pattern,expected", PATTERNS.items(), ids=PATTERNS.keys())
def test_host_patterns(inventory: Path, pattern: str, expected: list[str]) -> None:
    assert select_hosts(load_inventory(inventory, resolve=False), pattern) == expected


@pytest.mark.parametrize("pattern", ["nope", "w9*", "all,!nope", "worker[7]", "~^x"])
def test_a_part_that_matches_nothing_is_bad_input(inventory: Path, pattern: str) -> None:
    with pytest.raises(InputError) as err:
        select_hosts(load_inventory(inventory, resolve=False), pattern)
    assert "cp1, cp2, cp3, w1, w2, w10" in (err.value.hint or "")


def test_limit_with_no_match_is_exit_2_with_the_host_list(inventory: Path) -> None:
    res = kprov("plan", "-i", str(inventory), "--limit", "web*")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [
        "error: --limit: pattern 'web*' matches no host or group",
        "hint: hosts: cp1, cp2, cp3, w1, w2, w10; groups: all, control_plane, edge, worker",
    ]
    excluded_all = kprov("plan", "-i", str(inventory), "--limit", "all,!all")
    assert excluded_all.returncode == 2 and "selects no host" in excluded_all.stderr


def _listing(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("play #"):
            key = line.rsplit(": ", 1)[0].split(" ", 2)[2]  # "ROLE (PATTERN)": play numbers follow site.yaml
            out[key] = []
        elif line.startswith("    "):
            out[key].append(line.strip())
    return out


def test_list_hosts_applies_play_patterns_and_limit(inventory: Path) -> None:
    res = kprov("plan", "-i", str(inventory), "--list-hosts", "--limit", "cp2,w*,!w10")
    assert res.returncode == 0, res.stderr
    plays = _listing(res.stdout)
    assert plays["preflight (all)"] == ["cp2", "w1", "w2"]
    assert plays["control_plane (control_plane[0])"] == []
    assert plays["join (control_plane[1:])"] == ["cp2"]
    assert plays["join (worker)"] == ["w1", "w2"]


def test_role_name_is_an_implicit_tag(inventory: Path) -> None:
    res = kprov("plan", "-i", str(inventory), "--list-tasks", "--tags", "containerd")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    tasks = [t for v in _listing(res.stdout).values() for t in v]
    assert tasks and all(t.startswith("containerd | ") and "containerd" in t.split("TAGS:")[1] for t in tasks)
    skipped = kprov("plan", "-i", str(inventory), "--list-tasks", "--skip-tags", "containerd")
    assert not any(t.startswith("containerd | ") for v in _listing(skipped.stdout).values() for t in v)


def test_list_tags(inventory: Path) -> None:
    res = kprov("apply", "-i", str(inventory), "containerd", "cni", "--list-tags")
    assert res.returncode == 0, res.stderr
    assert "containerd (all)    TAGS: [containerd]" in res.stdout
    assert res.stdout.splitlines()[-1].startswith("all tags: [cni, containerd")


def test_unknown_tag_is_a_warning_with_the_known_tags(inventory: Path) -> None:
    res = kprov("plan", "-i", str(inventory), "--list-hosts", "--tags", "containred")
    assert res.returncode == 0
    assert res.stderr.startswith("warning: --tags containred: no task has this tag; known tags: ")
    assert "containerd" in res.stderr and "the tag selection selects no task" in res.stderr


EXTRA = {
    "tag=1.10": {"tag": "1.10"},
    "pin=010": {"pin": "010"},
    "flag=true": {"flag": "true"},
    "empty=": {"empty": ""},
    "url=http://x:1/a=b": {"url": "http://x:1/a=b"},
    '{"a": 1, "b": [true]}': {"a": 1, "b": [True]},
    "{tag: 1.10}": {"tag": 1.1},
}


@pytest.mark.parametrize("item,expected", EXTRA.items(), ids=EXTRA.keys())
def test_extra_vars_key_value_is_a_string(item: str, expected: dict) -> None:
    assert parse_extra_vars((item,)) == expected


def test_extra_vars_from_a_file_are_typed(tmp_path: Path) -> None:
    f = tmp_path / "vars.yaml"
    f.write_text("port: 30080\npin: '010'\n")
    assert parse_extra_vars((f"@{f}", "tag=1.10")) == {"port": 30080, "pin": "010", "tag": "1.10"}


@pytest.mark.parametrize(
    "args",
    [
        ["smoke", "--tags", "x"],
        ["smoke", "--limit", "w1"],
        ["kubeconfig", "--tags", "x"],
        ["lab", "down", "--tags", "x"],
        # the day-two commands take only the task options they use: a --limit that upgrade or remove-node
        # would drop (they work on the whole cluster, or on --host) or a --list-* that would not list is an error
        ["upgrade", "--limit", "w1"],
        ["upgrade", "--list-hosts"],
        ["remove-node", "--host", "w1", "--limit", "w1"],
        ["remove-node", "--host", "w1", "--list-tasks"],
        # nor a task selection that would skip part of their own steps
        ["upgrade", "--skip-tags", "kubernetes"],
        ["upgrade", "--tags", "kubernetes"],
        ["remove-node", "--host", "w1", "--skip-tags", "reset"],
        ["certs", "check", "--tags", "x"],
        ["certs", "renew", "--list-hosts"],
        ["status", "--list-tasks"],
        ["status", "--diff"],
        ["etcd", "snapshot", "--limit", "cp1"],
        # nor the output options they would not honour
        ["certs", "check", "-e", "a=b"],
        ["etcd", "restore", "--from", "x.db", "--log-file", "events.jsonl"],
        ["status", "--log-format", "json"],
        ["smoke", "--log-file", "events.jsonl"],
    ],
    ids=" ".join,
)
def test_options_a_command_does_not_use_are_errors(inventory: Path, args: list[str]) -> None:
    res = kprov(*args, "-i", str(inventory)) if args[0] != "lab" else kprov(*args)
    assert res.returncode == 2 and "No such option" in res.stderr and "Traceback" not in res.stderr


def test_kprov_alone_prints_help() -> None:
    res = kprov()
    assert res.returncode == 0 and res.stdout.startswith("Usage: kprov") and "Commands:" in res.stdout


def test_inventory_from_the_environment(inventory: Path) -> None:
    res = kprov("plan", "--list-hosts", "--limit", "w1", env={"KPROV_INVENTORY": str(inventory)})
    assert res.returncode == 0, res.stderr
    assert _listing(res.stdout)["preflight (all)"] == ["w1"]
    forks = kprov("plan", "--list-hosts", "--forks", "0", env={"KPROV_INVENTORY": str(inventory)})
    assert forks.returncode == 2
    auto = kprov("plan", "--list-hosts", env={"KPROV_INVENTORY": str(inventory), "KPROV_PLAN_LIMIT": "cp1"})
    assert _listing(auto.stdout)["preflight (all)"] == ["cp1"]


def _command_paths() -> list[str]:
    """Every command and group of `kprov`, as the words that name it ("etcd restore")."""
    from provisioner.cli.main import cli

    def walk(cmd: click.Command, path: list[str]) -> Iterator[str]:
        if path:
            yield " ".join(path)
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(click.Context(cmd)):
                yield from walk(cmd.get_command(click.Context(cmd), name), [*path, name])  # type: ignore[arg-type]

    return list(walk(cli, []))


def test_every_command_has_examples() -> None:
    assert sorted(_command_paths()) == sorted(EXAMPLES)


@pytest.mark.parametrize("command", _command_paths())
def test_help_ends_with_examples(command: str) -> None:
    res = kprov(*command.split(), "--help")
    assert res.returncode == 0
    tail = res.stdout.rstrip().split("Examples:")[-1].strip().splitlines()
    assert 2 <= len(tail) <= 3 and all("kprov " in line for line in tail), tail


MISSING = "/nonexistent/inventory.yaml"


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "-i", MISSING],
        ["up", "-i", MISSING],
        ["apply", "-i", MISSING, "containerd"],
        ["reset", "-i", MISSING, "--yes"],
        ["status", "-i", MISSING],
        ["smoke", "-i", MISSING],
        ["kubeconfig", "-i", MISSING],
        ["add-node", "-i", MISSING, "--host", "w1"],
        ["bundle", "verify", "/nonexistent.tar"],
        ["bundle", "inspect", "/nonexistent.tar"],
        ["plan", "-i", "inventories/lab.yaml", "-e", "@/nonexistent.yaml"],
        ["upgrade", "-i", MISSING],
        ["remove-node", "-i", MISSING, "--host", "w1", "--yes"],
        ["certs", "check", "-i", MISSING],
        ["certs", "renew", "-i", MISSING],
        ["etcd", "snapshot", "-i", MISSING],
        ["etcd", "restore", "-i", "inventories/static-example.yaml", "--from", "/nonexistent.db", "--yes"],
        ["inventory", "import", "/nonexistent.ini"],
        ["ec2", "create", "-i", MISSING],
        ["ec2", "inventory", "-i", MISSING],
        ["ec2", "destroy", "-i", MISSING, "--yes"],
        ["ci-smoke", "-i", MISSING],
        ["vagrant", "inventory", "-i", MISSING],
    ],
    ids=lambda a: " ".join(w for w in a[:3] if not w.startswith(("-", "/", "inventories"))),
)
def test_missing_file_is_exit_2(args: list[str]) -> None:
    res = kprov(*args, cwd=REPO)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert "/nonexistent" in res.stderr.splitlines()[0], res.stderr  # the missing file is named: it is the cause


@pytest.mark.parametrize(
    "words,expected",
    [
        ("kprov plan -i {inv} --limit w", ["w1", "w2", "w10", "worker"]),
        ("kprov plan -i {inv} --limit cp1,!c", ["cp1,!cp1", "cp1,!cp2", "cp1,!cp3", "cp1,!control_plane"]),
        ("kprov apply -i {inv} cont", ["containerd", "control_plane"]),
    ],
)
def test_shell_completion_of_hosts_and_roles(inventory: Path, words: str, expected: list[str]) -> None:
    line = words.format(inv=inventory)
    env = {"_KPROV_COMPLETE": "bash_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(line.split()) - 1)}
    res = kprov(env=env)
    assert res.returncode == 0, res.stderr
    assert [w.split(",", 1)[1] for w in res.stdout.splitlines()] == expected


def test_add_node_listing_says_what_runs_on_the_seed() -> None:
    """add-node's bundle plays also run on the first control plane, limited to the seed's tasks: the listing says
    so beside that host, and under the task list."""
    res = kprov(
        "add-node", "-i", "inventories/static-example.yaml", "--host", "w1", "--list-hosts", "--list-tasks", cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.count("cp1    (only the tasks tagged bundle-seed)") == 2, out
    assert out.count("on cp1: only the tasks tagged bundle-seed") == 2, out
    plays = out.split("play #")
    limited = {p.split()[1] for p in plays if "bundle-seed)" in p}
    assert limited == {"bundle", "kubernetes"}, out
