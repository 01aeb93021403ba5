"""arq job functions for video: `video_mask_job` (/foreground_mask) and `video_matte_job`
(/video/submit/v1). Thin: read the record, run the shared pipeline, store, complete or fail.

The worker's `job_function` wrapper marks the record processing, retries Triton outages, removes
the temp dir and the uploaded input when the job ends; these functions only decide what the
outcome means for the user. Safe to re-run: each run writes into a fresh temp dir, and storing
the result is an atomic rename.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from common.settings import Settings
from gateway.foreground import ForegroundModel
from gateway.jobs import JobRecord, JobStore
from gateway.pipeline import alpha as input_alpha
from gateway.pipeline.compose import Background, composite, fit_background, mask_frame
from gateway.pipeline.encode import preset_by_name
from gateway.pipeline.geometry import display_sar, display_size
from gateway.pipeline.infer import FrameResult
from gateway.pipeline.outcome import input_available, store_and_complete, user_facing_errors
from gateway.pipeline.probe import VideoInfo, probe
from gateway.pipeline.run import RenderFn, run_video
from gateway.storage import Storage
from gateway.triton import Triton

INPUT_NAME = "input"
BG_IMAGE_NAME = "background"


def input_path(storage: Storage, job_id: str) -> Path:
    """Where the gateway leaves a job's video for the worker (shared data dir)."""
    return storage.uploads_dir(job_id) / INPUT_NAME


def bg_image_path(storage: Storage, job_id: str) -> Path:
    return storage.uploads_dir(job_id) / BG_IMAGE_NAME


def _load_background(params: dict[str, Any], info: VideoInfo, image: Path) -> Background:
    color = params.get("bg_color")
    if color is not None:
        r, g, b = (int(c) for c in color)
        return Background(color=(r, g, b))
    if params.get("bg_image"):
        with Image.open(image) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        # frames are composed upright, so the image covers the frame as it is displayed
        width, height = display_size(info.width, info.height, info.rotation)
        sar = display_sar(info.sample_aspect_ratio, info.rotation)
        return Background(image=fit_background(rgb, width, height, sar))
    return Background()


async def _run(ctx: dict[str, Any], record: JobRecord, *, matte: bool) -> None:
    settings: Settings = ctx["settings"]
    jobs: JobStore = ctx["jobs"]
    storage: Storage = ctx["storage"]
    triton: Triton = ctx["triton"]
    params = record.params
    source = input_path(storage, record.id)
    preset = preset_by_name(params["preset"])
    max_duration_s: float | None = params.get("max_duration_s")
    if not await input_available(jobs, record, source):
        return
    async with user_facing_errors(jobs, record.id, "video") as outcome:
        info = await asyncio.to_thread(probe, source, max_side=settings.video_max_side)
        render: RenderFn
        if matte:
            background = await asyncio.to_thread(
                _load_background, params, info, bg_image_path(storage, record.id)
            )

            def render(result: FrameResult) -> np.ndarray:
                assert result.foreground is not None
                frame = result.frame
                fg = input_alpha.foreground_colour(result.foreground, frame.alpha, frame.colour)
                return composite(fg, input_alpha.times(result.alpha, frame.alpha), background)

        else:

            def render(result: FrameResult) -> np.ndarray:
                return mask_frame(input_alpha.times(result.alpha, result.frame.alpha))

        work = storage.new_temp_dir(record.id)
        out_path = work / f"output.{preset.extension}"

        async def progress(current: int, total: int | None) -> None:
            await jobs.set_progress(record.id, current, total)

        result = await run_video(
            triton=triton,
            info=info,
            input_path=source,
            output_path=out_path,
            preset=preset,
            render=render,
            foreground=matte,
            model=params.get("model", ForegroundModel.AUTO.value),
            frames_in_flight=settings.frames_in_flight,
            timeout_s=settings.triton_timeout_s,
            max_duration_s=max_duration_s,
            progress=progress,
        )
    if outcome.failed:
        return
    original = float(params.get("original_duration_s") or info.duration_s)
    trimmed = max_duration_s is not None and original > max_duration_s + 1e-3
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
    )


async def _job(ctx: dict[str, Any], job_id: str, *, matte: bool) -> None:
    jobs: JobStore = ctx["jobs"]
    record = await jobs.get(job_id)
    if record is None or record.done:
        return
    await _run(ctx, record, matte=matte)


async def video_mask_job(ctx: dict[str, Any], job_id: str) -> None:
    """POST /foreground_mask: the alpha as a white-on-black video in the requested preset."""
    await _job(ctx, job_id, matte=False)


async def video_matte_job(ctx: dict[str, Any], job_id: str) -> None:
    """POST /video/submit/v1: the foreground over a colour/image, or transparent (RGBA)."""
    await _job(ctx, job_id, matte=True)
