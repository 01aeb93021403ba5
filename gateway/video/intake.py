"""Download a video URL into a job's upload dir and probe it, before the job is queued.

Shared by the URL-driven endpoints (/foreground_mask, /mask_by_key_points) so the documented
413/415/422 answers come back on the request itself instead of as a failed job later.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from common.settings import Settings
from gateway.fetch import DownloadTooLarge, FetchError, fetch_to_file
from gateway.studio_uploads import local_file
from gateway.video.probe import MediaError, VideoInfo, probe


async def fetch_and_probe(
    url: str, dest: Path, settings: Settings, *, max_duration_s: float | None
) -> VideoInfo:
    """`dest` holds the video afterwards; raises MediaError (the file removed) when refused.
    A studio upload link of this service is copied from disk, not downloaded (gateway/studio_uploads.py)."""
    try:
        if (own := local_file(url, settings)) is not None:
            await asyncio.to_thread(shutil.copyfile, own, dest)
        else:
            await fetch_to_file(url, dest, settings)
    except FetchError as exc:
        status = 413 if isinstance(exc, DownloadTooLarge) else 400
        raise MediaError(status, "Video download failed", exc.reason) from None
    try:
        return await asyncio.to_thread(
            probe, dest, max_side=settings.video_max_side, max_duration_s=max_duration_s
        )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
