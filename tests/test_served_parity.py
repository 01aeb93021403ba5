"""docker/served_parity.py, the Triton image's start-time parity check, and docker/triton-start.sh,
its entry point, run against a real CPU tritonserver: the CPU route must pass the check (the GPU
route is what it is for)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from common.settings import REPO_ROOT, Settings
from devstack.processes import free_port
from devstack.tritonserver import triton_service


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


def test_start_script_becomes_healthy_and_drains_on_sigterm(tmp_path: Path) -> None:
    """docker/triton-start.sh as the image runs it, with the dev tritonserver: the parity marker
    appears once the check passed; SIGTERM stops tritonserver and the script, nothing left over."""
    settings = Settings(
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        model_repository=REPO_ROOT / "model_repository",
        data_dir=tmp_path,
    )
    service = triton_service(settings, tmp_path / "tritonserver.log", tmp_path / "backends")
    home = tmp_path / "home"
    home.mkdir()
    (home / "served_parity.py").symlink_to(REPO_ROOT / "docker" / "served_parity.py")
    (home / "model_repository").symlink_to(REPO_ROOT / "model_repository")
    marker = tmp_path / "parity-ok"
    env = {
        **os.environ,
        **service.env,
        "PATH": f"{Path(service.argv[0]).parent}:{service.env['PATH']}",
        "MATTING_HOME": str(home),
        "TRITON_GRPC_URL": settings.triton_grpc_url,
        "SERVED_PARITY_MARKER": str(marker),
    }
    argv = ["bash", str(REPO_ROOT / "docker" / "triton-start.sh"), *service.argv[1:]]
    # The script does not restart a tritonserver whose start wedges (devstack does after
    # UNREADY_RESTART_S; seen here once): the test gives it a second start, as an orchestrator would.
    for attempt in (1, 2):
        log = tmp_path / f"start-{attempt}.log"  # a file, not a pipe nobody reads while it runs
        with log.open("wb") as out:
            script = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while not marker.exists() and script.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if marker.exists():
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
        script.wait(timeout=30)
        output = log.read_text(errors="replace")
        if service.release is not None:
            service.release()  # the killed server's shared-memory regions
        print(f"start {attempt}: no parity marker after 120 s; the script's last output:\n{output[-6000:]}")
    else:
        pytest.fail("no parity marker after two starts (their output is printed above)")
    try:
        assert marker.read_text() == "ok\n"
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=60) == 143
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):  # tritonserver drained and gone with it
            os.killpg(script.pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
        script.wait(timeout=30)
