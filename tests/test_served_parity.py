"""docker/served_parity.py, the Triton image's start-time parity check, run against the real CPU
tritonserver of the suite: the CPU route must pass it (the GPU route is what it is for)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from common.settings import REPO_ROOT


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("served_parity", REPO_ROOT / "docker" / "served_parity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_served_parity_passes_on_the_cpu_server(
    triton_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "parity-ok"
    argv = ["--url", triton_url, "--repository", str(REPO_ROOT / "model_repository"), "--marker", str(marker)]
    assert _script().main(argv) == 0, capsys.readouterr().out
    assert marker.read_text() == "ok\n"
    assert capsys.readouterr().out.count(" ok\n") == 9  # u2netp + 4 rvm frames x (alpha, foreground)


def test_served_parity_refuses_a_different_matte() -> None:
    script = _script()
    want = np.zeros((64, 64), np.uint8)
    want[16:48, 16:48] = 255
    got = want.copy()
    got[16:48, 16:24] = 0  # a quarter of the subject lost
    ok, line = script.compare("alpha", got, want)
    assert not ok and "FAILED" in line
    assert script.compare("alpha", want, want)[0]
