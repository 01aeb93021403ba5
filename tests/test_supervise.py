"""`make run` outlives a crashed tritonserver: the launcher starts it again (devstack.stack.supervise)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import IMAGES, require_models

from common.settings import REPO_ROOT
from devstack.processes import http_ok, running
from devstack.stack import private_settings, stack_services, supervise


def _group_members(pgid: int) -> list[int]:
    members = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getpgid(int(proc.name)) == pgid:
                    members.append(int(proc.name))
            except ProcessLookupError:
                continue
    return members


def test_a_crashed_tritonserver_is_started_again(tmp_path: Path) -> None:
    require_models(REPO_ROOT / "model_repository")
    settings = private_settings(tmp_path / "data")
    services = stack_services(settings, workers=1, env={"API_TOKENS": "t"})
    stop = {"flag": False}
    outcome: list[int] = []
    with running(services) as started:
        watcher = threading.Thread(target=lambda: outcome.append(supervise(started, stop, 0.2)))
        watcher.start()
        try:
            triton = next(s for s in started if s.name == "tritonserver")
            assert triton.proc is not None
            old = triton.proc.pid
            assert len(_group_members(old)) > 1  # tritonserver and its model processes
            os.kill(old, signal.SIGSEGV)  # what the Python backend's crash ends in
            ready = f"{settings.base_url}/readyz"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and (triton.proc.pid == old or not http_ok(ready)):
                time.sleep(0.5)
            assert triton.proc.pid != old and http_ok(ready), "the stack did not come back"
            assert _group_members(old) == []  # no model process of the crashed server left
            photo = next(iter(sorted(IMAGES.rglob("*.jpg")))).read_bytes()
            answer = requests.post(
                f"{settings.base_url}/image/matte/v1",
                files={"file": ("p.jpg", photo, "image/jpeg")},
                headers={"api_token": "t"},
                timeout=120,
            )
            assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
        finally:
            stop["flag"] = True
            watcher.join(30)
    if watcher.is_alive():
        pytest.fail("supervise did not return after the stop flag")
    assert outcome == [0]
