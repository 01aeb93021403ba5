"""The S3 object store (STORAGE=s3): aiobotocore on the gateway's and the workers' event loop.

Any S3-compatible server works (AWS S3, MinIO, Ceph, SeaweedFS: the development and test server,
devstack/seaweedfs.py). Every failure to reach or use the store becomes `StoreUnavailable` (a
`ServiceUnavailable`: the gateway answers 503, the worker retries and then fails the job with a
clear message); a missing object is `ObjectMissing`. Credentials stay inside botocore: nothing
here logs or formats them.

aiobotocore is imported when the first client is made, so a STORAGE=local worker loads no aiohttp
at all (tests/test_layering.py); with STORAGE=s3 the worker runs aiohttp's *client* under
aiobotocore, never the web application. aiobotocore turns aiohttp's errors into botocore's, which
is why only BotoCoreError and OSError are caught here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from common.settings import Settings
from gateway.unavailable import ServiceUnavailable

log = logging.getLogger("gateway.object_store")

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_MISSING_BUCKET = {"NoSuchBucket"}


class StoreUnavailable(ServiceUnavailable):
    """The object store cannot be reached or refused the call (outage, credentials, throttling)."""


class ObjectMissing(Exception):
    """No object under the key (removed after a download, by the janitor, or never written)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int  # bytes
    last_modified: datetime  # timezone-aware, the store's clock


@dataclass
class ObjectReader:
    """An opened object: `size` in bytes, `chunks()` yields its bytes in order (at most `chunk`)."""

    size: int
    _body: Any
    chunk: int = 256 * 1024

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while data := await self._body.read(self.chunk):
                yield data
        except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:  # 3.10: not the builtin one
            raise StoreUnavailable(f"object store read failed: {type(exc).__name__}") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """One bucket of an S3 store: files up (multipart past a threshold), down, streamed, listed,
    deleted, presigned. The client is made on first use, on the running event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._signer: Any = None
        self._lock = asyncio.Lock()

    def _client_args(self, endpoint: str) -> dict[str, Any]:
        s = self.settings
        args: dict[str, Any] = {
            "region_name": s.s3_region,
            "config": Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},  # bucket in the path: any endpoint, no DNS names
                connect_timeout=min(5.0, s.s3_timeout_s),
                read_timeout=s.s3_timeout_s,
                retries={"mode": "standard", "max_attempts": 2},  # one retry: an outage is a fast 503
            ),
        }
        if endpoint:
            args["endpoint_url"] = endpoint
        if s.s3_access_key_id and s.s3_secret_access_key:
            args["aws_access_key_id"] = s.s3_access_key_id
            args["aws_secret_access_key"] = s.s3_secret_access_key
        return args

    async def _get(self) -> Any:
        async with self._lock:
            if self._client is None:
                from aiobotocore.session import get_session  # lazily: see the module doc

                session = get_session()
                s = self.settings
                self._client = await self._stack.enter_async_context(
                    session.create_client("s3", **self._client_args(s.s3_endpoint_url))
                )
                public = s.s3_public_endpoint_url or s.s3_endpoint_url
                self._signer = (
                    self._client
                    if public == s.s3_endpoint_url
                    else await self._stack.enter_async_context(
                        session.create_client("s3", **self._client_args(public))
                    )
                )
            return self._client

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = self._signer = None

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[Any]:
        """The client, with every store failure turned into StoreUnavailable / ObjectMissing."""
        try:
            yield await self._get()
        except ClientError as exc:
            code = _code(exc)
            if code in _NOT_FOUND:
                raise ObjectMissing(what) from None
            log.warning("object store refused %s", what, extra={"code": code})
            raise StoreUnavailable(f"object store refused {what}: {code}") from None
        except (BotoCoreError, asyncio.TimeoutError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):  # a local file, not the store
                raise
            log.warning("object store unreachable for %s", what, extra={"error": type(exc).__name__})
            raise StoreUnavailable(f"object store unreachable: {type(exc).__name__}") from None

    async def ensure_bucket(self) -> None:
        """Creates the bucket when it does not exist (a fresh development server, a new deployment)."""
        async with self._call("bucket check") as client:
            try:
                await client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND | _MISSING_BUCKET:
                    raise
            try:
                await client.create_bucket(Bucket=self.bucket, **self._location())
            except ClientError as exc:
                if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise
            log.info("bucket created", extra={"bucket": self.bucket})

    def _location(self) -> dict[str, Any]:
        region = self.settings.s3_region
        # us-east-1 is S3's default and refuses an explicit LocationConstraint
        return {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}

    async def put_file(self, src: Path, key: str, media_type: str = "application/octet-stream") -> None:
        """Uploads `src` under `key` (a single PUT up to the multipart threshold, parts past it);
        a failed multipart upload is aborted, so no half object stays behind. Raises
        StoreUnavailable; FileNotFoundError when `src` is missing."""
        size = src.stat().st_size
        if size <= self.settings.s3_multipart_threshold_bytes:
            data = await asyncio.to_thread(src.read_bytes)
            async with self._call(f"upload of {key}") as client:
                await client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type)
            return
        async with self._call(f"multipart upload of {key}") as client:
            started = await client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=media_type
            )
            upload_id = started["UploadId"]
            try:
                parts = await self._upload_parts(client, src, key, upload_id)
                await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                raise

    async def _upload_parts(self, client: Any, src: Path, key: str, upload_id: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        part_bytes = max(5 * 1024 * 1024, self.settings.s3_part_bytes)
        with src.open("rb") as handle:
            number = 1
            while data := await asyncio.to_thread(handle.read, part_bytes):
                answer = await client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                number += 1
        return parts

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[ObjectReader]:
        """The object under `key`, streamed. Raises ObjectMissing, StoreUnavailable."""
        async with self._call(f"download of {key}") as client:
            answer = await client.get_object(Bucket=self.bucket, Key=key)
        body = answer["Body"]
        try:
            yield ObjectReader(int(answer["ContentLength"]), body)
        finally:
            body.close()

    async def get_file(self, key: str, dest: Path) -> None:
        """Downloads `key` to `dest` (written beside it, then renamed: never a partial `dest`)."""
        partial = dest.with_name(f".{dest.name}.partial")
        try:
            async with self.open(key) as reader:
                with partial.open("wb") as out:
                    async for chunk in reader.chunks():
                        await asyncio.to_thread(out.write, chunk)
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)

    async def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with `prefix`."""
        found: list[StoredObject] = []
        async with self._call(f"listing of {prefix}") as client:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found.extend(
                    StoredObject(item["Key"], int(item["Size"]), item["LastModified"])
                    for item in page.get("Contents", [])
                )
        return found

    async def delete(self, keys: list[str]) -> None:
        """Removes `keys` (absent ones are no error)."""
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            async with self._call("delete") as client:
                await client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    async def delete_prefix(self, prefix: str) -> None:
        keys = [item.key for item in await self.list(prefix)]
        if keys:
            await self.delete(keys)

    async def presign(self, key: str, ttl_s: int, filename: str | None = None) -> str:
        """A GET link to `key` valid for `ttl_s` seconds, on the public endpoint. Signing is local:
        nothing is sent to the store."""
        await self._get()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = await self._signer.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_s)
        return url
