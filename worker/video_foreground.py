"""Jobs `foreground_mask` (POST /foreground_mask) and `video_matte` (POST /video/submit/v1): the
video's foreground as a mask video, or composited over a colour, an image or transparency.

Thin: run the shared video pipeline (gateway.video) with the kind's own render step, store,
complete or fail. The wrapper in worker.main marks the record processing, retries Triton outages,
removes the temp dir and the uploaded input when the job ends; these functions only decide what
the outcome means for the user. Safe to re-run: each run writes into a fresh temp dir, and storing
the result is an atomic rename.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from gateway.job_params import (
    TRIM_SLACK_S,
    ForegroundMaskParams,
    VideoMatteParams,
    background_image_path,
    input_path,
)
from gateway.jobs import JobRecord
from gateway.video import alpha as input_alpha
from gateway.video.compose import Background, composite, fit_background, mask_frame, opaque_background
from gateway.video.encode import preset_by_name
from gateway.video.geometry import display_sar, display_size
from gateway.video.infer import FrameResult
from gateway.video.probe import VideoInfo, probe
from gateway.video.run import RenderFn, run_video
from worker.context import JobContext
from worker.outcome import input_available, store_and_complete, user_facing_errors


async def mask(job: JobContext, record: JobRecord, params: ForegroundMaskParams) -> None:
    """The alpha as a white-on-black video in the requested preset."""

    def render(result: FrameResult) -> np.ndarray:
        return mask_frame(input_alpha.times(result.alpha, result.frame.alpha))

    # the 60 s limit the gateway checked on the probe, held again on the decoded frames
    limit_s = job.settings.video_max_duration_s
    await _run(job, record, params, lambda info: render, max_duration_s=None, max_s=limit_s, submitted_s=None)


async def matte(job: JobContext, record: JobRecord, params: VideoMatteParams) -> None:
    """The foreground over a colour or an image (RGB), or on transparency (RGBA)."""
    image = background_image_path(job.storage, record.id)

    def render_for(info: VideoInfo) -> RenderFn:
        background = _load_background(params, info, image)

        def render(result: FrameResult) -> np.ndarray:
            assert result.foreground is not None  # run_video(foreground=True) always returns it
            frame = result.frame
            fg = input_alpha.foreground_colour(result.foreground, frame.alpha, frame.colour)
            return composite(fg, input_alpha.times(result.alpha, frame.alpha), background)

        return render

    # The trim holds on the decoded frames even when the probe found the video short enough.
    trim_s = params.trim_s or params.max_duration_s or job.settings.video_submit_trim_s
    await _run(
        job,
        record,
        params,
        render_for,
        max_duration_s=trim_s,
        max_s=None,
        submitted_s=params.original_duration_s,
    )


def _load_background(params: VideoMatteParams, info: VideoInfo, image: Path) -> Background:
    """The background at the frame's display size: a colour, the uploaded image, or none."""
    if params.bg_color is not None:
        return Background(color=params.bg_color)
    if params.bg_image:
        with Image.open(image) as img:
            rgb = opaque_background(np.asarray(ImageOps.exif_transpose(img).convert("RGBA")))
        # frames are composed upright, so the image covers the frame as it is displayed
        width, height = display_size(info.width, info.height, info.rotation)
        sar = display_sar(info.sample_aspect_ratio, info.rotation)
        return Background(image=fit_background(rgb, width, height, sar))
    return Background()


async def _run(
    job: JobContext,
    record: JobRecord,
    params: ForegroundMaskParams | VideoMatteParams,
    render_for: Callable[[VideoInfo], RenderFn],
    *,
    max_duration_s: float | None,
    max_s: float | None,
    submitted_s: float | None,
) -> None:
    """Probe, stream through Triton, render, encode, store and complete (or record the failure).

    `render_for(info)` (run on a thread: it may load images) returns the per-frame render step;
    `max_duration_s`: the trim in seconds (None: whole video); `max_s`: refuse a longer video
    (None: no limit); `submitted_s`: the duration the gateway probed on submit, reported as the
    original one (None: probe it here). The trim is reported when it cut decoded frames."""
    jobs, storage = job.jobs, job.storage
    source = input_path(storage, record.id)
    preset = preset_by_name(params.preset)
    if not await input_available(jobs, record, source):
        return
    matte = isinstance(params, VideoMatteParams)
    async with user_facing_errors(jobs, record.id, "video") as outcome:
        info = await asyncio.to_thread(probe, source, max_side=job.settings.video_max_side)
        render = await asyncio.to_thread(render_for, info)
        work = storage.new_temp_dir(record.id)
        out_path = work / f"output.{preset.extension}"

        async def progress(current: int, total: int | None) -> None:
            await jobs.set_progress(record.id, current, total)

        result = await run_video(
            triton=job.triton,
            info=info,
            input_path=source,
            output_path=out_path,
            preset=preset,
            render=render,
            foreground=matte,
            model=params.model,
            frames_in_flight=job.settings.frames_in_flight,
            timeout_s=job.settings.triton_timeout_s,
            max_duration_s=max_duration_s,
            max_s=max_s,
            max_fps=job.settings.video_max_fps,
            progress=progress,
        )
    if outcome.failed:
        return
    original = max(submitted_s or 0.0, info.duration_s)
    trimmed = result.trimmed or (max_duration_s is not None and original > max_duration_s + TRIM_SLACK_S)
    await store_and_complete(
        jobs,
        storage,
        record,
        out_path,
        "processed" if matte else "mask",
        preset,
        original,
        result.processed_duration_s,
        trimmed,
        result.notes,
    )
