"""`make run` outlives a crashed tritonserver: the launcher starts it again (devstack.stack.supervise),
and nothing of the crashed one is left: no model process, no shared-memory region."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import IMAGES, require_models

from common.settings import REPO_ROOT
from devstack.processes import Service, http_ok, running
from devstack.stack import RESTARTS_ALLOWED, private_settings, stack_services, supervise
from devstack.tritonserver import SHM_DIR


def _count_starts(svc: Service) -> list[int]:
    """The pids of `svc`'s starts from now on, in order (the list grows as it is restarted)."""
    starts: list[int] = []
    original_start = svc.start

    def counted_start() -> None:
        original_start()
        assert svc.proc is not None
        starts.append(svc.proc.pid)

    svc.start = counted_start  # type: ignore[method-assign]
    return starts


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
            prefix = next(a for a in triton.argv if "shm-region-prefix-name=" in a).rsplit("=", 1)[1]
            regions = {p.name for p in SHM_DIR.glob(f"{prefix}*")}
            assert regions, "the server's shared-memory regions carry its own prefix"
            os.kill(old, signal.SIGSEGV)  # what the Python backend's crash ends in
            ready = f"{settings.base_url}/readyz"
            # Within pytest's 300 s: room for one restart that does not come back (120 s) and a second.
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and (triton.proc.pid == old or not http_ok(ready)):
                time.sleep(0.5)
            came_back = triton.proc.pid != old and http_ok(ready)
            assert came_back, f"the stack did not come back:\n{triton.tail(60)}"
            assert _group_members(old) == []  # no model process of the crashed server left
            assert not regions & {p.name for p in SHM_DIR.glob(f"{prefix}*")}  # nor its shared memory
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


def test_a_restart_that_never_becomes_ready_is_killed_and_retried(tmp_path: Path) -> None:
    """A wedged restart does not hold the supervisor forever: each is killed after its readiness
    time and counts as one more exit, until the service has used its restarts and the stack stops."""
    never_ready = [sys.executable, "-c", "import time; time.sleep(600)"]
    svc = Service("wedged", never_ready, lambda: False, tmp_path / "w.log")
    starts = _count_starts(svc)
    svc.start()
    try:
        svc.proc.kill()  # type: ignore[union-attr]
        began = time.monotonic()
        assert supervise([svc], {"flag": False}, poll_s=0.05, restart_ready_s=0.5) == 1
        assert time.monotonic() - began < 30
        assert len(starts) == 1 + RESTARTS_ALLOWED
        assert not any(Path(f"/proc/{pid}").exists() and _group_members(pid) for pid in starts)
    finally:
        svc.stop(timeout_s=1, sig=signal.SIGKILL)


def test_a_start_that_is_not_ready_in_time_is_started_again(tmp_path: Path) -> None:
    """Service.restart_unready_after_s (tritonserver's wedged model load): the first start never
    becomes ready, is killed with its group and its leftovers released, and the second is waited
    for within the same budget."""
    released: list[int] = []
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    svc = Service(
        "wedged-once",
        sleeper,
        lambda: len(starts) >= 2,
        tmp_path / "w.log",
        release=lambda: released.append(len(starts)),
        restart_unready_after_s=1.0,
    )
    starts = _count_starts(svc)
    svc.start()
    try:
        began = time.monotonic()
        svc.wait_ready(10)
        assert 1.0 < time.monotonic() - began < 5
        assert len(starts) == 2 and released == [1]
        assert not _group_members(starts[0]) and svc.alive()
    finally:
        svc.stop(timeout_s=1, sig=signal.SIGKILL)
