"""Many hosts, proved with network namespaces: Redis + SeaweedFS, tritonserver, the gateway and two
workers each on a host of their own (tests/netns.py), each with its own DATA_DIR, reaching each
other only over the 10.77.N.0/24 addresses of their veth ends. One job of each kind completes, and
killing the host of the worker running a video (all its processes, SIGKILL) loses nothing: the job
is taken over by the other worker once its lease (JOB_LEASE_S) runs out.

Skipped, with the reason, where the machine does not allow network namespaces."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from conftest import IMAGES, TEST_TOKEN, VIDEOS, require_models
from media import ClipSpec, make_clip
from netns import Host, NamespacesRefused, Network, require_namespaces
from PIL import Image

from common.settings import REPO_ROOT, Settings
from devstack.app_services import gateway_service, worker_service
from devstack.processes import Service
from devstack.redis_server import redis_service
from devstack.seaweedfs import seaweedfs_service
from devstack.tritonserver import triton_service

pytestmark = pytest.mark.timeout(420)

LEASE_S = 4  # a dead worker's job is taken over after about this (+ arq's 0.5 s poll)
PHOTO = IMAGES / "sod_bsds300" / "images" / "100098.jpg"
SLOW_CLIP = ClipSpec("multi-host-640.mp4", "libx264", width=640, height=360, duration_s=5.0)
MEDIA_PORT = 8099  # the clip server inside the gateway's host (URL inputs must be loopback)


@dataclass
class Cluster:
    net: Network
    gateway: Settings
    media_url: str
    workers: dict[str, tuple[Host, Service]]


def _on(host: Host, svc: Service) -> Service:
    svc.argv = host.argv(svc.argv)
    return svc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, video_clips: dict[str, Path]) -> Iterator[Cluster]:
    try:
        require_namespaces()
    except NamespacesRefused as exc:
        pytest.skip(f"network namespaces not permitted here: {exc}")
    require_models(REPO_ROOT / "model_repository")
    root = tmp_path_factory.mktemp("hosts")
    with Network() as net:
        store, triton, gw = net.add_host("store"), net.add_host("triton"), net.add_host("gw")
        w1, w2 = net.add_host("w1"), net.add_host("w2")
        key, secret, redis_password = "hosts-key", os.urandom(16).hex(), os.urandom(16).hex()
        common = Settings(
            gateway_host=gw.address,
            gateway_port=8080,
            triton_host=triton.address,
            redis_url=f"redis://:{redis_password}@{store.address}:6379/0",
            storage_backend="s3",
            s3_endpoint_url=f"http://{store.address}:8333",
            s3_access_key_id=key,
            s3_secret_access_key=secret,
        )
        env = {
            "API_TOKENS": TEST_TOKEN,
            "ALLOW_LOOPBACK_URLS": "true",
            "RESULT_SIGNING_SECRET": "hosts-signing-key",
            "JOB_LEASE_S": str(LEASE_S),
            "WORKER_METRICS_PORT": "9100",  # each worker host serves its own series
            "RATE_LIMIT_PER_MINUTE": "100000",
            "POLL_LIMIT_PER_MINUTE": "100000",
        }

        def data(name: str) -> Settings:
            return common.with_overrides(data_dir=root / name)

        clips = video_clips["h264_aac.mp4"].parent
        make_clip(VIDEOS / "01_dog.mp4", clips, SLOW_CLIP)
        media = Service(
            "media",
            gw.argv(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    str(MEDIA_PORT),
                    "-d",
                    str(clips),
                ]
            ),
            lambda: True,
            root / "media.log",
        )
        services = [
            _on(store, redis_service(6379, root / "store" / "redis", store.address, redis_password)),
            _on(store, seaweedfs_service(8333, root / "store" / "seaweedfs", key, secret, store.address)),
            _on(
                triton,
                triton_service(data("triton"), root / "triton" / "tritonserver.log", root / "backends"),
            ),
            _on(gw, gateway_service(data("gw"), root / "gw" / "gateway.log", env)),
            media,
        ]
        workers = {
            name: (host, _on(host, worker_service(data(name), 0, root / name / "worker.log", env)))
            for name, host in (("w1", w1), ("w2", w2))
        }
        started: list[Service] = []
        try:
            for group in (services, [svc for _, svc in workers.values()]):  # workers need Redis up
                for svc in group:
                    svc.start()
                    started.append(svc)
                for svc in group:
                    svc.wait_ready(300)
            yield Cluster(
                net, common.with_overrides(data_dir=root / "gw"), f"http://127.0.0.1:{MEDIA_PORT}", workers
            )
        finally:
            for svc in reversed(started):
                svc.stop(timeout_s=10)


def _starts(cluster: Cluster, job_id: str) -> list[tuple[float, str]]:
    """(unix time, worker host) of every try of `job_id`, in order, from the workers' logs."""
    seen: list[tuple[float, str]] = []
    for name, (_, svc) in cluster.workers.items():
        for line in svc.log_path.read_text().splitlines():
            if line.startswith("{") and job_id in line and '"job started"' in line:
                seen.append((json.loads(line)["ts"], name))
    return sorted(seen)


