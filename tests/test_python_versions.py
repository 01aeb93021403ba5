"""The project runs on Python 3.10 (the NGC tritonserver 24.10 image) and 3.11: no standard-library
name newer than 3.10 outside common/compat.py's version switch. vermin knows which version added
each module, member and syntax; ruff (target-version py310 in pyproject.toml) checks the syntax
too. A real 3.10 install and import of every module: `make check-py310` (docs/gpu.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from common.settings import REPO_ROOT

SOURCES = [
    "common",
    "devstack",
    "gateway",
    "worker",
    "export",
    "triton_models",
    "benchmarks",
    "examples",
    "tests",
]


def test_no_standard_library_name_newer_than_3_10() -> None:
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("vermin")),
            "-t=3.10-",
            "--violations",
            "--no-tips",
            "--eval-annotations",
            *SOURCES,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_both_packages_admit_3_10() -> None:
    for path in (REPO_ROOT / "pyproject.toml", REPO_ROOT / "triton_models" / "pyproject.toml"):
        assert re.search(r'^requires-python = ">=3\.10,', path.read_text(), re.M), path
