"""Where jobs' files live: uploads, temp dirs and results; signed expiring links.

Temp dirs are always local (`DATA_DIR/tmp`, one host's scratch space). Uploads and results are
local with STORAGE=local (one host, or several sharing DATA_DIR), and cross hosts through the S3
store with STORAGE=s3 (gateway/object_store.py), under the keys `uploads/<job_id>/<name>` and
`results/<job_id>/<name>`:

* the gateway writes an input to `uploads_dir(job_id)` and `publish_inputs` moves it to the store;
  the worker's job wrapper `fetch_inputs` into its own uploads dir; `remove_uploads` removes both;
* `store` moves a result into place (local) or uploads it (s3, multipart when large) and keeps no
  local copy; `open_result` streams it back from either; `delete` removes it;
* `result_link` is the gateway's HMAC-signed link, or with S3_PRESIGNED_LINKS a presigned link of
  the store itself (same expiry);
* `sweep_store` is the janitor's half for the store (results past RESULT_TTL_S, inputs of long-dead
  jobs); the local half is worker.main.remove_stale.

The extension point for another store is the `ObjectStore` protocol (what `S3Store` offers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

from common.compat import UTC
from common.settings import Settings
from gateway.object_store import ObjectMissing, ObjectReader, S3Store, StoredObject, StoreUnavailable

log = logging.getLogger("gateway.storage")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_LOCAL_CHUNK = 256 * 1024


class ObjectStore(Protocol):
    """What Storage needs of an object store; gateway.object_store.S3Store is the one shipped."""

    async def ensure_bucket(self) -> None: ...
    async def put_file(self, src: Path, key: str, media_type: str = ...) -> None: ...
    async def get_file(self, key: str, dest: Path) -> None: ...
    def open(self, key: str) -> contextlib.AbstractAsyncContextManager[ObjectReader]: ...
    async def list(self, prefix: str) -> list[StoredObject]: ...
    async def delete(self, keys: list[str]) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...
    async def presign(self, key: str, ttl_s: int, filename: str | None = None) -> str: ...
    async def close(self) -> None: ...


class ResultGone(Exception):
    """The result was removed (after a complete download, by the janitor) or never reached the store."""


@dataclass(frozen=True)
class StoredResult:
    path: str  # local file; "" when the result lives in the object store
    media_type: str
    filename: str
    upload_link: str | None = None  # a fixed link given by an integration; None: made per request
    key: str | None = None  # object-store key (STORAGE=s3)

    def to_dict(self) -> dict[str, str | None]:
        return {
            "path": self.path,
            "media_type": self.media_type,
            "filename": self.filename,
            "upload_link": self.upload_link,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> StoredResult:
        return cls(
            path=str(data["path"]),
            media_type=str(data["media_type"]),
            filename=str(data["filename"]),
            upload_link=data.get("upload_link"),
            key=data.get("key"),
        )


@dataclass
class OpenedResult:
    """A result ready to stream: `size` in bytes and its chunks, whichever backend holds it."""

    size: int
    chunks: AsyncIterator[bytes]


def is_job_id(value: str) -> bool:
    """Job ids are uuid4 strings; anything else never reaches the file system or Redis keys."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, TypeError):
        return False


def safe_filename(name: str) -> str:
    cleaned = _SAFE_NAME.sub("_", Path(name).name).strip("._")
    return cleaned or "result"


def uploads_root(settings: Settings) -> Path:
    """Inputs written by the gateway (jobs' and the studio's) on its own disk."""
    return settings.data_dir / "uploads"


def upload_key(job_id: str, name: str = "") -> str:
    return f"uploads/{job_id}/{name}"


def result_key(job_id: str, name: str = "") -> str:
    return f"results/{job_id}/{name}"


async def _local_chunks(handle: object) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, _LOCAL_CHUNK):  # type: ignore[attr-defined]
        yield chunk


