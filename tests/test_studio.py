"""The studio: POST /mask_by_key_points/preview, /studio/uploads, and GET /studio in a real browser.

Real stack (gateway, worker, Redis, tritonserver) and Debian's Chromium through selenium. The clip
is cut here from the real 01_dog.mp4 (frames 40-75 at 320x180: the dog runs right, in the frame
throughout), never stored in the repository.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
import pytest
from browser import headless_chromium
from conftest import SHARED, VIDEOS, Stack, mask_error
from media import serve
from PIL import Image

SIZE = (320, 180)
FIRST, LAST = 40, 75
DOG = (175, 108)  # the dog's back on the clip's frame 0 (frame 40 of 01_dog.mp4), at 320x180
SKY = (10, 10)  # background, far from the dog
HUNT = SHARED / "hunt"


def _cut_dog_clip(dest: Path) -> Path:
    with av.open(str(VIDEOS / "01_dog.mp4")) as container:
        frames = [
            cv2.resize(frame.to_ndarray(format="rgb24"), SIZE, interpolation=cv2.INTER_AREA)
            for index, frame in enumerate(container.decode(video=0))
            if FIRST <= index <= LAST
        ]
    with av.open(str(dest), mode="w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dest


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("studio")
    clip = _cut_dog_clip(root / "dog.mp4")
    (root / "not-a-video.mp4").write_bytes(b"this is a text file, not a video\n" * 64)
    shutil.copy(HUNT / "rot90_tagged.mp4", root / "rot90.mp4")
    with serve(root) as base:
        yield {"root": root, "clip": clip, "url": base}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


async def _preview(http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(
        f"{stack.url}/mask_by_key_points/preview", json=body, headers={"api_token": stack.token}
    ) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        return await r.json()


async def test_preview_masks_the_object_under_the_point(
    stack: Stack, http: aiohttp.ClientSession, media: dict[str, Any]
) -> None:
    video = f"{media['url']}/dog.mp4"
    point = {"x": DOG[0], "y": DOG[1], "type": "positive"}
    started = time.perf_counter()
    answer = await _preview(http, stack, {"video": video, "frame_index": 0, "key_points": [point]})
    took = time.perf_counter() - started
    print(f"\npreview 320x180 frame 0: {took * 1000:.0f} ms (model {answer['inference_ms']} ms)")
    assert (answer["width"], answer["height"]) == SIZE and answer["frame_index"] == 0
    mask = _png(answer["mask_png"])
    assert mask.shape == (SIZE[1], SIZE[0]) and set(np.unique(mask)) <= {0, 255}
    assert mask[DOG[1], DOG[0]] == 255 and mask[SKY[1], SKY[0]] == 0
    assert 0.01 < (mask > 0).mean() < 0.4  # the dog, not the frame
    frame = _png(answer["frame_jpeg"])
    assert frame.shape == (SIZE[1], SIZE[0], 3)
    with av.open(str(media["clip"])) as c:
        first = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    assert np.abs(frame.astype(int) - first).mean() < 4  # the job's frame, not another one

    # No key points: the frame only (what the page shows while scrubbing).
    started = time.perf_counter()
    later = await _preview(http, stack, {"video": video, "frame_index": 30, "key_points": []})
    print(f"frame-only preview, frame 30: {(time.perf_counter() - started) * 1000:.0f} ms")
    assert later["mask_png"] is None and later["frame_index"] == 30
    assert np.abs(_png(later["frame_jpeg"]).astype(int) - frame).mean() > 4


async def test_preview_frames_are_upright(
    stack: Stack, http: aiohttp.ClientSession, media: dict[str, Any]
) -> None:
    answer = await _preview(http, stack, {"video": f"{media['url']}/rot90.mp4", "key_points": []})
    assert (answer["width"], answer["height"]) == (640, 360)
    assert _png(answer["frame_jpeg"]).shape == (360, 640, 3)


async def test_preview_errors(stack: Stack, http: aiohttp.ClientSession, media: dict[str, Any]) -> None:
    url = f"{stack.url}/mask_by_key_points/preview"
    scratch_before = set(stack.settings.tmp_dir.iterdir())
    auth = {"api_token": stack.token}
    video = f"{media['url']}/dog.mp4"
    frames = LAST - FIRST + 1

    async def refused(body: Any, headers: dict[str, str] = auth, **kw: Any) -> tuple[int, str]:
        status, err = await mask_error(http, "POST", url, json=body, headers=headers, **kw)
        return status, err["error"]["details"]

    point = {"x": 10, "y": 10, "type": "positive"}
    assert (await refused({"video": video, "key_points": [point]}, headers={}))[0] == 403
    status, details = await refused({"video": video, "frame_index": frames, "key_points": [point]})
    assert status == 422 and f"frame_index {frames}" in details and f"0..{frames - 1}" in details
    outside = {"x": SIZE[0], "y": 5, "type": "positive"}
    status, details = await refused({"video": video, "key_points": [outside]})
    assert status == 422 and "outside the 320x180 frame" in details
    status, details = await refused({"video": video, "key_points": [{"x": 5, "y": 5, "type": "negative"}]})
    assert status == 422 and "positive" in details
    status, details = await refused({"video": f"{media['url']}/not-a-video.mp4", "key_points": [point]})
    assert status in (400, 415) and details
    status, details = await refused({"video": f"{media['url']}/missing/x.mp4", "key_points": [point]})
    assert status == 400 and "404" in details
    status, _ = await refused({"key_points": [point]})
    assert status == 422
    status, _ = await refused(None, data=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert status == 400
    status, _ = await refused(None, data=b"x", headers={**auth, "Content-Type": "text/plain"})
    assert status == 415
    # nothing of a refused preview is left behind
    assert set(stack.settings.tmp_dir.iterdir()) <= scratch_before


async def test_previews_are_shed_like_image_requests(
    stack: Stack, http: aiohttp.ClientSession, media: dict[str, Any]
) -> None:
    """Synchronous model work, admitted like a photo: beyond IMAGE_MAX_IN_FLIGHT (1 per process)
    at once, 429 at once, in the mask API's format with Retry-After; the admitted ones are
    answered."""
    point = {"x": DOG[0], "y": DOG[1], "type": "positive"}
    body = {"video": f"{media['url']}/dog.mp4", "key_points": [point]}

    async def one() -> tuple[int, dict[str, Any], str | None]:
        async with http.post(
            f"{stack.url}/mask_by_key_points/preview", json=body, headers={"api_token": stack.token}
        ) as r:
            return r.status, await r.json(), r.headers.get("Retry-After")

    answers = await asyncio.gather(*(one() for _ in range(4)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses.count(200) >= 1 and 429 in statuses and set(statuses) <= {200, 429}, statuses
    for status, answer, retry_after in answers:
        if status == 429:
            assert answer["error"]["code"] == 429 and "image requests" in answer["error"]["details"]
            assert retry_after is not None and set(answer) == {"error", "request_id"}


async def test_uploads_give_a_signed_link_the_mask_api_takes(
    stack: Stack, http: aiohttp.ClientSession, media: dict[str, Any]
) -> None:
    auth = {"api_token": stack.token}
    uploads = stack.settings.data_dir / "uploads"
    before = set(uploads.iterdir()) if uploads.is_dir() else set()
    form = aiohttp.FormData()
    form.add_field("file", media["clip"].read_bytes(), filename="dog.mp4", content_type="video/mp4")
    async with http.post(f"{stack.url}/studio/uploads", data=form, headers=auth) as r:
        assert r.status == 201, await r.text()
        up = await r.json()
    frames = LAST - FIRST + 1
    assert (up["width"], up["height"], up["frame_count"], up["needs_auto_trim"]) == (*SIZE, frames, False)
    async with http.get(up["video"]) as r:  # no token: the signature is the credential
        assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
        assert await r.read() == media["clip"].read_bytes()
    tampered = up["video"].replace("sig=", "sig=0")
    assert (await mask_error(http, "GET", tampered))[0] == 403
    # the link is a video URL for the preview and the jobs (copied from disk, not downloaded)
    answer = await _preview(
        http, stack, {"video": up["video"], "key_points": [{"x": DOG[0], "y": DOG[1], "type": "positive"}]}
    )
    assert _png(answer["mask_png"])[DOG[1], DOG[0]] == 255

    form = aiohttp.FormData()
    form.add_field("video", f"{media['url']}/dog.mp4")
    async with http.post(f"{stack.url}/studio/uploads", data=form, headers=auth) as r:
        assert r.status == 201 and (await r.json())["frame_count"] == frames

    async def upload_refused(data: Any, headers: dict[str, str] = auth) -> tuple[int, str]:
        status, err = await mask_error(
            http, "POST", f"{stack.url}/studio/uploads", data=data, headers=headers
        )
        return status, err["error"]["details"]

    bad = aiohttp.FormData()
    bad.add_field("file", b"not a video" * 100, filename="x.mp4", content_type="video/mp4")
    assert (await upload_refused(bad))[0] in (400, 415)
    assert (await upload_refused(b"{}", {**auth, "Content-Type": "application/json"}))[0] == 415
    empty = aiohttp.FormData()
    empty.add_field("other", "x")
    assert (await upload_refused(empty))[0] == 422
    assert (await upload_refused(aiohttp.FormData({"video": "x"}), {}))[0] == 403
    leftovers = [p for p in set(uploads.iterdir()) - before if not (p / "media_type").exists()]
    assert not leftovers, "a refused upload left its directory behind"


async def test_page_headers(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.url}/studio") as r:
        assert r.status == 200 and r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        html = await r.text()
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    # no inline script, nothing from another origin (no CDN)
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    assert all(link.startswith(("/", "#")) for link in re.findall(r'(?:src|href)="([^"]*)"', html))
    async with http.get(f"{stack.url}/studio/static/studio.js") as r:
        assert r.status == 200 and r.content_type == "text/javascript"
    assert (await mask_error(http, "GET", f"{stack.url}/studio/static/secret.py"))[0] == 404


# --- the page in a real browser -----------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chromium("--autoplay-policy=no-user-gesture-required", "--window-size=1100,1400") as chrome:
        yield chrome


def test_studio_page_end_to_end(stack: Stack, media: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    """Token, upload, a click on the dog, its preview overlay, the job, the mask video playing."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(f"{stack.url}/studio")
    browser.find_element(By.ID, "token").send_keys(stack.token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    assert browser.execute_script("return sessionStorage.getItem('matting.api_token')") == stack.token
    assert browser.execute_script("return document.cookie") == ""
    browser.find_element(By.ID, "file").send_keys(str(media["clip"]))
    browser.find_element(By.CSS_SELECTOR, "#open-form button").click()
    status = browser.find_element(By.ID, "preview-status")
    wait.until(lambda _: status.get_attribute("data-frame") == "0")  # the frame is shown

    canvas = browser.find_element(By.ID, "frame-canvas")
    rect = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", canvas)
    scale = rect["width"] / SIZE[0]
    offset_x = (DOG[0] + 0.5) * scale - rect["width"] / 2
    offset_y = (DOG[1] + 0.5) * scale - rect["height"] / 2
    clicked = time.perf_counter()
    ActionChains(browser).move_to_element_with_offset(canvas, int(offset_x), int(offset_y)).click().perform()
    wait.until(
        lambda _: status.get_attribute("data-mask") == "yes" and status.get_attribute("data-points") == "1"
    )
    print(f"\nclick to overlay in the browser: {(time.perf_counter() - clicked) * 1000:.0f} ms")
    assert browser.find_elements(By.CSS_SELECTOR, "#dots .dot.positive")
    overlay_alpha = (
        "const c = document.getElementById('mask-canvas').getContext('2d');"
        "return c.getImageData(arguments[0], arguments[1], 1, 1).data[3];"
    )
    assert browser.execute_script(overlay_alpha, *DOG) > 0  # the dog under the point is tinted
    assert browser.execute_script(overlay_alpha, *SKY) == 0  # the background is not

    # A negative point by keyboard, then removed again with its button: the list follows.
    browser.execute_script("document.getElementById('stage').focus()")
    ActionChains(browser).send_keys("n").send_keys(Keys.ENTER).perform()  # at the cross: the centre
    wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, "#dots .dot.negative")) == 1)
    browser.find_element(By.CSS_SELECTOR, "#dots .dot.negative").click()
    wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, "#points li")) == 1)
    wait.until(lambda _: status.get_attribute("data-busy") == "no")
    assert status.get_attribute("data-points") == "1" and status.get_attribute("data-mask") == "yes"
    assert browser.execute_script(overlay_alpha, *DOG) > 0

    if os.environ.get("STUDIO_SCREENSHOT"):
        browser.save_screenshot(os.environ["STUDIO_SCREENSHOT"])
    # A phone's width: one column, nothing wider than the screen, the frame still fully visible.
    browser.set_window_size(390, 1400)
    wide = browser.execute_script(
        "return [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
        ".map(e => e.tagName + '#' + e.id + '.' + e.className)"
    )
    assert wide == [], wide
    frame_width = browser.execute_script("return arguments[0].getBoundingClientRect().width", canvas)
    assert 300 <= frame_width <= 390
    if os.environ.get("STUDIO_SCREENSHOT"):
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(os.environ["STUDIO_SCREENSHOT"].replace(".png", "-phone.png"))
    browser.set_window_size(1100, 1400)

    Select(browser.find_element(By.ID, "kp-preset")).select_by_value("webm_vp9")
    browser.find_element(By.ID, "kp-submit").click()
    job = browser.find_element(By.ID, "job-status")
    WebDriverWait(browser, 240).until(lambda _: job.get_attribute("data-state") in ("completed", "failed"))
    assert job.get_attribute("data-state") == "completed", browser.find_element(By.ID, "error").text
    result = browser.find_element(By.ID, "result-video")
    wait.until(lambda _: browser.execute_script("return arguments[0].readyState", result) >= 2)
    assert browser.execute_script(
        "return [arguments[0].videoWidth, arguments[0].videoHeight]", result
    ) == list(SIZE)
    assert "/results/" in result.get_attribute("src")
    source = browser.find_element(By.ID, "input-video")
    wait.until(lambda _: browser.execute_script("return arguments[0].readyState", source) >= 1)
    assert browser.find_element(By.ID, "error").text == ""
    if os.environ.get("STUDIO_SCREENSHOT"):
        browser.execute_script("document.getElementById('jobs').scrollIntoView()")
        browser.save_screenshot(os.environ["STUDIO_SCREENSHOT"].replace(".png", "-jobs.png"))


@pytest.mark.parametrize(
    "url",
    ["HTTP://", "http://", "http://:99999/x", "http://[::1", "", "x", "ftp://127.0.0.1/studio/uploads/"],
)
def test_only_our_valid_upload_links_are_read_from_disk(url: str, tmp_path: Path) -> None:
    """A malformed URL is never ours (the fetch then says what is wrong with it): no exception."""
    from common.settings import Settings
    from gateway.studio_uploads import local_file, signed_link, upload_file

    settings = Settings().with_overrides(data_dir=tmp_path)
    assert local_file(url, settings) is None
    upload_id = "0b9e3a50-7a43-4c1e-9d1e-3f6d2c1b7a10"
    link, _ = signed_link(settings, upload_id)
    assert local_file(link, settings) is None  # nothing stored under that id
    path = upload_file(settings, upload_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"video")
    assert local_file(link, settings) == path
    assert local_file(link.replace("sig=", "sig=f"), settings) is None
    other = Settings().with_overrides(data_dir=tmp_path, gateway_port=settings.gateway_port + 1)
    assert local_file(link, other) is None  # another origin's link is downloaded, not read
