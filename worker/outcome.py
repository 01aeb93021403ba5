"""What a video job's end means for the user, shared by every video job (worker/video_foreground.py,
worker/keypoint_mask.py).

Each job decides how to make its output; how a finished or failed run is recorded is the same for
all of them: the user-facing errors of the pipeline become a failed record with a reason the user
can act on, and a finished output is stored and completed with the trim fields of the documents.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.jobs import JobRecord, JobStore
from gateway.storage import Storage
from gateway.triton import InferenceFailed
from gateway.video.encode import EncodeError, Preset
from gateway.video.probe import MediaError

log = logging.getLogger("worker.outcome")


@dataclass
class Outcome:
    failed: bool = False


async def input_available(jobs: JobStore, record: JobRecord, source: Path) -> bool:
    """The janitor or an operator may have removed the input while the job was queued."""
    if source.is_file():
        return True
    await jobs.fail(record.id, 410, "Input gone", "The input is no longer available; submit it again.")
    return False


def _out_of_space(exc: BaseException) -> bool:
    """Whether a disk-full error (ENOSPC) is anywhere in the exception's chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@asynccontextmanager
async def user_facing_errors(jobs: JobStore, job_id: str, model: str) -> AsyncIterator[Outcome]:
    """Record the pipeline's user-facing errors as a failed job (and swallow them: the job is
    over). Anything else propagates to the wrapper in worker.main, which retries or records a 500.

    `model` names the model in the InferenceFailed message ("video", "key-point")."""
    outcome = Outcome()
    try:
        yield outcome
    except MediaError as exc:
        outcome.failed = True
        await jobs.fail(job_id, exc.status, exc.message, exc.details)
    except EncodeError as exc:
        # the encoder's own text names library internals: logged for us, not shown to the user
        outcome.failed = True
        log.warning("encoding failed", extra={"job_id": job_id, "error": str(exc)})
        reason = (
            "The server ran out of disk space while writing the output video; retry later."
            if _out_of_space(exc)
            else "The output video could not be written."
        )
        await jobs.fail(job_id, 500, "Encoding failed", reason)
    except InferenceFailed as exc:
        outcome.failed = True
        log.warning("inference failed", extra={"job_id": job_id, "error": str(exc)})
        await jobs.fail(
            job_id, 500, "Inference failed", f"The {model} model could not process a frame; retry later."
        )


async def store_and_complete(
    jobs: JobStore,
    storage: Storage,
    record: JobRecord,
    output: Path,
    prefix: str,
    preset: Preset,
    original_s: float,
    processed_s: float,
    trimmed: bool,
    notes: Sequence[str] = (),
) -> None:
    """Store the result and complete the job; its `warning` says whether the video was trimmed
    and what else the decoder changed (`notes`: gateway.video.decode.timing_notes)."""
    trim = [f"Video was trimmed from {original_s:.2f}s to {processed_s:.2f}s"] if trimmed else []
    warnings = [*trim, *notes]
    stored = await storage.store(
        record.id, output, f"{prefix}_{record.id}.{preset.extension}", preset.media_type
    )
    await jobs.complete(
        record.id,
        stored,
        warning="; ".join(warnings) or None,
        original_duration=original_s,
        processed_duration=processed_s if trimmed else original_s,
    )
