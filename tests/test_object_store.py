"""gateway/storage.py with STORAGE=s3 against a real S3 server (SeaweedFS): inputs carried from one
host's data dir to another's, multipart results streamed back, links that expire, the janitor,
and a store that is down."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import S3Server

from common.settings import Settings
from devstack.processes import free_port
from gateway.object_store import S3Store, StoreUnavailable
from gateway.storage import ResultGone, Storage, upload_key

MiB = 1024 * 1024


def _settings(s3: S3Server, data_dir: Path, **changes: object) -> Settings:
    """A fresh bucket per test: the store creates it on first use."""
    base = Settings(data_dir=data_dir, signing_secret=b"k")
    return s3.settings(base, f"t-{uuid.uuid4().hex[:12]}", **changes)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


async def test_inputs_cross_data_dirs_and_results_stream_back(s3_server: S3Server, tmp_path: Path) -> None:
    gateway = Storage(_settings(s3_server, tmp_path / "gateway"))
    settings = gateway.settings.with_overrides(data_dir=tmp_path / "worker")
    worker = Storage(settings)
    try:
        assert await gateway.ready()  # creates the bucket
        job = str(uuid.uuid4())
        (gateway.uploads_dir(job) / "input").write_bytes(b"video bytes")
        await gateway.publish_inputs(job)
        assert not (gateway.uploads_root / job).exists()  # the gateway keeps no copy
        await worker.fetch_inputs(job)
        assert (worker.uploads_dir(job) / "input").read_bytes() == b"video bytes"

        # past the multipart threshold: three parts of 5 MiB, 5 MiB, 1 MiB
        payload = os.urandom(11 * MiB)
        src = worker.new_temp_dir(job) / "out.mp4"
        src.write_bytes(payload)
        result = await worker.store(job, src, "mask.mp4", "video/mp4")
        assert result.key == f"results/{job}/mask.mp4" and not src.exists()
        assert not (settings.results_dir / job).exists()
        async with gateway.open_result(job, result) as opened:
            assert opened.size == len(payload)
            got = b"".join([chunk async for chunk in opened.chunks])
        assert got == payload

        await worker.remove_uploads(job)
        assert not (worker.uploads_root / job).exists()
        assert await worker.object_store.list(upload_key(job)) == []  # type: ignore[union-attr]
        await gateway.delete(job)
        with pytest.raises(ResultGone):
            async with gateway.open_result(job, result):
                pass
    finally:
        await gateway.close()
        await worker.close()


async def test_presigned_links_expire(s3_server: S3Server, tmp_path: Path) -> None:
    storage = Storage(_settings(s3_server, tmp_path, s3_presigned_links=True, signed_link_ttl_s=2))
    try:
        await storage.start()
        job = str(uuid.uuid4())
        src = storage.new_temp_dir(job) / "r.png"
        src.write_bytes(b"png bytes")
        result = await storage.store(job, src, "r.png", "image/png")
        url, expires = await storage.result_link(job, result)
        assert url.startswith(s3_server.endpoint_url) and "X-Amz-Signature=" in url
        assert 0 < expires.timestamp() - time.time() <= 2
        assert await asyncio.to_thread(_get, url) == (200, b"png bytes")
        await asyncio.sleep(3.5)  # S3 expiry is to the second
        status, _ = await asyncio.to_thread(_get, url)
        assert status == 403
        tampered = url.replace(f"results/{job}", f"results/{uuid.uuid4()}")
        assert (await asyncio.to_thread(_get, tampered))[0] == 403
    finally:
        await storage.close()


async def test_janitor_sweeps_the_store(s3_server: S3Server, tmp_path: Path) -> None:
    storage = Storage(_settings(s3_server, tmp_path))
    try:
        await storage.start()
        job = str(uuid.uuid4())
        src = storage.new_temp_dir(job) / "r.bin"
        src.write_bytes(b"x")
        await storage.store(job, src, "r.bin", "application/octet-stream")
        (storage.uploads_dir(job) / "input").write_bytes(b"y")
        await storage.publish_inputs(job)
        assert await storage.sweep_store(result_ttl_s=3600, stale_work_s=3600) == 0
        await asyncio.sleep(1.1)
        assert await storage.sweep_store(result_ttl_s=3600, stale_work_s=0) == 1  # the input only
        assert await storage.sweep_store(result_ttl_s=0, stale_work_s=0) == 1
        assert await storage.object_store.list("") == []  # type: ignore[union-attr]
    finally:
        await storage.close()


async def test_a_store_that_is_down_is_unavailable_fast(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, signing_secret=b"k").with_overrides(
        storage_backend="s3",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    storage = Storage(settings)
    try:
        await storage.start()  # logged, not raised: the process still starts
        assert not await storage.ready()
        job = str(uuid.uuid4())
        (storage.uploads_dir(job) / "input").write_bytes(b"v")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await storage.publish_inputs(job)
        assert time.monotonic() - started < 10  # one retry, then the caller answers 503
        assert (storage.uploads_dir(job) / "input").exists()  # nothing lost on the way
        assert await storage.sweep_store(0, 0) == 0
    finally:
        await storage.close()


def test_credentials_never_show(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path).with_overrides(
        s3_access_key_id="AKIDSHOWN", s3_secret_access_key="very-secret-value"
    )
    assert "very-secret-value" not in repr(settings) and "AKIDSHOWN" not in repr(settings)
    assert "very-secret-value" not in repr(S3Store(settings).__dict__)


def test_s3_mode_needs_a_shared_signing_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STORAGE", "s3")
    monkeypatch.delenv("RESULT_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("RESULT_SIGNING_SECRET_FILE", raising=False)
    with pytest.raises(ValueError, match="RESULT_SIGNING_SECRET"):
        Settings.from_env()
    secret = tmp_path / "key"
    secret.write_text("shared-key\n")
    monkeypatch.setenv("RESULT_SIGNING_SECRET_FILE", str(secret))
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY_FILE", str(secret))
    settings = Settings.from_env()
    assert settings.signing_secret == b"shared-key" and settings.s3_secret_access_key == "shared-key"
    assert not (tmp_path / "signing.secret").exists()
