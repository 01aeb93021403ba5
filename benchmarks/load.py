"""Bounded load test on loopback: `make load` (or `python -m benchmarks.load --seconds 60`).

Starts its own stack with the devstack functions (Redis, tritonserver, gateway, 2 workers) on
free ports under a temp dir, then for a fixed time floods /status at a set rate (`wrk`, see
benchmarks/flood.py), runs image clients on the image endpoints that exist, and submits two
bursts of video jobs well beyond the queue's capacity. It
stops by itself, waits (bounded) for every accepted job to reach a terminal state and prints
throughput, p50/p99 latency (all answers, and the accepted 2xx ones alone) and the share of 429
and 5xx per endpoint family, and the image endpoints' p99 on the idle stack before the flood
(the load-shedding bar: accepted image requests within 2x of it).

The bar: no 5xx, and no lost job (every 202 ends completed or failed). Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import av
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.flood import start_flood
from common.settings import REPO_ROOT, Settings
from devstack.processes import free_port, running
from devstack.stack import private_settings, stack_services
from gateway.app import ROUTE_TABLES

DATA = REPO_ROOT.parent / "shared" / "data"
TOKENS = [f"load-token-{i}" for i in range(4)]
IMAGE_ENDPOINTS = [f"/image/{n}/v1" for n in ("matte", "blur", "color", "gradient", "shadow")]


def _small_clip(dest: Path, seconds: float = 1.0) -> Path:
    """A 320x180 H.264 cut of a real clip: enough work per job to fill the queue quickly."""
    with av.open(str(DATA / "videos" / "01_dog.mp4")) as inp, av.open(str(dest), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = 320, 180, "yuv420p"
        for i, frame in enumerate(inp.decode(vin)):
            if i >= seconds * rate:
                break
            small = frame.reformat(320, 180, "yuv420p")
            small.pts, small.time_base = i, 1 / rate  # one frame per 1/rate: the clip's own timing
            out.mux(vout.encode(small))
        out.mux(vout.encode(None))
    return dest


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.accepted: dict[str, list[float]] = defaultdict(list)  # 2xx answers only
        self.status: dict[str, Counter[int]] = defaultdict(Counter)
        self.errors: Counter[str] = Counter()

    async def call(
        self, http: aiohttp.ClientSession, family: str, method: str, url: str, **kwargs: Any
    ) -> tuple[int, Any]:
        started = time.perf_counter()
        try:
            async with http.request(method, url, **kwargs) as r:
                raw = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[f"{family}: {type(exc).__name__}"] += 1
            return 0, None
        self.latency[family].append(time.perf_counter() - started)
        if 200 <= status < 300:
            self.accepted[family].append(time.perf_counter() - started)
        self.status[family][status] += 1
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, None

    def report(self, elapsed_s: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for family, lat in sorted(self.latency.items()):
            lat.sort()
            n = len(lat)
            codes = self.status[family]
            out[family] = {
                "requests": n,
                "rps": round(n / elapsed_s, 1),
                "p50_ms": round(1000 * statistics.median(lat), 1),
                "p99_ms": round(1000 * lat[min(n - 1, int(0.99 * n))], 1),
                "share_429": round(codes[429] / n, 3),
                **_percentiles("accepted_", self.accepted[family]),
                "share_5xx": round(sum(v for k, v in codes.items() if k >= 500) / n, 4),
                "statuses": dict(sorted(codes.items())),
            }
        return out


def _percentiles(prefix: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    return {
        f"{prefix}p50_ms": round(1000 * statistics.median(ordered), 1),
        f"{prefix}p99_ms": round(1000 * ordered[min(n - 1, int(0.99 * n))], 1),
    }


async def _unloaded_images(http: aiohttp.ClientSession, base: str, image: bytes, n: int) -> dict[str, float]:
    """The image endpoints one request at a time on the idle stack: the latency to compare with."""
    endpoints = [e for e in IMAGE_ENDPOINTS if _has_route(e)]
    times: list[float] = []
    for i in range(n):
        form = aiohttp.FormData()
        form.add_field("file", image, filename="i.jpg", content_type="image/jpeg")
        started = time.perf_counter()
        async with http.post(f"{base}{endpoints[i % len(endpoints)]}", data=form,
                             headers={"api_token": TOKENS[2]}) as r:  # fmt: skip
            await r.read()
            if r.status == 200:
                times.append(time.perf_counter() - started)
    return _percentiles("", times)


async def _image_clients(
    rec: Recorder, http: aiohttp.ClientSession, base: str, image: bytes, stop: float
) -> None:
    endpoints = [e for e in IMAGE_ENDPOINTS if _has_route(e)]
    i = 0
    while endpoints and time.monotonic() < stop:
        form = aiohttp.FormData()
        form.add_field("file", image, filename="i.jpg", content_type="image/jpeg")
        status, _ = await rec.call(http, "image", "POST", f"{base}{endpoints[i % len(endpoints)]}",
                                   data=form, headers={"api_token": TOKENS[2]})  # fmt: skip
        i += 1
        if status == 429:  # a well-behaved client waits as told (Retry-After: 1 s) before trying again
            await asyncio.sleep(1.0)


async def _video_burst(
    rec: Recorder, http: aiohttp.ClientSession, base: str, clip: bytes, clip_url: str, n: int
) -> dict[str, str]:
    """n submissions at once, alternating /video/submit/v1 and /foreground_mask, spread over the
    tokens; the accepted jobs as "video:<id>" / "mask:<id>" with their token."""

    async def one(i: int) -> tuple[str, str] | None:
        token = TOKENS[i % len(TOKENS)]
        if i % 2:
            status, body = await rec.call(http, "foreground_mask", "POST", f"{base}/foreground_mask",
                                          json={"video": clip_url}, headers={"api_token": token})  # fmt: skip
            return (f"mask:{body['request_id']}", token) if status == 202 and body else None
        form = aiohttp.FormData()
        form.add_field("file", clip, filename="v.mp4", content_type="video/mp4")
        form.add_field("bg_color", "0,255,0")
        status, body = await rec.call(http, "video_submit", "POST", f"{base}/video/submit/v1", data=form,
                                      headers={"api_token": token})  # fmt: skip
        return (f"video:{body['uuid']}", token) if status == 202 and body else None

    return dict(r for r in await asyncio.gather(*(one(i) for i in range(n))) if r)


@contextmanager
def _serve(root: Path) -> Iterator[str]:
    """`root` over loopback HTTP, for the URL-driven /foreground_mask jobs."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _has_route(path: str) -> bool:
    return any(getattr(r, "path", None) == path for table in ROUTE_TABLES for r in table)


