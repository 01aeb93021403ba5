"""Metrics move after a real job: the gateway's /metrics (its own series and the workers'), and
Triton's metrics port; one grep for a job id follows it from the gateway to the worker."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import Stack
from PIL import Image
from prometheus_client.metrics import MetricWrapperBase

from common.settings import REPO_ROOT


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def _sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _check_dashboard(triton_text: str) -> None:
    """Every series docker/grafana/dashboards/matting.json plots is one the code declares (ours)
    or Triton exports (after a job)."""
    from gateway.metrics import REGISTRY
    from worker import metrics as worker_metrics

    dashboard = json.loads((REPO_ROOT / "docker" / "grafana" / "dashboards" / "matting.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    used = set(re.findall(r"\b((?:matting|nv)_[a-z_]+)", exprs))
    ours = {m.name for m in REGISTRY.collect()} | {
        m._name for m in vars(worker_metrics).values() if isinstance(m, MetricWrapperBase)
    }
    exported = {
        line.split("{")[0].split(" ")[0] for line in triton_text.splitlines() if line.startswith("nv_")
    }
    for name in used:
        base = re.sub(r"_(bucket|count|sum|total)$", "", name)
        assert base in ours or name in exported, name


async def _scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "text/plain"
        return await r.text()


async def test_metrics_move_after_a_job_and_logs_follow_it(
    stack: Stack, http: aiohttp.ClientSession, triton_settings: object
) -> None:
    gateway_url = f"{stack.url}/metrics"
    triton_url = f"http://127.0.0.1:{stack.settings.triton_metrics_port}/metrics"
    before, triton_before = await _scrape(http, gateway_url), await _scrape(http, triton_url)

    png = io.BytesIO()
    Image.effect_noise((320, 240), 60).convert("RGB").save(png, "PNG")
    form = aiohttp.FormData()
    form.add_field("file", png.getvalue(), filename="a.png", content_type="image/png")
    headers = {"api_token": stack.token, "X-Request-ID": "metrics-trace-1"}
    async with http.post(f"{stack.url}/image/hd/submit/v1", data=form, headers=headers) as r:
        assert r.status == 202
        job_id = (await r.json())["uuid"]
    for _ in range(600):
        async with http.get(f"{stack.url}/image/hd/result/{job_id}", headers=headers) as r:
            await r.read()
            if r.status == 200:
                break
        await asyncio.sleep(0.1)
    assert r.status == 200

    moved = {
        "submits": ("matting_http_requests_total", {"route": "/image/hd/submit/v1", "status": "202"}),
        "results": ("matting_http_requests_total", {"route": "/image/hd/result/{uuid}", "status": "200"}),
        "latency": ("matting_http_request_duration_seconds_count", {"route": "/image/hd/submit/v1"}),
        "jobs": ("matting_jobs_total", {"kind": "image_hd", "outcome": "completed"}),
        "duration": ("matting_job_duration_seconds_count", {"kind": "image_hd"}),
        "queue wait": ("matting_job_queue_wait_seconds_count", {"kind": "image_hd"}),
    }
    # The worker counts a job's end right after it stores the status the client just read: a
    # scrape may come between the two, so the series are read again for a few seconds.
    for _ in range(50):
        after, triton_after = await _scrape(http, gateway_url), await _scrape(http, triton_url)
        still = [
            what
            for what, (name, labels) in moved.items()
            if _sum(after, name, **labels) <= _sum(before, name, **labels)
        ]
        if not still:
            break
        await asyncio.sleep(0.1)
    assert not still, still
    assert "matting_http_requests_in_flight" in after and "matting_jobs_in_progress" in after
    success = "nv_inference_request_success"
    assert _sum(triton_after, success) > _sum(triton_before, success)
    assert "nv_cpu_utilization" in triton_after
    _check_dashboard(triton_after)

    # One grep: the gateway's lines of the submit carry the client's request id and name the job;
    # the worker's lines of the job carry both ids (arq's own lines name the job in their text).
    logs = stack.settings.data_dir / "logs"
    gateway_lines = [json.loads(x) for x in (logs / "gateway.log").read_text().splitlines() if job_id in x]
    worker_lines = [json.loads(x) for x in (logs / "worker-0.log").read_text().splitlines() if job_id in x]
    assert any(line.get("request_id") == "metrics-trace-1" for line in gateway_lines), gateway_lines
    ours = [line for line in worker_lines if line["logger"].startswith("worker")]  # not arq's own
    assert {"job started", "job ended"} <= {line["msg"] for line in ours}, worker_lines
    assert all(line["request_id"] == "metrics-trace-1" and line["job_id"] == job_id for line in ours)
