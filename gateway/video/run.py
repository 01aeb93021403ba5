"""decode -> infer -> compose -> encode for one video, overlapped, in bounded memory.

Each stage runs on its own thread or task and hands over through a bounded queue (decode queue,
frames in flight at Triton, encode queue), so memory does not grow with the video's length.
Frames smaller than the model takes (a 1280x2 strip, a 1x1 GIF) are padded on the way in and
the answers cropped on the way out, here and nowhere else on this path.
A failed run removes its partial output; the caller owns the temp dir around it.

The video's recurrent state lives on the one tritonserver its sequence runs on. When that server
becomes unavailable mid-video, the run starts again from the first frame on another server
(`Triton.on_one_server`, two servers at most per job try): the state is the sum of every
earlier frame, so re-sending them from the start is the only way to rebuild it exactly, and the
output is then the same as an uninterrupted run's. Progress never goes backwards: the re-run
reports again once it passes the frame the failed one reached.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gateway.triton import SEQUENCE_SERVERS_PER_TRY, Triton, TritonServer
from gateway.video.decode import DecodedFrame, FrameReader, frame_limits, iter_frames, timing_notes
from gateway.video.encode import Preset, VideoWriter
from gateway.video.geometry import crop_to, display_size, foreground_min_size, pad_to
from gateway.video.infer import FrameResult, infer_frames
from gateway.video.probe import VideoInfo

ProgressFn = Callable[[int, int | None], Awaitable[None]]
RenderFn = Callable[[FrameResult], np.ndarray]


@dataclass(frozen=True)
class RunResult:
    frames: int
    processed_duration_s: float  # of the kept span (trimmed or not)
    trimmed: bool = False  # the trim cut decoded frames (whatever the header said)
    notes: tuple[str, ...] = ()  # what the decoder changed about the frames' timing (timing_notes)


def expected_frames(info: VideoInfo, max_duration_s: float | None) -> int:
    """Frames the run will write: exact when the container says so and nothing is cut."""
    if max_duration_s is None or max_duration_s >= info.duration_s:
        return info.frame_count
    return max(1, min(info.frame_count, math.ceil(max_duration_s * info.fps - 1e-6)))


async def _frames(reader: FrameReader, model: str) -> AsyncIterator[DecodedFrame]:
    while True:
        frame = await asyncio.to_thread(next, reader, None)
        if frame is None:
            return
        yield _padded(frame, model)


def _padded(frame: DecodedFrame, model: str) -> DecodedFrame:
    """The frame grown (edge rows/columns repeated) to the smallest size `model` runs on."""
    h, w = frame.rgb.shape[:2]
    size = foreground_min_size(model, h, w)
    return frame if size == (h, w) else replace(frame, rgb=pad_to(frame.rgb, *size))


def _cropped(result: FrameResult, height: int, width: int) -> FrameResult:
    """The answer for the frame's own height x width (the padding dropped)."""
    if result.alpha.shape[:2] == (height, width):
        return result
    fg = crop_to(result.foreground, height, width) if result.foreground is not None else None
    frame = replace(result.frame, rgb=crop_to(result.frame.rgb, height, width))
    return FrameResult(frame, crop_to(result.alpha, height, width), fg)


async def run_video(
    *,
    triton: Triton,
    info: VideoInfo,
    input_path: Path,
    output_path: Path,
    preset: Preset,
    render: RenderFn,
    foreground: bool,
    model: str,
    frames_in_flight: int,
    timeout_s: float,
    max_duration_s: float | None = None,
    max_s: float | None = None,
    max_fps: float = 240.0,
    keep_audio: bool = True,
    progress: ProgressFn | None = None,
) -> RunResult:
    """`max_duration_s`: trim to this many seconds; `max_s`: refuse (MediaError 422) a video whose
    decoded frames run past it; both also bound the frame count at `max_fps`. Raises MediaError
    (damaged, too long, size change), EncodeError, InferenceFailed, TritonUnavailable (every
    server failed)."""
    reached = 0

    async def forward_only(current: int, total: int | None) -> None:
        nonlocal reached
        if progress is not None and current >= reached:
            reached = current
            await progress(current, total)

    attempt = functools.partial(
        _run_on,
        info=info,
        input_path=input_path,
        output_path=output_path,
        preset=preset,
        render=render,
        foreground=foreground,
        model=model,
        frames_in_flight=frames_in_flight,
        timeout_s=timeout_s,
        max_duration_s=max_duration_s,
        max_s=max_s,
        max_fps=max_fps,
        keep_audio=keep_audio,
        progress=forward_only,
    )
    return await triton.on_one_server(attempt, SEQUENCE_SERVERS_PER_TRY)


async def _run_on(
    triton: TritonServer,
    *,
    info: VideoInfo,
    input_path: Path,
    output_path: Path,
    preset: Preset,
    render: RenderFn,
    foreground: bool,
    model: str,
    frames_in_flight: int,
    timeout_s: float,
    max_duration_s: float | None,
    max_s: float | None,
    max_fps: float,
    keep_audio: bool,
    progress: ProgressFn,
) -> RunResult:
    """One attempt of run_video, start to end, on one server."""
    total = expected_frames(info, max_duration_s)
    limits = frame_limits(info, max_fps=max_fps, trim_s=max_duration_s, max_s=max_s)
    reader = iter_frames(input_path, limits=limits)
    writer: VideoWriter | None = None
    ok = False
    try:
        writer = await asyncio.to_thread(
            VideoWriter, output_path, preset, info, input_path if keep_audio else None, max_duration_s
        )
        done = 0
        end_s = 0.0
        results = infer_frames(
            triton,
            _frames(reader, model),
            frames_in_flight=frames_in_flight,
            timeout_s=timeout_s,
            foreground=foreground,
            model=model,
        )
        width, height = display_size(info.width, info.height, info.rotation)  # the decoder's frames
        async for result in results:
            result = _cropped(result, height, width)
            frame = await asyncio.to_thread(render, result)
            await asyncio.to_thread(writer.write, frame, result.frame.pts, result.frame.duration)
            done += 1
            end_s = result.frame.end_s(info.fps) - info.start_pts * float(info.time_base)
            total = max(total, done)
            await progress(done, total)
        written = await asyncio.to_thread(writer.close)
        writer = None
        await progress(written, written)
        span = end_s if max_duration_s is None else min(end_s, max_duration_s)
        ok = True
        outcome = reader.outcome
        return RunResult(written, span, outcome.trimmed, tuple(timing_notes(outcome)))
    finally:
        reader.close()
        if writer is not None:
            await asyncio.to_thread(writer.abort)
        if not ok:
            output_path.unlink(missing_ok=True)
