"""Images: /image/matte/v1 latency against raw u2netp, one client and several at once.

Inputs are real photos (../shared/data/images/sod_bsds300) resized so the long side is 512, 1024
or 2048 px and saved as JPEG q90. Raw baseline, in this process on the same photos: onnxruntime
on the original u2netp graph with rembg's own pre/post (export.reference.u2netp_alpha), with the
u2netp config's thread count; its bytes-to-PNG variant adds JPEG decode and the RGBA PNG encode,
which the endpoint does too.

`python -m benchmarks.image_bench` (the latency figures alone, on a machine that is not quiet):
the raw model and one request to the endpoint take turns photo by photo, so load that comes and
goes hits both alike; `make bench` measures all baselines first and the service afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

from benchmarks.common import (
    DATA,
    OUT_DIR,
    TOKEN,
    Figure,
    bench_stack,
    config_threads,
    format_table,
    machine,
    machine_line,
    ort_session,
    percentile,
    write_json,
)
from export.reference import u2netp_alpha
from export.sources import SOURCES, locate

PHOTOS = DATA / "images" / "sod_bsds300" / "images"
ENDPOINT = "/image/matte/v1"


def prepare_images(dest: Path, sizes: tuple[int, ...], count: int) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = {}
    sources = sorted(PHOTOS.glob("*.jpg"))[:count]
    for size in sizes:
        folder = dest / str(size)
        folder.mkdir(parents=True, exist_ok=True)
        out[size] = []
        for src in sources:
            path = folder / src.name
            if not path.exists():
                with Image.open(src) as im:
                    rgb = im.convert("RGB")
                    scale = size / max(rgb.size)
                    resized = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.LANCZOS)
                    resized.save(path, "JPEG", quality=90)
            out[size].append(path)
    return out


@dataclass
class Latencies:
    seconds: list[float]
    wall_s: float  # for all of them (concurrent runs overlap)

    def p(self, q: float) -> float:
        return percentile(self.seconds, q) * 1000.0

    @property
    def per_s(self) -> float:
        return len(self.seconds) / self.wall_s


def _raw_one(session: object, blob: bytes) -> tuple[float, float]:
    """(model with rembg pre/post, bytes in -> PNG out) seconds for one photo."""
    t0 = time.perf_counter()
    image = Image.open(io.BytesIO(blob)).convert("RGB")
    t1 = time.perf_counter()
    alpha = u2netp_alpha(session, np.asarray(image))  # type: ignore[arg-type]
    t2 = time.perf_counter()
    image.putalpha(Image.fromarray(alpha, "L"))
    image.save(io.BytesIO(), "PNG")
    return t2 - t1, time.perf_counter() - t0


def raw_latencies(paths: list[Path], threads: int) -> tuple[Latencies, Latencies]:
    """(model with rembg pre/post, bytes in -> PNG out), one image at a time after a warm-up."""
    session = ort_session(locate(SOURCES["u2netp"]), threads)
    blobs = [p.read_bytes() for p in paths]
    u2netp_alpha(session, np.asarray(Image.open(io.BytesIO(blobs[0])).convert("RGB")))
    model, full = [], []
    for blob in blobs:
        m, f = _raw_one(session, blob)
        model.append(m)
        full.append(f)
    return Latencies(model, sum(model)), Latencies(full, sum(full))


async def _client(http: aiohttp.ClientSession, url: str, blobs: list[bytes], out: list[float]) -> None:
    for blob in blobs:
        form = aiohttp.FormData()
        form.add_field("file", blob, filename="photo.jpg", content_type="image/jpeg")
        t0 = time.perf_counter()
        async with http.post(url, data=form, headers={"api_token": TOKEN}) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{ENDPOINT} answered {resp.status}: {body[:200]!r}")
        out.append(time.perf_counter() - t0)


async def _service(base: str, paths: list[Path], clients: int, rounds: int) -> Latencies:
    blobs = [p.read_bytes() for p in paths]
    url = base + ENDPOINT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        await _client(http, url, blobs[:1], [])  # warm-up: connection, first-run allocations
        seconds: list[float] = []
        t0 = time.perf_counter()
        # each client walks the photos from its own offset, so concurrent requests differ
        await asyncio.gather(
            *(_client(http, url, (blobs[c:] + blobs[:c]) * rounds, seconds) for c in range(clients))
        )
        return Latencies(seconds, time.perf_counter() - t0)


def service_latencies(base: str, paths: list[Path], clients: int, rounds: int = 1) -> Latencies:
    return asyncio.run(_service(base, paths, clients, rounds))


def run_raw(images: dict[int, list[Path]]) -> dict[int, tuple[Latencies, Latencies]]:
    threads = config_threads("u2netp")
    return {size: raw_latencies(paths, threads) for size, paths in images.items()}


def run_service(base: str, images: dict[int, list[Path]], clients: int) -> dict[int, dict[int, Latencies]]:
    return {size: {1: service_latencies(base, paths, 1), clients: service_latencies(base, paths, clients)}
            for size, paths in images.items()}  # fmt: skip


def figures(
    raw: dict[int, tuple[Latencies, Latencies]], ours: dict[int, dict[int, Latencies]], clients: int
) -> list[Figure]:
    figs: list[Figure] = []
    for size in sorted(ours):
        model, full = raw[size]
        one, many = ours[size][1], ours[size][clients]
        figs += [
            Figure(f"image {size}px p50, 1 client", one.p(50), "ms", model.p(50), "raw u2netp+rembg pre/post",
                   "<= 1.20"),
            Figure(f"image {size}px p50 vs raw bytes->PNG", one.p(50), "ms", full.p(50), "raw + decode/PNG"),
            Figure(f"image {size}px p99, 1 client", one.p(99), "ms", model.p(99), "raw p99"),
            Figure(f"image {size}px p50, {clients} clients", many.p(50), "ms"),
            Figure(f"image {size}px p99, {clients} clients", many.p(99), "ms"),
            Figure(f"image {size}px images/s, {clients} clients", many.per_s, "img/s", full.per_s,
                   "raw bytes->PNG, serial"),
        ]  # fmt: skip
    return figs


def peer_figure(ours: Latencies, peer: dict[str, object], size: int) -> Figure:
    theirs = [float(x) for x in peer["latencies_s"]]  # type: ignore[attr-defined]
    return Figure(f"image {size}px images/s vs rembg remove()", ours.per_s, "img/s",
                  len(theirs) / sum(theirs), "rembg, 1 session")  # fmt: skip


async def _interleaved(base: str, images: dict[int, list[Path]], threads: int, rounds: int) -> dict:
    session = ort_session(locate(SOURCES["u2netp"]), threads)
    out: dict[str, dict] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        for size, paths in images.items():
            blobs = [p.read_bytes() for p in paths]
            _raw_one(session, blobs[0])  # warm-up, both sides
            await _client(http, base + ENDPOINT, blobs[:1], [])
            model: list[float] = []
            full: list[float] = []
            ours: list[float] = []
            for _ in range(rounds):
                for blob in blobs:
                    m, f = _raw_one(session, blob)
                    model.append(m)
                    full.append(f)
                    await _client(http, base + ENDPOINT, [blob], ours)
            out[str(size)] = {"raw_model_s": model, "raw_bytes_png_s": full, "endpoint_s": ours}
            ours_p50, raw_p50 = percentile(ours, 50) * 1e3, percentile(model, 50) * 1e3
            load = os.getloadavg()[0]
            print(f"  {size} px: endpoint p50 {ours_p50:.0f} ms, raw p50 {raw_p50:.0f} ms, load {load:.1f}")
    return out


def interleaved_figures(measured: dict[str, dict]) -> list[Figure]:
    figs: list[Figure] = []
    for size, m in measured.items():
        model, full, ours = m["raw_model_s"], m["raw_bytes_png_s"], m["endpoint_s"]
        ms = 1e3
        figs += [
            Figure(f"image {size}px p50, 1 client, interleaved", percentile(ours, 50) * ms, "ms",
                   percentile(model, 50) * ms, "raw u2netp+rembg pre/post", "<= 1.50"),
            Figure(f"image {size}px p50 vs raw bytes->PNG", percentile(ours, 50) * ms, "ms",
                   percentile(full, 50) * ms, "raw + decode/PNG"),
            Figure(f"image {size}px p99, 1 client, interleaved", percentile(ours, 99) * ms, "ms",
                   percentile(model, 99) * ms, "raw p99"),
        ]  # fmt: skip
    return figs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.image_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--photos", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--out", type=Path, default=OUT_DIR)
    args = p.parse_args(argv)
    host = machine()
    print(machine_line(host), flush=True)
    images = prepare_images(args.out / "images", tuple(args.sizes), args.photos)
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp, bench_stack(
        Path(tmp), workers=1, worker_max_jobs=1
    ) as stack:  # fmt: skip
        measured = asyncio.run(_interleaved(stack.base_url, images, config_threads("u2netp"), args.rounds))
    print()
    print(format_table(interleaved_figures(measured)))
    print(f"{args.photos} photos x {args.rounds} rounds per size; load {os.getloadavg()[0]:.2f} at the end")
    print(machine_line(host))
    write_json(args.out / "image-latency.json", {"machine": host, "args": vars(args), "measured": measured})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
