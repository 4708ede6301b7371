"""Build hook: ship the top-level roles/ and templates/ inside the package as provisioner/_data/.

The repository keeps roles/ and templates/ at the top level (the source of truth, nothing duplicated in
git); a wheel needs them inside the package so that an installed kprov finds them with importlib.resources
(provisioner/engine/roles.py). All other metadata lives in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DATA_DIRS = ("roles", "templates")


class build_py_with_data(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's roles/ and templates/ directly
        for name in DATA_DIRS:
            src = HERE / name
            if not (src / "").is_dir():
                raise SystemExit(f"error: {src} is missing: cannot build kprov without its {name}")
            dst = Path(self.build_lib) / "provisioner" / "_data" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": build_py_with_data})
