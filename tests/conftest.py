"""Shared pytest configuration. Fixture modules live in tests/fixtures/.

The default run is two streams side by side (pytest-xdist, `-n 2 --dist loadgroup` in pyproject.toml). Every test
that builds lab machines (marked `lab`/`e2e`, or using the lab fixtures) is in the group "lab", except the HA
module's, which are the group "lab-ha"; every other test is in the group "main". A group runs in order on one worker,
as a serial run would: the network-namespace sshd fleet in one process, each lab module's cluster in one. The
biggest groups start first ("main" on one worker, "lab" on the other); "lab-ha" follows "main" on its worker, so
after the first ~15 minutes two lab clusters (the HA one and another) are built side by side. Lab modules have their
own lab, cluster and node names, so workers share nothing but the machine. `-n 0` runs everything in one process.

Figures (a test's measured numbers for the CI log) go through `tests.e2e.labkit.figure`: they are printed in a
"figures" section at the end of the run, from every worker.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.netns",
    "tests.fixtures.lab",
]

#: the file every process of the run appends its figure lines to (set by the controller, inherited by workers)
FIGURES_ENV = "KPROV_TEST_FIGURES"
LAB_FIXTURES = {"lab_factory", "lab_nodes"}
#: lab modules that get a worker of their own once "main" is done (they share no lab fixture with the "lab" group)
LAB_HA = ("tests/ha/",)
_FIGURES = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller made the file (its name is in the environment it inherited)
    fd, path = tempfile.mkstemp(prefix="kprov-test-figures-", suffix=".txt")
    os.close(fd)
    os.environ[FIGURES_ENV] = path
    config.stash[_FIGURES] = Path(path)


def _is_lab(item: pytest.Item) -> bool:
    return bool(
        item.get_closest_marker("lab") or item.get_closest_marker("e2e") or LAB_FIXTURES & set(item.fixturenames)
    )


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        lab = _is_lab(item)
        if lab and ("netns_fleet" in item.fixturenames or item.get_closest_marker("netns")):
            # the fleet's hosts and locks have fixed names: a second fleet in the other worker would collide
            raise pytest.UsageError(f"{item.nodeid}: a lab test must not use the netns fleet (see tests/conftest.py)")
        group = "main"
        if lab:
            group = "lab-ha" if item.nodeid.startswith(LAB_HA) else "lab"
            if group == "lab-ha" and LAB_FIXTURES & set(item.fixturenames):
                # the session-scoped lab fixtures live in one worker: a second worker would build their labs again
                raise pytest.UsageError(f"{item.nodeid}: a lab-ha test must not use {sorted(LAB_FIXTURES)}")
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(trylast=True)  # after xdist's hook: the groups must be in the node ids it sends the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if "@" not in item.nodeid]
    if lost:
        # a silent fallback would run two lab clusters, or two netns fleets with the same names, at once
        raise pytest.UsageError(
            f"pytest-xdist did not apply the test groups ({lost[0]} has none): this pytest and pytest-xdist do not "
            "work together; use the versions pyproject.toml pins, or -n 0"
        )


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    path = config.stash.get(_FIGURES, None)
    if path is None:
        return
    lines = path.read_text().splitlines() if path.exists() else []
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_FIGURES, None)
    if path is not None:
        path.unlink(missing_ok=True)