class Storage:
    """One process' view of the files of jobs. `object_store`: the store of STORAGE=s3 (made from
    the settings when not given); None with STORAGE=local."""

    def __init__(self, settings: Settings, object_store: ObjectStore | None = None) -> None:
        if object_store is None and settings.storage_backend == "s3":
            object_store = S3Store(settings)
        self.settings = settings
        self.object_store = object_store
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        """Creates the bucket when missing. A store that is down now is logged, not fatal: requests
        that need it answer 503 until it is back, and /readyz says so."""
        if self.object_store is None:
            return
        try:
            await self.object_store.ensure_bucket()
        except StoreUnavailable as exc:
            log.warning("object store not available at start-up", extra={"error": str(exc)})

    async def ready(self) -> bool:
        """Whether the store answers (always True for local disk); creates a missing bucket."""
        if self.object_store is None:
            return True
        try:
            await self.object_store.ensure_bucket()
        except StoreUnavailable:
            return False
        return True

    async def close(self) -> None:
        if self.object_store is not None:
            await self.object_store.close()

    def _job_dir(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.settings.results_dir / job_id

    def new_temp_dir(self, job_id: str) -> Path:
        """A fresh, empty working dir for one run of a job (a re-run starts from scratch)."""
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        path = self.settings.tmp_dir / job_id
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def remove_temp_dir(self, job_id: str) -> None:
        if is_job_id(job_id):
            shutil.rmtree(self.settings.tmp_dir / job_id, ignore_errors=True)

    @property
    def uploads_root(self) -> Path:
        return uploads_root(self.settings)

    def uploads_dir(self, job_id: str) -> Path:
        """This host's copy of a queued job's inputs: written by the gateway, read by the worker
        (the same dir with STORAGE=local; with s3, publish_inputs / fetch_inputs carry it over)."""
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        path = self.uploads_root / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def publish_inputs(self, job_id: str) -> None:
        """Gateway, before enqueueing: with s3, uploads every input file of the job and drops the
        local copy. Raises StoreUnavailable (the submit answers 503; the caller removes the job)."""
        if self.object_store is None:
            return
        folder = self.uploads_dir(job_id)
        for item in sorted(folder.iterdir()):
            if item.is_file():
                await self.object_store.put_file(item, upload_key(job_id, item.name))
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def fetch_inputs(self, job_id: str) -> None:
        """Worker, before a run: with s3, downloads the job's inputs into this host's uploads dir
        (kept across re-runs on this host). Nothing found leaves the dir empty: the job then fails
        with its documented 410 "Input gone". Raises StoreUnavailable."""
        if self.object_store is None:
            return
        folder = self.uploads_dir(job_id)
        for item in await self.object_store.list(upload_key(job_id)):
            dest = folder / safe_filename(item.key.rsplit("/", 1)[-1])
            if not dest.is_file():
                with contextlib.suppress(ObjectMissing):
                    await self.object_store.get_file(item.key, dest)

    async def remove_uploads(self, job_id: str) -> None:
        """Removes a job's inputs here and in the store. A store that is down keeps its copy for
        the janitor (sweep_store) rather than failing the caller."""
        if not is_job_id(job_id):
            return
        await asyncio.to_thread(shutil.rmtree, self.uploads_root / job_id, True)
        if self.object_store is not None:
            try:
                await self.object_store.delete_prefix(upload_key(job_id))
            except StoreUnavailable:
                log.warning("inputs left in the store for the janitor", extra={"job_id": job_id})

    async def store(self, job_id: str, src: Path, filename: str, media_type: str) -> StoredResult:
        """Puts `src` in place as the job's result, atomically: a reader sees no result or all of
        it. Local: a same-directory rename. s3: one object (multipart when large), local copy
        removed. Raises StoreUnavailable (the worker retries the job)."""
        name = safe_filename(filename)
        if self.object_store is not None:
            key = result_key(job_id, name)
            await self.object_store.put_file(src, key, media_type)
            src.unlink(missing_ok=True)
            return StoredResult("", media_type, name, key=key)
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        final = job_dir / name
        staging = job_dir / f".{name}.{os.getpid()}.partial"
        try:
            # shutil.move is a rename on one file system and a copy across them; the final
            # os.replace is always a same-directory rename, hence atomic.
            shutil.move(str(src), staging)
            os.replace(staging, final)
        finally:
            staging.unlink(missing_ok=True)
        return StoredResult(str(final), media_type, name)

    def path_of(self, job_id: str, filename: str) -> Path | None:
        """The local file of a result (STORAGE=local), None when absent."""
        if not is_job_id(job_id):
            return None
        path = self.settings.results_dir / job_id / safe_filename(filename)
        return path if path.is_file() else None

    @contextlib.asynccontextmanager
    async def open_result(self, job_id: str, result: StoredResult) -> AsyncIterator[OpenedResult]:
        """The result, opened for streaming from wherever it lives. Raises ResultGone when it was
        removed; StoreUnavailable when the store cannot be read now."""
        if result.key is not None and self.object_store is not None:
            try:
                async with self.object_store.open(result.key) as reader:
                    yield OpenedResult(reader.size, reader.chunks())
            except ObjectMissing:
                raise ResultGone(job_id) from None
            return
        path = self.path_of(job_id, result.filename)
        try:
            # opened before anything is sent, so a concurrent download's delete cannot race us
            handle = path.open("rb") if path is not None else None
        except FileNotFoundError:
            handle = None
        if handle is None:
            raise ResultGone(job_id)
        with handle:
            yield OpenedResult(os.fstat(handle.fileno()).st_size, _local_chunks(handle))

    async def result_link(self, job_id: str, result: StoredResult) -> tuple[str, datetime]:
        """The link a client downloads the result from, and when it expires: a presigned store
        link with S3_PRESIGNED_LINKS (and an s3 result), else the gateway's signed link."""
        ttl = self.settings.signed_link_ttl_s
        if self.settings.s3_presigned_links and result.key is not None and self.object_store is not None:
            expires = int(time.time()) + ttl
            url = await self.object_store.presign(result.key, ttl, result.filename)
            return url, datetime.fromtimestamp(expires, tz=UTC)
        return self.signed_url(job_id, ttl)

    async def delete(self, job_id: str) -> None:
        """Removes the job's result, here and in the store. Raises StoreUnavailable."""
        if not is_job_id(job_id):
            return
        shutil.rmtree(self.settings.results_dir / job_id, ignore_errors=True)
        if self.object_store is not None:
            await self.object_store.delete_prefix(result_key(job_id))

    async def sweep_store(self, result_ttl_s: float, stale_work_s: float) -> int:
        """Janitor, s3 half: removes results older than `result_ttl_s` and inputs older than
        `stale_work_s` (seconds); returns how many objects went. A store that is down is skipped
        until the next round."""
        if self.object_store is None:
            return 0
        now = time.time()
        stale: list[str] = []
        try:
            for prefix, age in (("results/", result_ttl_s), ("uploads/", stale_work_s)):
                stale.extend(
                    item.key
                    for item in await self.object_store.list(prefix)
                    if item.last_modified.timestamp() < now - age
                )
            if stale:
                await self.object_store.delete(stale)
        except StoreUnavailable:
            log.warning("janitor skipped the object store this round")
            return 0
        return len(stale)

    # --- signed links ------------------------------------------------------------------------

    def _signature(self, job_id: str, expires: int) -> str:
        msg = f"{job_id}:{expires}".encode()
        return hmac.new(self.settings.signing_secret, msg, hashlib.sha256).hexdigest()

    def signed_url(self, job_id: str, ttl_s: int | None = None) -> tuple[str, datetime]:
        ttl = self.settings.signed_link_ttl_s if ttl_s is None else ttl_s
        expires = int(time.time()) + ttl
        query = urlencode({"expires": expires, "sig": self._signature(job_id, expires)})
        url = f"{self.settings.base_url}/results/{job_id}?{query}"
        return url, datetime.fromtimestamp(expires, tz=UTC)

    def verify(self, job_id: str, expires: str | int, sig: str) -> bool:
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            return False
        if expires_at < time.time() or not is_job_id(job_id):
            return False
        return hmac.compare_digest(self._signature(job_id, expires_at), str(sig))
