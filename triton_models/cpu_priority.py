"""Video models yield the CPU to interactive ones on a shared CPU host.

A photo request waits for a person; a video job is throughput work that nobody watches frame
by frame. On a CPU host every Python-backend model instance is its own stub process inside
tritonserver, so the Linux scheduler can be told which to prefer: the video models' configs
(rvm, foreground, keypoint_mask) carry the parameter `cpu_nice` (19) and their stubs lower their
own priority to it; `u2netp`, which the photo endpoints call, keeps the default 0. CFS shares a
contended core by weight (kernel/sched/core.c, sched_prio_to_weight: nice 0 = 1024, nice 5 =
335, nice 19 = 15), so while a photo runs the video threads wait, and they get every cycle the
photo path leaves: between photos (the gateway admits one at a time, and decodes and encodes it
outside the model) and whenever none is in flight. Video jobs slow down under a stream of photos,
they do not stop. Nice 5 was tried first: a video job runs several threads per core (the
tracker, its saliency graph, rvm, the worker's codec), and at 335 each they still took half of
a core from the photo (accepted photos at 2.4x their idle p50 under load, 1.5x at nice 19:
docs/reliability.md, "Photos first"). A thread waking up is scheduled within milliseconds at
any nice value (CFS places it near the queue's minimum virtual runtime), so the stubs' 300 ms
health beat is not delayed by it.

Nice 19 still leaves each video thread a weight of 15, and the kernel lets a running thread finish
part of its slice before a waking one takes the core; a photo's inference runs two threads that
meet at every operator, so each such wait stalls both. `cpu_sched_idle` (true in the CPU configs;
`WORKER_CPU_SCHED_IDLE` for the workers) also moves the video threads to the SCHED_IDLE policy
(sched(7)): weight 3, and a waking normal thread preempts them at once (kernel/sched/fair.c,
check_preempt_wakeup_fair: "Idle tasks are by definition preempted by non-idle tasks"). They keep
running whenever the photo path leaves a core free, so video jobs still finish under a stream of
photos; measured in docs/reliability.md, "Photos first".

Autogroups (sched(7)) do not get in the way: the stubs are children of one tritonserver, in one
session and one container.

GPU configs do not set it: there the work runs on the device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from triton_models.config import parameter


def lower_cpu_priority(config: Mapping[str, Any]) -> int:
    """Apply the model config's `cpu_nice` (0..19, default 0: unchanged) and `cpu_sched_idle`
    ("true"/"false", default false) to this stub process (see yield_cpu); returns the nice value.
    Raises ValueError for a nice value outside 0..19 or a flag that is not true/false."""
    nice = int(parameter(config, "cpu_nice", "0"))
    flag = parameter(config, "cpu_sched_idle", "false").strip().lower()
    if flag not in ("true", "false"):
        raise ValueError(f"cpu_sched_idle must be true or false, got {flag!r}")
    yield_cpu(nice, sched_idle=flag == "true")
    return nice


def yield_cpu(nice: int, *, sched_idle: bool = False) -> None:
    """Lower this process's CPU priority to `nice` (0..19; 0 leaves it unchanged).

    Linux keeps a nice value per thread, so every thread of the process is set (those started
    afterwards, onnxruntime's pool among them, inherit it from the thread that starts them). A
    process that leads its own session (the launcher starts each service so) also lowers its
    session's autogroup (sched(7), /proc/self/autogroup): on a bare host the scheduler shares the
    CPU between autogroups first, and a thread's own nice value counts only inside its group.
    `sched_idle`: every thread also takes the SCHED_IDLE policy (see the module's docstring);
    threads started afterwards inherit it too. Where the kernel refuses it, the nice value still
    applies.
    Raises ValueError for a value outside 0..19 (raising priority needs CAP_SYS_NICE and is never
    what a background process should do)."""
    if not 0 <= nice <= 19:
        raise ValueError(f"nice must be within 0..19, got {nice}")
    if not nice and not sched_idle:
        return
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
            if sched_idle:
                with contextlib.suppress(PermissionError):
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    autogroup = Path("/proc/self/autogroup")
    if os.getsid(0) == os.getpid() and autogroup.exists():
        with contextlib.suppress(OSError):  # refused by the kernel or a sandbox: threads still count
            autogroup.write_text(str(nice))