async def _await_jobs(
    http: aiohttp.ClientSession,
    base: str,
    ids: list[str],
    owners: dict[str, str],
    outcome: dict[str, str],
    limit_s: float,
) -> dict[str, int]:
    """Poll every accepted job not yet known terminal until it is, or the time is up."""
    deadline = time.monotonic() + limit_s
    while len(outcome) < len(ids) and time.monotonic() < deadline:
        for key in ids:
            if key in outcome:
                continue
            kind, job = key.split(":", 1)
            headers = {"api_token": owners[key]}
            if kind == "mask":
                async with http.get(f"{base}/status/{job}", headers=headers) as r:
                    if r.status == 429:  # the polling limit: ask again on the next round
                        continue
                    state = (await r.json()).get("status") if r.status == 200 else f"http {r.status}"
                if state not in ("queued", "processing"):
                    outcome[key] = str(state)
                continue
            async with http.get(f"{base}/video/result/{job}", headers=headers) as r:
                if r.status == 200:
                    outcome[key] = "completed"
                elif r.status == 500:  # the document's answer for a failed video job
                    outcome[key] = "failed"
                elif r.status not in (202, 429):  # 429: the polling limit, ask again next round
                    outcome[key] = f"http {r.status}"
        await asyncio.sleep(1)
    counts = Counter(outcome.values())
    counts["not terminal"] = len(ids) - len(outcome)
    return dict(counts)


# Triton's per-model counters (cumulative, microseconds): a photo's time in the u2netp queue and
# in its compute, so a slow photo is placed in Triton or in the gateway.
_PHOTO_MODEL_COUNTERS = {
    "nv_inference_request_success": "requests",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_infer_duration_us": "compute_us",
}


async def _photo_model_counters(http: aiohttp.ClientSession, settings: Settings) -> dict[str, float]:
    url = f"http://{settings.triton_host}:{settings.triton_metrics_port}/metrics"
    async with http.get(url) as r:
        text = await r.text()
    counters = dict.fromkeys(_PHOTO_MODEL_COUNTERS.values(), 0.0)
    for family in text_string_to_metric_families(text):
        if family.name not in _PHOTO_MODEL_COUNTERS:
            continue
        for sample in family.samples:  # the parser names a counter's sample "<family>_total"
            if sample.labels.get("model") == "u2netp" and sample.name.endswith("_total"):
                counters[_PHOTO_MODEL_COUNTERS[family.name]] += sample.value
    return counters


