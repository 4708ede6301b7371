"""`kprov kubeconfig` follows kubectl's rules for writing kubeconfig files (issue 15).

Every case runs the real CLI with its own HOME and KUBECONFIG and checks the files it leaves behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from tests.cli.helpers import REPO
from tests.inventory.cli import kprov_forked as kprov  # the real entry point, forked: no start-up cost

INVENTORY = str(REPO / "inventories" / "static-example.yaml")  # cluster "demo"
CTX = "kprov-demo"
ADMIN = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {"name": "kubernetes", "cluster": {"server": "https://10.0.0.10:6443", "certificate-authority-data": "Q0E="}}
    ],
    "users": [{"name": "kubernetes-admin", "user": {"token": "t0k3n"}}],
    "contexts": [
        {"name": "kubernetes-admin@kubernetes", "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}}
    ],
    "current-context": "kubernetes-admin@kubernetes",
}


def other(current: str | None = "other") -> dict:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "other", "cluster": {"server": "https://192.0.2.1"}}],
        "users": [{"name": "other", "user": {}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
    }
    if current:
        doc["current-context"] = current
    return doc


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "kprov-demo.conf").write_text(yaml.safe_dump(ADMIN))
    return tmp_path


def run(home: Path, *args: str, kubeconfig: list[str] | None = None):
    env = {"HOME": str(home)}
    env["KUBECONFIG"] = os.pathsep.join(str(home / f) for f in kubeconfig) if kubeconfig is not None else ""
    return kprov("kubeconfig", "-i", INVENTORY, *args, env=env)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def contexts(doc: dict) -> list[str]:
    return [c["name"] for c in doc.get("contexts") or []]


# files: {name: doc} present before; KUBECONFIG list (None: unset -> ~/.kube/config)
# expect: the file that gets the entries, the file that holds current-context afterwards and its value
CASES = {
    "no KUBECONFIG: ~/.kube/config created, only context becomes current": (
        {},
        None,
        [],
        ".kube/config",
        ".kube/config",
        CTX,
    ),
    "first existing file of KUBECONFIG, missing ones are not created": (
        {"b": other()},
        ["a", "b", "c"],
        [],
        "b",
        "b",
        "other",
    ),
    "none exists: the last file of KUBECONFIG is created (kubectl)": ({}, ["a", "b"], [], "b", "b", CTX),
    "current context set: unchanged without --use": (
        {".kube/config": other()},
        None,
        [],
        ".kube/config",
        ".kube/config",
        "other",
    ),
    "--use switches the current context": (
        {".kube/config": other()},
        None,
        ["--use"],
        ".kube/config",
        ".kube/config",
        CTX,
    ),
    "current context set in a later file counts: no switch": (
        {"a": other(current=None), "b": other()},
        ["a", "b"],
        [],
        "a",
        "b",
        "other",
    ),
    "--use writes current-context where it is set": (
        {"a": other(current=None), "b": other()},
        ["a", "b"],
        ["--use"],
        "a",
        "b",
        CTX,
    ),
    "no current context anywhere: ours becomes current": ({"a": other(current=None)}, ["a"], [], "a", "a", CTX),
}


@pytest.mark.parametrize("files,kubeconfig,flags,target,holder,current", CASES.values(), ids=CASES.keys())
def test_merge_follows_kubectl(
    home: Path, files: dict, kubeconfig: list[str] | None, flags: list[str], target: str, holder: str, current: str
) -> None:
    for name, doc in files.items():
        (home / name).write_text(yaml.safe_dump(doc))
    res = run(home, "--merge", *flags, kubeconfig=kubeconfig)
    assert res.returncode == 0, res.stderr
    # stdout stays usable in $(...): only the kubeconfig path; the status goes to stderr
    assert res.stdout == f"{home / '.kube' / 'kprov-demo.conf'}\n"
    assert f"merged context {CTX} into {home / target}" in res.stderr
    assert load(home / target)["clusters"][-1]["cluster"]["server"] == "https://10.0.0.10:6443"
    assert CTX in contexts(load(home / target))
    assert load(home / holder)["current-context"] == current
    listed = kubeconfig or [".kube/config"]
    for name in listed:
        if name != target:
            assert CTX not in contexts(load(home / name)), name
            if name not in files and name != holder:
                assert not (home / name).exists(), f"{name} was created"
    # other entries are kept, and a second merge changes nothing
    for name, doc in files.items():
        assert set(contexts(doc)) <= set(contexts(load(home / name)))
    before = {n: (home / n).read_text() for n in listed if (home / n).exists()}
    again = run(home, "--merge", *flags, kubeconfig=kubeconfig)
    assert again.returncode == 0 and "already up to date" in again.stderr
    assert before == {n: (home / n).read_text() for n in listed if (home / n).exists()}


def test_existing_entry_is_updated_in_the_file_that_defines_it(home: Path) -> None:
    (home / "a").write_text(yaml.safe_dump(other()))
    b = other()
    b["clusters"].append({"name": CTX, "cluster": {"server": "https://old:6443"}})
    b["contexts"].append({"name": CTX, "context": {"cluster": CTX, "user": f"{CTX}-admin"}})
    (home / "b").write_text(yaml.safe_dump(b))
    assert run(home, "--merge", kubeconfig=["a", "b"]).returncode == 0
    assert CTX not in contexts(load(home / "a"))
    servers = [c["cluster"]["server"] for c in load(home / "b")["clusters"] if c["name"] == CTX]
    assert servers == ["https://10.0.0.10:6443"]


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_merge_writes_through_symlinks_and_keeps_the_mode(home: Path, mode: int) -> None:
    real = home / "dotfiles" / "kube.yaml"
    real.parent.mkdir()
    real.write_text("# my clusters, managed by hand\n# (second comment line)\n" + yaml.safe_dump(other()))
    real.chmod(mode)
    (home / ".kube" / "config").symlink_to("../dotfiles/kube.yaml")
    res = run(home, "--merge")
    assert res.returncode == 0, res.stderr
    link = home / ".kube" / "config"
    assert link.is_symlink() and os.readlink(link) == "../dotfiles/kube.yaml"
    assert CTX in contexts(load(real))
    assert stat.S_IMODE(real.stat().st_mode) == mode
    assert real.read_text().startswith("# my clusters, managed by hand\n# (second comment line)\n")
    # a file others can read gets the admin credentials only with a warning
    assert ("readable by other users" in res.stderr) == bool(mode & 0o077)


def test_new_file_is_private(home: Path) -> None:
    assert run(home, "--merge").returncode == 0
    assert stat.S_IMODE((home / ".kube" / "config").stat().st_mode) == 0o600


def test_print_writes_the_kubeconfig_itself_on_stdout(home: Path) -> None:
    res = run(home, "--print")
    assert res.returncode == 0 and res.stderr == ""
    assert yaml.safe_load(res.stdout) == ADMIN
    merged = run(home, "--merge", "--print")
    assert yaml.safe_load(merged.stdout) == ADMIN and "merged context" in merged.stderr


@pytest.mark.parametrize("was_current", [False, True])
def test_remove_takes_out_only_our_entries(home: Path, was_current: bool) -> None:
    (home / ".kube" / "config").write_text(yaml.safe_dump(other(current=None if was_current else "other")))
    assert run(home, "--merge").returncode == 0
    res = run(home, "--remove")
    assert res.returncode == 0, res.stderr
    doc = load(home / ".kube" / "config")
    assert contexts(doc) == ["other"] and [c["name"] for c in doc["clusters"]] == ["other"]
    assert [u["name"] for u in doc["users"]] == ["other"]
    assert (doc.get("current-context") or None) == (None if was_current else "other")
    assert ("none is set now" in res.stderr) == was_current
    again = run(home, "--remove")
    assert again.returncode == 0 and "nothing to remove" in again.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--use"], "--use needs --merge"),
        (["--merge", "--remove"], "exclude each other"),
    ],
)
def test_bad_flag_combinations(home: Path, args: list[str], message: str) -> None:
    res = run(home, *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_unreadable_kubeconfig_is_bad_input(home: Path) -> None:
    (home / ".kube" / "config").write_text("clusters: [unclosed\n")
    res = run(home, "--merge")
    assert res.returncode == 2 and res.stderr.startswith("error: cannot read kubeconfig"), res.stderr