def _started_by(cluster: Cluster, job_id: str) -> list[str]:
    return [name for _, name in _starts(cluster, job_id)]


def _start_times(cluster: Cluster, job_id: str) -> list[float]:
    return [ts for ts, _ in _starts(cluster, job_id)]


def _form(data: bytes, name: str, ctype: str, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=ctype)
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def _poll(http: aiohttp.ClientSession, url: str, timeout_s: float = 240) -> tuple[int, bytes]:
    """GET `url` until it is no longer a 202 (background API) / queued or processing (status)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get(url) as r:
            body = await r.read()
            if r.status != 202 and not (
                r.content_type == "application/json"
                and json.loads(body).get("status") in ("queued", "processing")
            ):
                return r.status, body
        await asyncio.sleep(0.3)
    raise AssertionError(f"{url} not done in {timeout_s}s")


async def test_jobs_of_every_kind_survive_a_dead_worker_host(
    cluster: Cluster, video_clips: dict[str, Path]
) -> None:
    url = cluster.gateway.base_url
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120), headers={"api_token": TEST_TOKEN}
    ) as http:
        # a mask video long enough to be killed in the middle of: 5 s at 640x360
        slow = f"{cluster.media_url}/{SLOW_CLIP.name}"
        async with http.post(f"{url}/foreground_mask", json={"video": slow, "model": "rvm"}) as r:
            long_job = (await r.json())["request_id"]
            assert r.status == 202
        deadline = time.monotonic() + 120
        while True:  # wait until it runs on some worker and has made progress
            async with http.get(f"{url}/status/{long_job}") as r:
                document = await r.json()
            assert document["status"] in ("queued", "processing"), f"finished before the kill: {document}"
            runners = _started_by(cluster, long_job)
            if runners and (document.get("current_frame") or 0) >= 3:
                break
            assert time.monotonic() < deadline, "the long job never started"
            await asyncio.sleep(0.1)
        victim = runners[0]
        host, _ = cluster.workers[victim]
        assert host.kill_all()  # the whole host goes: worker, its metrics server, everything
        killed_at, killed_wall = time.monotonic(), time.time()
        survivor = next(name for name in cluster.workers if name != victim)

        clip = f"{cluster.media_url}/h264_aac.mp4"
        short = video_clips["h264_aac.mp4"].read_bytes()
        form = _form(short, "clip.mp4", "video/mp4", bg_color="0,255,0", model="rvm")
        async with http.post(f"{url}/video/submit/v1", data=form) as r:
            video = await r.json()
            assert r.status == 202, video
        points = {"video": clip, "key_points": [{"x": 160, "y": 90, "type": "positive"}]}
        async with http.post(f"{url}/mask_by_key_points", json=points) as r:
            keypoints = await r.json()
            assert r.status == 202, keypoints
        photo = io.BytesIO()
        Image.open(PHOTO).convert("RGB").save(photo, "JPEG")
        form = _form(photo.getvalue(), "p.jpg", "image/jpeg", operation="matte")
        async with http.post(f"{url}/image/hd/submit/v1", data=form) as r:
            hd = await r.json()
            assert r.status == 202, hd

        # the killed job: taken over by the survivor once the lease ran out, finished there
        status, body = await _poll(http, f"{url}/status/{long_job}")
        document = json.loads(body)
        assert document["status"] == "completed", document
        assert _started_by(cluster, long_job) == [victim, survivor]
        finished_s = time.monotonic() - killed_at
        taken_over_s = _start_times(cluster, long_job)[-1] - killed_wall
        print(f"killed job taken over {taken_over_s:.1f}s and finished {finished_s:.1f}s after its host died")
        assert taken_over_s < LEASE_S + 10  # the lease and arq's poll (8.5 s measured on a loaded machine)
        async with http.get(document["mask_url"]) as r:
            assert r.status == 200 and len(await r.read()) > 10_000

        status, body = await _poll(http, f"{url}/video/result/{video['uuid']}")
        assert status == 200 and len(body) > 10_000, body[:200]
        status, body = await _poll(http, f"{url}/status/{keypoints['request_id']}")
        document = json.loads(body)
        assert document["status"] == "completed", document
        async with http.get(document["mask_url"]) as r:
            assert r.status == 200 and len(await r.read()) > 1000
        status, body = await _poll(http, f"{url}/image/hd/result/{hd['uuid']}")
        assert status == 200 and body.startswith(b"\x89PNG")
        for job_id in (video["uuid"], keypoints["request_id"], hd["uuid"]):
            assert _started_by(cluster, job_id) == [survivor]

        # the survivor's own metrics endpoint counts what it finished
        survivor_host, _ = cluster.workers[survivor]
        async with http.get(f"http://{survivor_host.address}:9100/metrics") as r:
            text = await r.text()
        assert 'matting_jobs_total{kind="foreground_mask",outcome="completed"} 1.0' in text
