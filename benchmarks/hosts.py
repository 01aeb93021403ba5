"""Figures of docs/ARCHITECTURE.md "Running on many hosts": `python -m benchmarks.hosts`.

One tritonserver, Redis and SeaweedFS on free loopback ports; then for STORAGE=local and s3, with
1 and 2 workers (each worker with its own DATA_DIR in s3 mode, as on its own host), a burst of
`--jobs` /foreground_mask jobs (rvm, a `--seconds` 320x180 clip) is timed from the first submit to the
last completed status: jobs per minute. Apart, the object-store round trip of one job (gateway
uploads the input, worker lists and downloads it, uploads the result, gateway streams it back,
both deleted) is timed `--repeat` times for the same input and result files: its median is the
store's cost per job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from fractions import Fraction
from pathlib import Path

import aiohttp
import av

from benchmarks.common import machine, machine_line, serve_directory
from common.settings import REPO_ROOT, Settings
from devstack.app_services import gateway_service, worker_service
from devstack.processes import Service, free_port, running
from devstack.redis_server import redis_service
from devstack.seaweedfs import seaweedfs_service
from devstack.stack import private_settings
from devstack.tritonserver import triton_service
from gateway.storage import Storage

TOKEN = "hosts-bench-token"
SOURCE = REPO_ROOT.parent / "shared" / "data" / "videos" / "01_dog.mp4"


def _clip(dest: Path, seconds: float, fps: int = 25) -> Path:
    """`seconds` of a real clip at 320x180, `fps` frames per second, H.264."""
    with av.open(str(SOURCE)) as inp, av.open(str(dest), "w") as out:
        vout = out.add_stream("libx264", rate=fps)
        vout.width, vout.height, vout.pix_fmt = 320, 180, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= seconds * fps:
                break
            small = frame.reformat(320, 180, "yuv420p")
            small.pts, small.time_base = i, Fraction(1, fps)
            out.mux(vout.encode(small))
        out.mux(vout.encode(None))
    return dest


async def _burst(base: str, clip_url: str, jobs: int) -> tuple[float, list[bytes]]:
    """Seconds from the first submit to the last completed job, and the masks downloaded."""
    headers = {"api_token": TOKEN}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as http:
        started = time.monotonic()
        ids = []
        for _ in range(jobs):
            async with http.post(f"{base}/foreground_mask", json={"video": clip_url, "model": "rvm"}) as r:
                body = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"refused: {r.status} {body}")
                ids.append(body["request_id"])
        documents: dict[str, dict] = {}
        while len(documents) < jobs:
            for request_id in ids:
                if request_id in documents:
                    continue
                async with http.get(f"{base}/status/{request_id}") as r:
                    body = await r.json()
                if body["status"] in ("completed", "failed"):
                    documents[request_id] = body
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
        masks, failed = [], []
        for body in documents.values():
            if body["status"] == "failed":
                failed.append(body["error"]["details"])
                continue
            async with http.get(body["mask_url"]) as r:
                masks.append(await r.read())
    if failed:  # reported, not hidden: the figure counts completed jobs only
        print(f"  {len(failed)} of {jobs} jobs failed: {sorted(set(failed))}", flush=True)
    return elapsed, masks


def _app_env(redis_db: str) -> dict[str, str]:
    return {
        "API_TOKENS": TOKEN,
        "ALLOW_LOOPBACK_URLS": "true",
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "POLL_LIMIT_PER_MINUTE": "1000000",
        "MAX_CONCURRENT_JOBS_PER_TOKEN": "64",
        "RESULT_SIGNING_SECRET": "hosts-bench",
        "REDIS_URL": redis_db,
    }


async def _store_round_trip(
    settings: Settings, root: Path, clip: Path, result: bytes, repeat: int
) -> list[float]:
    """Seconds of the store's share of one job, `repeat` times (see the module doc)."""
    gateway = Storage(settings.with_overrides(data_dir=root / "rt-gateway"))
    worker = Storage(settings.with_overrides(data_dir=root / "rt-worker"))
    times = []
    try:
        await gateway.start()
        for _ in range(repeat):
            job = str(uuid.uuid4())
            started = time.perf_counter()
            shutil.copy(clip, gateway.uploads_dir(job) / "input")
            await gateway.publish_inputs(job)
            await worker.fetch_inputs(job)
            out = worker.new_temp_dir(job) / "mask.mp4"
            out.write_bytes(result)
            stored = await worker.store(job, out, "mask.mp4", "video/mp4")
            await worker.remove_uploads(job)
            async with gateway.open_result(job, stored) as opened:
                async for _chunk in opened.chunks:
                    pass
            await gateway.delete(job)
            worker.remove_temp_dir(job)
            times.append(time.perf_counter() - started)
    finally:
        await gateway.close()
        await worker.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hosts", description=__doc__)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (320x180, H.264)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    print(machine_line(machine()))
    root = Path(tempfile.mkdtemp(prefix="hosts-bench-"))
    try:
        _measure(root, args)
    except BaseException:
        print(f"kept for a look at the logs: {root}")
        raise
    shutil.rmtree(root, ignore_errors=True)
    return 0


