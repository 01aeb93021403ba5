"""Load shedding of the synchronous image endpoints (gateway/shedding.py): bounded work in
flight per process and per token, 429 with Retry-After in the background API's format at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import IMAGES, Stack

from gateway.errors import ApiError
from gateway.shedding import InFlight


def test_admission_bounds_total_and_per_token() -> None:
    slots = InFlight(max_total=3, max_per_owner=2)
    with slots.admit("a"), slots.admit("a"):
        with pytest.raises(ApiError) as refused, slots.admit("a"):
            pass
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
        with slots.admit("b"), pytest.raises(ApiError), slots.admit("c"):  # the process bound
            pass
    assert slots.total == 0 and not slots.per_owner
    with pytest.raises(RuntimeError), slots.admit("a"):
        raise RuntimeError  # a failing request gives its slot back
    assert slots.total == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def test_image_flood_from_one_token_is_shed_with_429(stack: Stack, http: aiohttp.ClientSession) -> None:
    image = next(iter(sorted(IMAGES.rglob("*.jpg")))).read_bytes()

    async def one() -> tuple[int, dict, dict, float]:
        form = aiohttp.FormData()
        form.add_field("file", image, filename="i.jpg", content_type="image/jpeg")
        started = time.perf_counter()
        async with http.post(
            f"{stack.url}/image/blur/v1", data=form, headers={"api_token": stack.token}
        ) as r:
            body = await r.read()
            took = time.perf_counter() - started
            payload = await r.json() if r.status == 429 else {}
            assert r.status != 200 or body.startswith(b"\x89PNG")
            return r.status, payload, dict(r.headers), took

    results = await asyncio.gather(*(one() for _ in range(8)))
    statuses = sorted(status for status, *_ in results)
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    assert set(statuses) <= {200, 429}
    for status, payload, headers, took in results:
        if status == 429:
            # the background family's one field, saying which bound (not a bare "Too Many Requests")
            assert set(payload) == {"message"} and headers["Retry-After"] == "1"
            assert "image requests" in payload["message"], payload
            assert took < 2.0  # answered at once, not after waiting behind the admitted ones
