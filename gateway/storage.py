"""Results on local disk under settings.results_dir/<job_id>/, temp dirs, signed expiring links.

Extension point: when settings.object_store_url is set, results go to an object store through the
small `ObjectStore` protocol below (upload returns the public link reported as `upload_link`).
No backend ships in this repository: pass one to `Storage(settings, object_store=...)`; setting
OBJECT_STORE_URL without one is refused at start-up rather than silently kept on local disk.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

from common.compat import UTC
from common.settings import Settings

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ObjectStore(Protocol):
    async def upload(self, src: Path, key: str, media_type: str) -> str:
        """Store the file under `key`; return a link the client can download it from."""
        ...

    async def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class StoredResult:
    path: str  # local file (also kept when uploaded, until the janitor or a download removes it)
    media_type: str
    filename: str
    upload_link: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "path": self.path,
            "media_type": self.media_type,
            "filename": self.filename,
            "upload_link": self.upload_link,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> StoredResult:
        return cls(
            path=str(data["path"]),
            media_type=str(data["media_type"]),
            filename=str(data["filename"]),
            upload_link=data.get("upload_link"),
        )


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
    """Inputs written by the gateway (jobs' and the studio's), shared with the workers."""
    return settings.data_dir / "uploads"


class Storage:
    def __init__(self, settings: Settings, object_store: ObjectStore | None = None) -> None:
        if settings.object_store_url and object_store is None:
            raise RuntimeError(
                "OBJECT_STORE_URL is set but no object store backend is configured "
                "(see gateway/storage.py ObjectStore); unset it to keep results on local disk"
            )
        self.settings = settings
        self.object_store = object_store
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)

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
        """Inputs written by the gateway for a queued job; kept across re-runs, removed when the job
        ends (the worker's job wrapper does it) or by the janitor."""
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        path = self.uploads_root / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_uploads(self, job_id: str) -> None:
        if is_job_id(job_id):
            shutil.rmtree(self.uploads_root / job_id, ignore_errors=True)

    async def store(self, job_id: str, src: Path, filename: str, media_type: str) -> StoredResult:
        """Move `src` into place atomically: a reader sees no file or the whole file."""
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        name = safe_filename(filename)
        final = job_dir / name
        staging = job_dir / f".{name}.{os.getpid()}.partial"
        try:
            # shutil.move is a rename on one file system and a copy across them; the final
            # os.replace is always a same-directory rename, hence atomic.
            shutil.move(str(src), staging)
            os.replace(staging, final)
        finally:
            staging.unlink(missing_ok=True)
        link = None
        if self.object_store is not None:
            link = await self.object_store.upload(final, f"{job_id}/{name}", media_type)
        return StoredResult(str(final), media_type, name, link)

    def path_of(self, job_id: str, filename: str) -> Path | None:
        if not is_job_id(job_id):
            return None
        path = self.settings.results_dir / job_id / safe_filename(filename)
        return path if path.is_file() else None

    async def delete(self, job_id: str) -> None:
        if not is_job_id(job_id):
            return
        job_dir = self.settings.results_dir / job_id
        if self.object_store is not None and job_dir.is_dir():
            for item in job_dir.iterdir():
                await self.object_store.delete(f"{job_id}/{item.name}")
        shutil.rmtree(job_dir, ignore_errors=True)

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
