"""Photos first on a shared CPU host: u2netp's queue levels and the video work's CPU priority
(docs/reliability.md, "Photos first"; make load measures the latency it buys)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from conftest import Stack

from devstack.processes import Service
from gateway.triton import INTERACTIVE_PRIORITY
from triton_models.cpu_priority import lower_cpu_priority

VIDEO_MODELS = ("rvm", "foreground", "keypoint_mask")


def _nice_values(pid: int) -> set[int]:
    """The nice value of every thread of `pid` (proc(5): field 19 of /proc/PID/task/TID/stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values.add(int(fields[16]))
    return values


def _policies(pid: int) -> set[int]:
    """The scheduling policy of every thread of `pid` (os.SCHED_OTHER, os.SCHED_IDLE...)."""
    return {os.sched_getscheduler(int(task.name)) for task in Path(f"/proc/{pid}/task").iterdir()}


def _stubs(triton: Service) -> dict[str, int]:
    """model name -> pid of its Python-backend stub, for this test's tritonserver only (other
    tritonservers may run on the machine)."""
    assert triton.proc is not None
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) != triton.proc.pid or not argv[0].endswith(b"triton_python_backend_stub"):
            continue
        found[Path(argv[1].decode()).parent.parent.name] = int(proc.name)
    return found


def test_video_work_runs_below_the_photo_model(triton: Service, stack: Stack) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)  # what the services inherit from this test run
    stubs = _stubs(triton)
    assert set(VIDEO_MODELS) | {"u2netp"} <= set(stubs), stubs
    for model in VIDEO_MODELS:
        assert _nice_values(stubs[model]) == {max(base, 19)}, (model, _nice_values(stubs[model]))
        assert _policies(stubs[model]) == {os.SCHED_IDLE}, model
    assert _nice_values(stubs["u2netp"]) == {base}
    assert _policies(stubs["u2netp"]) == {os.SCHED_OTHER}
    for worker in stack.workers:
        assert worker.proc is not None
        assert _nice_values(worker.proc.pid) == {max(base, stack.settings.worker_cpu_nice)}
        assert _policies(worker.proc.pid) == {os.SCHED_IDLE}
    assert stack.gateway.proc is not None and _nice_values(stack.gateway.proc.pid) == {base}
    assert _policies(stack.gateway.proc.pid) == {os.SCHED_OTHER}


async def test_a_photo_overtakes_queued_saliency_calls(triton_url: str) -> None:
    """Six calls at u2netp's default level queue behind the first; a photo's call sent after
    them at INTERACTIVE_PRIORITY runs next (without the levels it would finish last)."""
    client = grpcclient.InferenceServerClient(triton_url)
    rng = np.random.default_rng(0)
    finished: list[str] = []

    async def call(name: str, priority: int) -> None:
        item = grpcclient.InferInput("image", [240, 320, 3], "UINT8")
        item.set_data_from_numpy(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
        await client.infer("u2netp", [item], priority=priority)
        finished.append(name)

    try:
        queued = [asyncio.create_task(call(f"video-{i}", 0)) for i in range(6)]
        await asyncio.sleep(0.3)  # all six reach Triton's queue first
        started = time.monotonic()
        await call("photo", INTERACTIVE_PRIORITY)
        photo_s = time.monotonic() - started
        await asyncio.gather(*queued)
    finally:
        await client.close()
    assert finished.index("photo") <= 2, (finished, photo_s)


def test_cpu_sched_idle_takes_true_or_false_only() -> None:
    with pytest.raises(ValueError, match="cpu_sched_idle"):
        lower_cpu_priority({"parameters": {"cpu_sched_idle": {"string_value": "yes"}}})
