"""`kprov lab` commands as a user sees them (issue 15, Guard rails)."""

from __future__ import annotations

import os

import pytest

from tests.cli.helpers import kprov
from tests.fixtures.lab import require_lab

TAG = os.environ.get("KPROV_TEST_TAG", "")


@pytest.mark.lab
def test_lab_down_of_a_missing_lab_says_nothing_to_remove() -> None:
    require_lab()
    name = f"kpz{TAG}"[:8]
    res = kprov("lab", "down", "--name", name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"lab {name} does not exist: nothing to remove"
    # a second time: the same (nothing was created by the first)
    assert kprov("lab", "down", "--name", name).stdout == res.stdout
