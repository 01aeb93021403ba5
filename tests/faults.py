"""A private stack that fault tests may break: its own Redis, tritonserver, gateway and 2 workers.

The session stack (conftest.py) is shared by every module, so nothing there may be killed. This one
lives under a module's temp dir, listens on free loopback ports and is started with the same
devstack functions `make run` uses. Its data dir (results, uploads, temp files) sits on a
small tmpfs when the process may mount one (root), so a test can fill the disk for real; Redis
data, logs and Triton backends stay outside it so a full data disk breaks only what it would in
production. Triton loads only what the video jobs need (`foreground`, `rvm`, `u2netp`), so
restarts stay quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

from common.settings import Settings
from devstack.app_services import gateway_service, worker_service
from devstack.processes import Service
from devstack.redis_server import redis_service
from devstack.stack import private_settings
from devstack.tritonserver import triton_service

FAULT_TOKEN = "fault-token-gamma"
TERMINAL = ("completed", "failed")


def mount_tmpfs(path: Path, size_mb: int) -> bool:
    """True when `path` is now a tmpfs of `size_mb` (needs root); False leaves a plain dir."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@dataclass
class PrivateStack:
    root: Path
    settings: Settings
    env: dict[str, str]
    redis: Service
    triton: Service
    gateway: Service
    workers: list[Service] = field(default_factory=list)
    tmpfs: bool = False
    token: str = FAULT_TOKEN

    @property
    def url(self) -> str:
        return self.settings.base_url

    @property
    def headers(self) -> dict[str, str]:
        return {"api_token": self.token}

    def _worker(self, index: int) -> Service:
        return worker_service(self.settings, index, self.root / "logs" / f"worker-{index}.log", self.env)

    def start_worker(self, index: int, timeout_s: float = 60) -> Service:
        svc = self._worker(index)
        if index < len(self.workers):
            self.workers[index] = svc
        else:
            self.workers.append(svc)
        svc.start()
        svc.wait_ready(timeout_s)
        return svc

    def restart(self, svc: Service, sig: int, pause_s: float = 0.0, timeout_s: float = 240) -> None:
        """Kill with `sig` (a real signal to the process group), wait, start the same argv again."""
        svc.stop(timeout_s=30, sig=sig)
        time.sleep(pause_s)
        svc.start()
        svc.wait_ready(timeout_s)

    def worker_running(self, job_id: str) -> int | None:
        """Index of the worker whose log shows it started `job_id` (arq logs every start)."""
        for index, svc in enumerate(self.workers):
            with contextlib.suppress(OSError):
                if job_id in svc.log_path.read_text(encoding="utf-8", errors="replace"):
                    return index
        return None

    def stop(self) -> None:
        for svc in [*reversed(self.workers), self.gateway, self.triton, self.redis]:
            svc.stop(timeout_s=20)
        if self.tmpfs:
            unmount(self.settings.data_dir)


VIDEO_MODELS = ("foreground", "rvm", "u2netp")


def _video_models_only(svc: Service) -> Service:
    """The launcher's tritonserver with only the video models loaded (whatever model control it chose)."""
    svc.argv = [a for a in svc.argv if not a.startswith(("--load-model", "--model-control-mode"))]
    svc.argv += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in VIDEO_MODELS)]
    return svc


def start_private_stack(root: Path, workers: int = 2, **env_overrides: str) -> PrivateStack:
    data_dir = root / "data"
    tmpfs = mount_tmpfs(data_dir, 96)
    settings = private_settings(data_dir)
    redis_port = urlparse(settings.redis_url).port
    assert redis_port is not None
    env = {
        "API_TOKENS": FAULT_TOKEN,
        "ALLOW_LOOPBACK_URLS": "true",
        "RATE_LIMIT_PER_MINUTE": "0",
        "JOB_LEASE_S": "4",  # a SIGKILLed worker's job is re-run within seconds, not a minute
        "TRITON_TIMEOUT_S": "15",
        "DOWNLOAD_TIMEOUT_S": "20",
        **env_overrides,
    }
    logs = root / "logs"
    stack = PrivateStack(
        root=root,
        settings=settings,
        env=env,
        redis=redis_service(redis_port, root / "redis"),
        triton=_video_models_only(triton_service(settings, logs / "tritonserver.log", root / "backends")),
        gateway=gateway_service(settings, logs / "gateway.log", env),
        tmpfs=tmpfs,
    )
    try:
        for svc, timeout in ((stack.redis, 30), (stack.triton, 240), (stack.gateway, 60)):
            svc.start()
            svc.wait_ready(timeout)
        for index in range(workers):
            stack.start_worker(index)
    except BaseException:
        stack.stop()
        raise
    return stack


# --- client helpers shared by the reliability tests ---------------------------------------------------


async def submit_mask(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], video_url: str, preset: str = "mkv_h264"
) -> str:
    # RVM alone: these tests are about processes dying, and `auto` (three networks a frame) would
    # stretch a mid-job kill past its time bound on a loaded two-core machine.
    body = {"video": video_url, "output_container_and_codec": preset, "model": "rvm"}
    async with http.post(f"{url}/foreground_mask", json=body, headers=headers) as r:
        payload = await r.json()
        assert r.status == 202, payload
    return str(payload["request_id"])


async def status_of(http: aiohttp.ClientSession, url: str, headers: dict[str, str], job_id: str) -> Any:
    async with http.get(f"{url}/status/{job_id}", headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def wait_status(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    job_id: str,
    want: tuple[str, ...] = TERMINAL,
    timeout_s: float = 180,
    min_frame: int = 0,
) -> Any:
    """Poll /status until the job is in one of `want` (and past `min_frame`), or fail the test."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        body = await status_of(http, url, headers, job_id)
        if body["status"] in want and (body.get("current_frame") or 0) >= min_frame:
            return body
        if body["status"] in TERMINAL and body["status"] not in want:
            raise AssertionError(f"job {job_id} ended as {body['status']}: {body}")
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} not {want} after {timeout_s}s; last status: {body}")