def _measure(root: Path, args: argparse.Namespace) -> None:
    clip = _clip(root / "clip.mp4", args.seconds)
    base = private_settings(root / "base")
    s3_port, key, secret = free_port(), "bench-key", os.urandom(16).hex()
    s3 = base.with_overrides(
        storage_backend="s3",
        s3_endpoint_url=f"http://127.0.0.1:{s3_port}",
        s3_bucket="bench",
        s3_access_key_id=key,
        s3_secret_access_key=secret,
    )
    shared: list[Service] = [
        redis_service(int(base.redis_url.rsplit(":", 1)[1].split("/")[0]), root / "redis"),
        seaweedfs_service(s3_port, root / "seaweedfs", key, secret),
        triton_service(base, root / "logs" / "tritonserver.log", root / "backends"),
    ]
    rows = []
    with running(shared, timeout_s=600), serve_directory(root) as media:
        db = 1
        for mode, settings in (("s3", s3), ("local", base)):
            for workers in (1, 2):
                redis_db = base.redis_url.rsplit("/", 1)[0] + f"/{db}"
                db += 1
                run = root / f"{mode}-{workers}"
                gw = settings.with_overrides(
                    gateway_port=free_port(), data_dir=run / "gateway", redis_url=redis_db
                )
                env = _app_env(redis_db)
                services = [gateway_service(gw, run / "gateway.log", env)]
                for i in range(workers):
                    # s3: a data dir per worker, as on hosts of their own; local: one shared dir
                    data = run / f"worker-{i}" if mode == "s3" else gw.data_dir
                    services.append(
                        worker_service(gw.with_overrides(data_dir=data), i, run / f"w{i}.log", env)
                    )
                with running(services, timeout_s=300):
                    elapsed, masks = asyncio.run(_burst(gw.base_url, f"{media}/clip.mp4", args.jobs))
                rows.append((mode, workers, elapsed, len(masks) * 60 / elapsed))
                if len(masks) < args.jobs:
                    raise RuntimeError("failed jobs: the figure would not be the pipeline's")
                load = os.getloadavg()[0]  # the machine is shared: say how busy it was
                print(f"STORAGE={mode:5} workers={workers}: {len(masks)} jobs in {elapsed:6.1f}s = "
                      f"{rows[-1][3]:5.1f} jobs/min (load average {load:.1f})", flush=True)  # fmt: skip
        trips = asyncio.run(_store_round_trip(s3, root, clip, masks[0], args.repeat))
    print(
        f"store round trip per job (input {clip.stat().st_size} B, mask {len(masks[0])} B): "
        f"median {statistics.median(trips) * 1000:.0f} ms, max {max(trips) * 1000:.0f} ms "
        f"over {len(trips)}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
