"""docs/modules.md is generated from the modules (python -m provisioner.modules.docgen): it must not be stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from provisioner.modules.base import REGISTRY
from provisioner.modules.docgen import DOC, main, module_section, render


def test_the_committed_module_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/modules.md is stale: run `.venv/bin/python -m provisioner.modules.docgen` and commit it"
    )


def test_every_module_and_public_argument_is_documented():
    text = render()
    for name, module in REGISTRY.items():
        assert f"## `{name}`" in text
        assert (type(module).__doc__ or "").strip(), f"module {name} has no docstring"
        section = module_section(module)
        for key, p in module.params.items():  # engine-filled arguments stay out of the reference
            assert (f"| `{key}` |" in section) != p.internal, (name, key)


def test_check_mode_of_the_generator(tmp_path: Path):
    out = tmp_path / "modules.md"
    assert main(["--check", "-o", str(out)]) == 1  # missing: stale
    assert main(["-o", str(out)]) == 0 and out.read_text() == render()
    assert main(["--check", "-o", str(out)]) == 0
    res = subprocess.run([sys.executable, "-m", "provisioner.modules.docgen", "--check", "-o", str(out)])
    assert res.returncode == 0
