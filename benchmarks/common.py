"""What every benchmark shares: a private stack, the figure table, timers, percentiles, RSS sampling."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import onnxruntime as ort
import psutil

from common.settings import REPO_ROOT, Settings
from devstack.processes import Service, free_port, running
from devstack.stack import private_settings, stack_services

DATA = REPO_ROOT.parent / "shared" / "data"
OUT_DIR = REPO_ROOT / "bench_out"
TOKEN = "bench-token"
MB = 1024 * 1024
TRITON_STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


# --- figures ----------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of the table: a measured value beside its baseline; the target applies to the ratio."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""  # ">= 0.90" or "<= 1.2" on value/baseline; "" = reported, not judged
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if not self.target or self.ratio is None:
            return None
        op, bound = self.target.split()
        return self.ratio >= float(bound) if op == ">=" else self.ratio <= float(bound)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def format_table(figures: list[Figure]) -> str:
    head = ("figure", "value", "baseline", "ratio", "target", "met")
    rows = [
        (
            f.name,
            f"{_num(f.value)} {f.unit}",
            f"{_num(f.baseline)} ({f.baseline_name})" if f.baseline is not None else "-",
            _num(f.ratio),
            f.target or "-",
            {None: "-", True: "yes", False: "NO"}[f.met],
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }


def machine_line(m: dict[str, object]) -> str:
    return (
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
        f"load {m['load_1m_at_start']} at start, {m['date']}"
    )


def write_json(path: Path, payload: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


# --- statistics and timing ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without numpy."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Stopwatch:
    seconds: float = 0.0
    _t0: float = field(default=0.0, repr=False)

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0


# --- onnxruntime baselines ---------------------------------------------------------------------------


def config_threads(model: str) -> int:
    """intra_op_threads of the model's CPU config: the baseline runs with what Triton runs."""
    text = (REPO_ROOT / "model_repository" / model / "config.pbtxt").read_text()
    found = re.search(r'key:\s*"intra_op_threads"\s*value:\s*\{\s*string_value:\s*"(\d+)"', text)
    return int(found.group(1)) if found else 1


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


# --- memory -----------------------------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants (shared pages count once per process)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class RssSampler:
    """Peak process-tree RSS per named root pid, sampled on a thread while the block runs."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.1) -> None:
        self.roots = roots
        self.interval_s = interval_s
        self.peak: dict[str, int] = dict.fromkeys(roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.roots.items():
                self.peak[name] = max(self.peak[name], tree_rss(pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self, name: str) -> float:
        return self.peak[name] / MB


# --- the private stack --------------------------------------------------------------------------------


@dataclass
class BenchStack:
    settings: Settings
    services: list[Service]

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def pids(self, prefix: str) -> dict[str, int]:
        return {s.name: s.proc.pid for s in self.services if s.name.startswith(prefix) and s.proc}

    def triton_stats(self, model: str) -> dict[str, float]:
        """Cumulative server-side counters of one model (Triton's statistics extension), in ns."""
        s = self.settings
        url = f"http://{s.triton_host}:{s.triton_http_port}/v2/models/{model}/stats"
        with urllib.request.urlopen(url, timeout=10) as resp:
            stats = json.loads(resp.read())["model_stats"][0]
        infer = stats["inference_stats"]
        out = {k: float(infer[k]["ns"]) for k in TRITON_STAGES}
        out["requests"] = float(infer["success"]["count"])
        out["executions"] = float(stats.get("execution_count", 0))
        return out


@contextlib.contextmanager
def bench_stack(
    data_dir: Path, *, workers: int, worker_max_jobs: int, env: dict[str, str] | None = None
) -> Iterator[BenchStack]:
    """Redis, tritonserver, gateway and workers with the production settings, on free ports.

    Only access limits are lifted (rate per token, jobs per token): the benchmark is one token
    doing the work of many users, and a 429 would measure the limiter, not the pipeline.
    """
    settings = private_settings(data_dir)
    app_env = {
        "API_TOKENS": TOKEN,
        "ALLOW_LOOPBACK_URLS": "true",
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "MAX_CONCURRENT_JOBS_PER_TOKEN": "64",
        # the image figures measure the pipeline at N clients, not the load shedding's 429s
        "IMAGE_MAX_IN_FLIGHT": "64",
        "IMAGE_MAX_IN_FLIGHT_PER_TOKEN": "64",
        "WORKER_MAX_JOBS": str(worker_max_jobs),
        **(env or {}),
    }
    services = stack_services(settings, workers, app_env)
    with running(services, timeout_s=600) as started:
        yield BenchStack(settings, started)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A loopback HTTP server for the clips: the service downloads its input as it would in use."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


async def completed_job(
    http: aiohttp.ClientSession, url: str, body: dict[str, object], token: str, poll_s: float = 0.25
) -> dict[str, Any]:
    """POST a mask job to `url` (/foreground_mask, /mask_by_key_points) and poll its status_url
    until it ends; returns the completed status body. A 503 or 429 on a poll (the service's
    "try again", with Retry-After) is waited out. Raises RuntimeError when the job is refused or
    fails, or a poll gets any other answer."""
    headers = {"api_token": token}
    async with http.post(url, json=body, headers=headers) as r:
        payload = await r.json()
        if r.status != 202:
            raise RuntimeError(f"submit refused: {r.status} {payload}")
    while True:
        async with http.get(payload["status_url"], headers=headers) as r:
            if r.status in (429, 503):
                await asyncio.sleep(float(r.headers.get("Retry-After", 1)))
                continue
            status = await r.json()
            if r.status != 200:
                raise RuntimeError(f"status answered {r.status}: {status}")
        if status["status"] == "completed":
            return dict(status)
        if status["status"] == "failed":
            raise RuntimeError(f"job failed: {status}")
        await asyncio.sleep(poll_s)


async def mask_job_via_api(
    gateway: str, token: str, endpoint: str, body: dict[str, object], dest: Path
) -> list[np.ndarray]:
    """POST a mask job (/foreground_mask, /mask_by_key_points), poll its status_url, download
    the mask video to `dest` and decode it: one uint8 [H,W] array per frame. Raises
    RuntimeError when the job is refused or fails."""
    async with aiohttp.ClientSession() as http:
        status = await completed_job(http, f"{gateway}{endpoint}", body, token)
        async with http.get(status["mask_url"]) as r:
            dest.write_bytes(await r.read())
    with av.open(str(dest)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]