def _per_photo_ms(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean u2netp queue and compute ms per request between two counter snapshots."""
    n = after["requests"] - before["requests"]
    if n <= 0:
        return {}
    return {
        "u2netp_requests": n,
        "u2netp_queue_ms": round((after["queue_us"] - before["queue_us"]) / n / 1e3, 1),
        "u2netp_compute_ms": round((after["compute_us"] - before["compute_us"]) / n / 1e3, 1),
    }


async def _load(
    settings: Settings,
    args: argparse.Namespace,
    clip: bytes,
    clip_url: str,
    image: bytes,
    workdir: Path,
) -> dict[str, Any]:
    base = settings.base_url
    rec = Recorder()
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=args.image_clients + args.burst)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        counters = await _photo_model_counters(http, settings)
        unloaded = await _unloaded_images(http, base, image, 60)  # p99 of fewer is just their maximum
        unloaded_counters = await _photo_model_counters(http, settings)
        unloaded.update(_per_photo_ms(counters, unloaded_counters))
        started = time.monotonic()
        stop = started + args.seconds
        owners = await _video_burst(
            rec, http, base, clip, clip_url, args.burst
        )  # beyond the queue's capacity
        # The flood polls the mask jobs' /status (a video result is deleted once downloaded, so
        # /video/result is polled by _await_jobs alone); an unknown id when none was accepted.
        polled = [
            (f"/status/{key.split(':', 1)[1]}", token)
            for key, token in owners.items()
            if key.startswith("mask:")
        ]
        flood = start_flood(base, polled or [("/status/" + "0" * 32, TOKENS[0])], args.poll_rate,
                            args.seconds, workdir, args.poll_connections)  # fmt: skip
        tasks = [
            asyncio.create_task(_image_clients(rec, http, base, image, stop))
            for _ in range(args.image_clients)
        ]
        await asyncio.sleep(args.seconds / 2)
        owners.update(await _video_burst(rec, http, base, clip, clip_url, args.burst))  # while the first runs
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        under_load = _per_photo_ms(unloaded_counters, await _photo_model_counters(http, settings))
        flooded = await asyncio.to_thread(flood.result)
        outcome: dict[str, str] = {}
        jobs = await _await_jobs(http, base, list(owners), owners, outcome, limit_s=300)
    report = rec.report(elapsed)
    report.setdefault("image", {}).update(under_load)
    report["status_flood"] = {k: v for k, v in flooded.items() if k != "transport_errors"}
    errors = dict(rec.errors)
    if flooded["transport_errors"]:
        errors["status_flood"] = flooded["transport_errors"]
    return {"seconds": round(elapsed, 1), "image_unloaded": unloaded, "families": report,
            "transport_errors": errors, "accepted_jobs": len(owners),
            "job_outcomes": jobs}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--poll-rate", type=float, default=1300, help="status polls per second (wrk)")
    parser.add_argument("--poll-connections", type=int, default=100)
    parser.add_argument("--image-clients", type=int, default=8, help="image clients (one api_token)")
    parser.add_argument("--burst", type=int, default=24, help="video jobs per burst (two bursts)")
    parser.add_argument("--max-queued", type=int, default=8)
    parser.add_argument("--image-in-flight", type=int, default=0,
                        help="IMAGE_MAX_IN_FLIGHT and _PER_TOKEN for the run (0: the defaults; "
                        "a large number turns load shedding off, for comparison)")  # fmt: skip
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-")))
        settings = private_settings(root / "data")
        env = {
            "API_TOKENS": ",".join(TOKENS),
            "RATE_LIMIT_PER_MINUTE": "100000",  # this measures capacity, not the rate limiter
            "MAX_QUEUED_JOBS": str(args.max_queued),
            "MAX_CONCURRENT_JOBS_PER_TOKEN": "4",
            "ALLOW_LOOPBACK_URLS": "true",  # /foreground_mask fetches the clip from this process
        }
        if args.image_in_flight:
            env["IMAGE_MAX_IN_FLIGHT"] = env["IMAGE_MAX_IN_FLIGHT_PER_TOKEN"] = str(args.image_in_flight)
        stack.enter_context(running(stack_services(settings, workers=2, env=env)))
        clip = _small_clip(root / "clip.mp4").read_bytes()
        image = next(iter(sorted((DATA / "images" / "sod_bsds300" / "images").glob("*.jpg")))).read_bytes()
        print(
            f"load: {args.seconds:g}s, {args.poll_rate:g} status polls/s, {args.image_clients} image "
            f"clients, 2 bursts of {args.burst} video jobs (queue limit {args.max_queued})",
            flush=True,
        )
        clip_url = f"{stack.enter_context(_serve(root))}/clip.mp4"
        result = asyncio.run(_load(settings, args, clip, clip_url, image, root))
    print(json.dumps(result, indent=2))
    five_xx = sum(f["share_5xx"] * f["requests"] for f in result["families"].values())
    lost = result["job_outcomes"].get("not terminal", 0) + sum(
        v for k, v in result["job_outcomes"].items() if k.startswith("http")
    )
    ok = five_xx == 0 and lost == 0 and not result["transport_errors"]
    print(f"verdict: {'PASS' if ok else 'FAIL'} (5xx={five_xx:.0f}, lost jobs={lost})")
    image = result["families"].get("image", {})
    if image.get("accepted_p99_ms") and result["image_unloaded"].get("p99_ms"):
        ratio = image["accepted_p99_ms"] / result["image_unloaded"]["p99_ms"]
        unloaded = result["image_unloaded"]["p99_ms"]
        print(f"shedding: accepted image p99 {image['accepted_p99_ms']} ms under load = {ratio:.2f}x "
              f"the unloaded {unloaded} ms (bar: 2x); 429 share {image['share_429']}")  # fmt: skip
        idle, loaded = result["image_unloaded"], image
        if idle.get("u2netp_requests") and loaded.get("u2netp_requests"):
            print(
                f"u2netp per photo, idle -> under load: queue {idle['u2netp_queue_ms']} -> "
                f"{loaded['u2netp_queue_ms']} ms, compute {idle['u2netp_compute_ms']} -> "
                f"{loaded['u2netp_compute_ms']} ms (the rest of a photo's time is the gateway's)"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
