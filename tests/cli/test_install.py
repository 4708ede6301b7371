"""kprov installed from its wheel, outside the checkout, finds its roles and templates (issue 15, Install).

The wheel is built from a copy of the checkout and installed into a fresh venv; every command runs from a
directory that is not the repository. On the shared lab (`lab_nodes`), `kprov plan` with the inventory that
`kprov lab inventory` prints is a full plan: every play of roles/site.yaml on every host, nothing failed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from provisioner.lab import inventory as lab_inventory
from tests.cli.helpers import REPO, build_wheel, fresh_venv, run


@dataclass(frozen=True)
class Installed:
    bin: Path
    #: a working directory outside the checkout
    cwd: Path

    def kprov(self, *argv: str, timeout: float = 600):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return run([str(self.bin / "kprov"), *argv], cwd=self.cwd, env=env, timeout=timeout)

    @property
    def package(self) -> Path:
        out = run(
            [str(self.bin / "python"), "-c", "import provisioner, os; print(os.path.dirname(provisioner.__file__))"],
            cwd=self.cwd,
        )
        return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def _install(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Installed:
    work = tmp_path_factory.mktemp("install")
    cwd = work / "elsewhere"
    cwd.mkdir()
    inst = Installed(fresh_venv(work, wheel), cwd)
    assert REPO not in inst.package.parents, f"kprov imported from the checkout: {inst.package}"
    return inst


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Installed:
    return _install(tmp_path_factory, wheel)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.parametrize("name", ["roles", "templates"])
def test_wheel_ships_the_top_level_directory(installed: Installed, name: str) -> None:
    shipped = installed.package / "_data" / name
    assert _tree(shipped) == _tree(REPO / name)


def test_installed_kprov_lists_the_shipped_roles(installed: Installed) -> None:
    # an unknown role names the available ones: all roles of the checkout, found inside the package
    res = installed.kprov("apply", "-i", str(REPO / "inventories" / "static-example.yaml"), "no-such-role")
    assert res.returncode == 2, res.stderr
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks.yaml").is_file())
    assert f"available roles: {', '.join(roles)}" in res.stderr
    assert "Traceback" not in res.stderr


def test_install_without_plays_fails_loudly(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> None:
    broken = _install(tmp_path_factory, wheel)
    shutil.rmtree(broken.package / "_data")
    res = broken.kprov("plan", "-i", str(REPO / "inventories" / "static-example.yaml"))
    assert res.returncode == 2
    assert res.stderr.startswith("error: no plays:"), res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


# ---- on the shared lab --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_inventory_path(installed: Installed, lab_nodes) -> Iterator[Path]:
    if not Path(lab_inventory.bundle_path()).is_file():
        pytest.skip(f"needs the lab bundle {lab_inventory.bundle_path()} (scripts/setup builds it)")
    res = installed.kprov("lab", "inventory", "--name", lab_nodes.lab.name)
    assert res.returncode == 0, res.stderr
    yield Path(res.stdout.splitlines()[-1])


@pytest.mark.lab
def test_lab_inventory_carries_the_lab_workarounds(lab_inventory_path: Path) -> None:
    doc = yaml.safe_load(lab_inventory_path.read_text())
    checked_in = yaml.safe_load((REPO / "inventories" / "lab.yaml").read_text())["cluster"]
    for key in ("kubernetes_version", "pod_cidr", "service_cidr", "cni", "kubernetes_source", "vars"):
        assert doc["cluster"][key] == checked_in[key], key
    assert doc["cluster"]["bundle"] == lab_inventory.bundle_path()


@pytest.mark.lab
def test_installed_kprov_plans_the_lab_from_outside_the_checkout(
    installed: Installed, lab_nodes, lab_inventory_path: Path
) -> None:
    res = installed.kprov("plan", "-i", str(lab_inventory_path), "--log-format", "json")
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    events = [e for e in lines if "task" in e]
    recap = {e["recap"]: e for e in lines if "recap" in e}
    hosts = {n.name for n in lab_nodes.nodes}
    # a full plan: every play of site.yaml ran on its hosts, every host has changes to make, none failed
    site_roles = {p["role"] for p in yaml.safe_load((REPO / "roles" / "site.yaml").read_text())}
    assert {e["role"] for e in events} == site_roles
    assert set(recap) == hosts
    assert all(r["changed"] > 0 and not r["failed"] and not r["unreachable"] for r in recap.values()), recap
    assert not [e for e in events if e["status"] == "failed"]


def test_wheel_metadata(wheel: Path) -> None:
    """pyproject's [project] metadata reaches the wheel: license (with its text), classifiers, URLs, readme,
    and the console script."""
    import zipfile
    from email.parser import Parser

    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(whl.read(meta_name).decode())
        (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        license_text = whl.read(license_name).decode()
        entry_points = whl.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "Apache License" in license_text and "Version 2.0" in license_text
    classifiers = meta.get_all("Classifier")
    assert "Environment :: Console" in classifiers and "Operating System :: POSIX :: Linux" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Repository", "Issues"} <= set(urls)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().startswith((REPO / "README.md").read_text().splitlines()[0])
    assert "kprov = provisioner.cli.main:main" in entry_points


def test_github_workflow_installs_kprov_from_its_wheel() -> None:
    """CI's workflow installs as users do: a built wheel, never the checkout (editable or `pip install .`)."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "smoke.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    installs = [line.strip() for run in runs for line in run.splitlines() if "pip install" in line]
    assert any(line.endswith("dist/kprov-*.whl") for line in installs), installs
    assert not any(" -e " in f" {line} " or line.endswith((" .", " ./")) for line in installs), installs
