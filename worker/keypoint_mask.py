"""Job `mask_by_key_points` (POST /mask_by_key_points): the point-prompted object, as a mask video.

Flow: decode the (trimmed) clip once into a temp memmap, so memory stays bounded however long
the 5 s clip is at 750p; walk two `keypoint_mask` sequences on Triton from the prompt frame
(forward to the end, backward to frame 0) writing masks into a second memmap; then encode them
in input order with the video pipeline's VideoWriter (timestamps, frame rate, audio kept).
Both memmaps live in the job's temp dir, which the wrapper in worker.main removes whatever happens.
Frames are upright (display orientation), so key points are display coordinates; frames under
keypoint_mask's minimum are padded (bottom/right, points unmoved) in `walk` and the masks cropped.
Each walk is one sequence on one tritonserver; when that server fails mid-walk the walk starts
again from the prompt frame on another (`Triton.on_one_server`): the tracker's state is built from
the prompt onwards, so the prompt frame is the one point it can be rebuilt from.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gateway.job_params import KeyPointMaskParams, input_path
from gateway.jobs import JobRecord
from gateway.keypoint_preview import MODEL, prompt_arrays
from gateway.triton import SEQUENCE_SERVERS_PER_TRY, Triton, TritonServer
from gateway.video import alpha as input_alpha
from gateway.video.compose import mask_frame
from gateway.video.decode import FrameLimits, frame_limits, iter_frames, timing_notes
from gateway.video.encode import VideoWriter, preset_by_name
from gateway.video.geometry import crop_to, keypoint_min_size, pad_to
from gateway.video.probe import MediaError, VideoInfo, probe
from worker.context import JobContext
from worker.outcome import input_available, store_and_complete, user_facing_errors

ProgressFn = Callable[[int], Awaitable[None]]


@dataclass
class DecodedClip:
    frames: np.memmap  # uint8 [N,H,W,3], upright: H x W is the display size
    pts: list[int]
    durations: list[int]  # per frame, in the input's time base; 0: not stored
    processed_duration_s: float
    alpha: np.memmap | None = None  # uint8 [N,H,W], the input's own alpha; None: all opaque
    trimmed: bool = False  # the trim cut decoded frames
    notes: tuple[str, ...] = ()  # what the decoder changed about the frames' timing (timing_notes)


def decode_to_memmap(source: Path, info: VideoInfo, work: Path, limits: FrameLimits) -> DecodedClip:
    """Frames appended to one raw file, then mapped: no Python list of frames, no size guess.
    The input's own alpha goes to a second file from the first frame that has one. `limits`
    hold on the decoded frames (trim or refusal, frame count, size): the memmap stays bounded."""
    max_duration_s = limits.trim_s
    raw = work / "frames.u8"
    raw_alpha = work / "alpha.u8"
    pts: list[int] = []
    durations: list[int] = []
    shape: tuple[int, ...] = ()
    end_s = 0.0
    alpha_out: BinaryIO | None = None
    with contextlib.ExitStack() as files:
        out = files.enter_context(raw.open("wb"))
        reader = files.enter_context(iter_frames(source, limits=limits))
        for frame in reader:
            if not shape:
                shape = frame.rgb.shape  # upright: stored width and height swap for 90/270
                opaque = np.full(shape[:2], 255, np.uint8)
            out.write(np.ascontiguousarray(frame.rgb, dtype=np.uint8).tobytes())
            if frame.alpha is not None and alpha_out is None:
                alpha_out = files.enter_context(raw_alpha.open("wb"))
                alpha_out.write(opaque.tobytes() * len(pts))
            if alpha_out is not None:
                alpha_out.write((frame.alpha if frame.alpha is not None else opaque).tobytes())
            pts.append(frame.pts)
            durations.append(frame.duration)
            end_s = frame.end_s(info.fps) - info.start_pts * float(info.time_base)
    if not pts:
        raise MediaError(400, "Unreadable video", "No frame could be decoded from the video.")
    span = end_s if max_duration_s is None else min(end_s, max_duration_s)
    frames = np.memmap(raw, dtype=np.uint8, mode="r", shape=(len(pts), *shape))
    alpha = None
    if alpha_out is not None:
        alpha = np.memmap(raw_alpha, dtype=np.uint8, mode="r", shape=(len(pts), *shape[:2]))
    outcome = reader.outcome
    return DecodedClip(frames, pts, durations, span, alpha, outcome.trimmed, tuple(timing_notes(outcome)))


async def walk(
    triton: TritonServer,
    frames: np.memmap,
    order: Sequence[int],
    points: np.ndarray,
    labels: np.ndarray,
    masks: np.memmap,
    progress: ProgressFn,
    skip_first: bool,
) -> None:
    """One keypoint_mask sequence on one server over `order` (prompt frame first); masks land in
    `masks`, `progress(1)` per mask written."""
    sequence_id = triton.new_sequence_id()
    last = len(order) - 1
    height, width = frames.shape[1:3]
    size = keypoint_min_size(height, width)
    for step, index in enumerate(order):
        frame = pad_to(np.ascontiguousarray(frames[index]), *size)
        inputs: dict[str, np.ndarray] = {"frame": frame[None]}
        if step == 0:
            inputs.update(points=points, labels=labels)
        out = await triton.infer(
            MODEL, inputs, ["mask"], sequence_id=sequence_id, start=step == 0, end=step == last
        )
        if step == 0 and skip_first:
            continue  # the other direction already wrote the prompt frame's mask
        masks[index] = crop_to(out["mask"][0], height, width)
        await progress(1)


async def segment(
    triton: Triton,
    frames: np.memmap,
    frame_index: int,
    points: np.ndarray,
    labels: np.ndarray,
    masks: np.memmap,
    progress: ProgressFn,
) -> None:
    """Forward from the prompt frame to the end, backward to frame 0; the two run concurrently,
    each on the server Triton picks for it."""
    n = frames.shape[0]
    forward = _walk_anywhere(triton, frames, range(frame_index, n), points, labels, masks, progress, False)
    if frame_index == 0:
        await forward
        return
    backward = _walk_anywhere(
        triton, frames, range(frame_index, -1, -1), points, labels, masks, progress, True
    )
    await asyncio.gather(forward, backward)


async def _walk_anywhere(
    triton: Triton,
    frames: np.memmap,
    order: Sequence[int],
    points: np.ndarray,
    labels: np.ndarray,
    masks: np.memmap,
    progress: ProgressFn,
    skip_first: bool,
) -> None:
    """`walk` on one server, from the prompt frame again on another when that server fails;
    masks a failed attempt wrote are written again and counted once."""
    reached = 0

    async def attempt(server: TritonServer) -> None:
        walked = 0

        async def counted(count: int) -> None:
            nonlocal walked, reached
            walked += count
            if walked > reached:
                await progress(walked - reached)
                reached = walked

        await walk(server, frames, order, points, labels, masks, counted, skip_first)

    await triton.on_one_server(attempt, SEQUENCE_SERVERS_PER_TRY)


def encode_masks(
    out_path: Path,
    masks: np.memmap,
    pts: Sequence[int],
    durations: Sequence[int],
    source: Path,
    info: VideoInfo,
    preset_name: str,
    max_duration_s: float | None,
    alpha: np.memmap | None = None,
) -> int:
    """Write the masks in input order; `alpha` (the input's own, [N,H,W]) is multiplied in."""
    writer = VideoWriter(out_path, preset_by_name(preset_name), info, source, max_duration_s)
    try:
        for index, (frame_pts, duration) in enumerate(zip(pts, durations, strict=True)):
            frame_alpha = np.asarray(alpha[index]) if alpha is not None else None
            mask = mask_frame(input_alpha.times(np.asarray(masks[index]), frame_alpha))
            writer.write(mask, frame_pts, duration)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


async def run(job: JobContext, record: JobRecord, params: KeyPointMaskParams) -> None:
    """White where the prompted object is, black elsewhere, as a video in the requested preset."""
    jobs, storage = job.jobs, job.storage
    source = input_path(storage, record.id)
    frame_index = params.frame_index
    if not await input_available(jobs, record, source):
        return
    preset = preset_by_name(params.preset)
    work = storage.new_temp_dir(record.id)
    out_path = work / f"output.{preset.extension}"
    async with user_facing_errors(jobs, record.id, "key-point") as outcome:
        info = await asyncio.to_thread(probe, source, max_side=job.settings.video_max_side)
        max_duration_s = params.trim_length(info.duration_s)
        # auto_trim: trim on the decoded frames whatever the probe found; else refuse past the limit
        limits = frame_limits(
            info,
            max_fps=job.settings.video_max_fps,
            trim_s=params.limit_s if params.auto_trim else None,
            max_s=None if params.auto_trim else params.limit_s,
        )
        clip = await asyncio.to_thread(decode_to_memmap, source, info, work, limits)
        trimmed = max_duration_s is not None or clip.trimmed
        if trimmed:
            max_duration_s = params.limit_s
        n = clip.frames.shape[0]
        if frame_index >= n:
            await jobs.fail(
                record.id,
                422,
                "Invalid request data",
                f"frame_index {frame_index} is beyond the last frame ({n - 1}) of the video.",
            )
            return
        masks = np.memmap(work / "masks.u8", dtype=np.uint8, mode="w+", shape=clip.frames.shape[:3])
        done = 0

        async def progress(count: int) -> None:
            nonlocal done
            done += count
            await jobs.set_progress(record.id, done, n)

        points, labels = prompt_arrays(params.key_points)
        await segment(job.triton, clip.frames, frame_index, points, labels, masks, progress)
        masks.flush()
        await asyncio.to_thread(
            encode_masks,
            out_path,
            masks,
            clip.pts,
            clip.durations,
            source,
            info,
            params.preset,
            max_duration_s,
            clip.alpha,
        )
    if outcome.failed:
        return
    await store_and_complete(
        jobs,
        storage,
        record,
        out_path,
        "mask",
        preset,
        info.duration_s,
        clip.processed_duration_s,
        trimmed,
        clip.notes,
    )
