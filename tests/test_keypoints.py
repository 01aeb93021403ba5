"""POST /mask_by_key_points through the real stack (gateway, worker, Redis, tritonserver).

Clips are made here from DAVIS 2016 frames (which carry per-frame ground-truth masks) and from a
real clip with audio; small (<= 320x180) and short so the suite stays fast on two cores. The
quality bounds are well below what the in-process benchmark measures (benchmarks/eval_keypoints.py)
but far above what a wrong selection would score, so they fail when the mask stops following the
prompted object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import VIDEO_MASKS, VIDEOS, Stack, finished_status, mask_error, post_json_job
from media import ClipSpec, inspect, make_clip, serve

from gateway.video.encode import PRESETS
from triton_models.keypoints import KeypointTracker, Prompt

SIZE = (320, 180)
FPS = 12


@dataclass(frozen=True)
class Truth:
    masks: np.ndarray  # bool [N, H, W] at the clip's size


def _davis(seq: str, count: int, size: tuple[int, int] = SIZE) -> tuple[list[np.ndarray], np.ndarray]:
    root = VIDEO_MASKS / seq
    frames, masks = [], []
    for i in range(count):
        bgr = cv2.imread(str(root / "frames" / f"{i:05d}.jpg"))
        gt = cv2.imread(str(root / "masks" / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE)
        frames.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
        masks.append(cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) > 127)
    return frames, np.stack(masks)


def _write(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "16", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# 01_dog, frames 40-139 (of the real clip): the dog runs out of the frame on the right (gone from
# frame 74 to 101, seen frame by frame), comes back from 102 and is whole again from 108.
EXIT_FIRST, EXIT_GONE, EXIT_BACK, EXIT_LAST = 40, range(74, 102), 108, 139
EXIT_PROMPT = {"x": 175, "y": 108, "type": "positive"}  # the dog's back on frame 40, at 320x180


def _dog_leaves_and_returns() -> list[np.ndarray]:
    with av.open(str(VIDEOS / "01_dog.mp4")) as container:
        frames = [
            cv2.resize(frame.to_ndarray(format="rgb24"), SIZE, interpolation=cv2.INTER_AREA)
            for index, frame in enumerate(container.decode(video=0))
            if EXIT_FIRST <= index <= EXIT_LAST
        ]
    assert len(frames) == EXIT_LAST - EXIT_FIRST + 1
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, triton_url: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("kp-clips")
    dog, dog_gt = _davis("dog", 12)
    swan, swan_gt = _davis("blackswan", 12)
    # Two salient objects side by side: a prompt must pick one of them, not "the foreground".
    pair = [np.concatenate([d, s], axis=1) for d, s in zip(dog, swan, strict=True)]
    pair_gt = np.concatenate([dog_gt, np.zeros_like(swan_gt)], axis=2)
    swan_only = np.concatenate([np.zeros_like(dog_gt), swan_gt], axis=2)
    long_frames, _ = _davis("blackswan", 45, (160, 96))  # 45 frames at 8 fps = 5.6 s
    big = [cv2.resize(dog[0], (1344, 756))] * 2  # shorter side 756 > 750
    _write(root / "dog.mp4", dog)
    _write(root / "pair.mp4", pair)
    _write(root / "long.mp4", long_frames, fps=8)
    _write(root / "big.mp4", big)
    _write(root / "exit.mp4", _dog_leaves_and_returns(), fps=24)
    make_clip(
        VIDEOS / "01_dog.mp4",
        root,
        # 0.2 s: a preset's codec, size, rate and audio hold on 5 frames as on 10
        ClipSpec("audio.mp4", "libx264", width=160, height=96, duration_s=0.2, audio="aac"),
    )
    make_clip(
        VIDEOS / "01_dog.mp4", root, ClipSpec("mpeg4.avi", "mpeg4", width=160, height=96, duration_s=0.3)
    )
    # The real clip has no ground truth: prompt the deepest point of its U2-Net-p salient region.
    with av.open(str(root / "audio.mp4")) as c:
        first = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    client = grpcclient.InferenceServerClient(triton_url)
    image = grpcclient.InferInput("image", list(first.shape), "UINT8")
    image.set_data_from_numpy(np.ascontiguousarray(first))
    salient = client.infer("u2netp", [image]).as_numpy("alpha") > 127
    client.close()
    assert salient.any(), "the audio clip's first frame has no salient object to prompt"
    return {
        "root": root,
        "dog_gt": dog_gt,
        "pair_gt": pair_gt,
        "swan_gt": swan_only,
        "audio_point": _deepest(salient),
    }


@pytest.fixture(scope="module")
def url(clips: dict[str, Any]) -> Iterator[str]:
    with serve(clips["root"]) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def _deepest(mask: np.ndarray) -> dict[str, Any]:
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return {"x": int(x), "y": int(y), "type": "positive"}


async def _submit(http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]) -> str:
    payload = await post_json_job(http, stack, "/mask_by_key_points", body)
    assert set(payload) == {"request_id", "status_url"}
    assert payload["status_url"] == f"{stack.url}/status/{payload['request_id']}"
    return str(payload["request_id"])


async def _run(
    http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any], tmp: Path
) -> tuple[dict, Path]:
    status = await finished_status(http, stack, await _submit(http, stack, body))
    assert status["status"] == "completed", status
    preset = PRESETS[body.get("output_container_and_codec", "mp4_h264")]
    async with http.get(status["mask_url"]) as r:
        assert r.status == 200
        out = tmp / f"{status['request_id']}.{preset.extension}"
        out.write_bytes(await r.read())
    return status, out


def _masks(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray") > 127 for f in c.decode(video=0)])


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.logical_and(pred, gt).sum() / max(1, np.logical_or(pred, gt).sum()))


async def test_one_positive_point_follows_the_object(
    stack: Stack, http: aiohttp.ClientSession, url: str, clips: dict[str, Any], tmp_path: Path
) -> None:
    gt = clips["dog_gt"]
    _, out = await _run(http, stack, {"video": f"{url}/dog.mp4", "key_points": [_deepest(gt[0])]}, tmp_path)
    masks = _masks(out)
    assert masks.shape == gt.shape  # every frame, same size
    ious = [_iou(m, g) for m, g in zip(masks, gt, strict=True)]
    print(f"dog 1 point: mean J {np.mean(ious):.3f}, min {min(ious):.3f}")
    assert np.mean(ious) > 0.6 and min(ious) > 0.4


async def test_the_object_that_leaves_the_frame_is_found_again(
    stack: Stack, http: aiohttp.ClientSession, url: str, tmp_path: Path
) -> None:
    """Empty while the dog is out of the frame (not a phantom stuck at the edge), on the dog again
    once it is back (found by its prompt-frame colours, not the woman the whole frame's
    saliency sees meanwhile)."""
    _, out = await _run(http, stack, {"video": f"{url}/exit.mp4", "key_points": [EXIT_PROMPT]}, tmp_path)
    masks = _masks(out)
    assert len(masks) == EXIT_LAST - EXIT_FIRST + 1
    frame = {index: masks[index - EXIT_FIRST] for index in range(EXIT_FIRST, EXIT_LAST + 1)}
    areas = {index: int(mask.sum()) for index, mask in frame.items()}
    print("mask area per frame:", areas)
    assert all(areas[i] > 100 for i in range(EXIT_FIRST, 64))  # before it leaves (mid-jump too)
    assert all(areas[i] == 0 for i in EXIT_GONE[2:])  # gone (2 frames for the remnant to fade)
    back = range(EXIT_BACK + 4, EXIT_LAST + 1)  # saliency sees the entering dog a few frames late
    assert all(300 < areas[i] < 6000 for i in back)
    woman_x = 0.4 * SIZE[0]  # she stays left of this line on every frame
    assert all(np.nonzero(frame[i])[1].mean() > woman_x for i in back)


async def test_the_less_salient_of_two_objects(
    stack: Stack, http: aiohttp.ClientSession, url: str, clips: dict[str, Any], tmp_path: Path
) -> None:
    """Dog and swan side by side, dog prompted, a negative point on the swan."""
    dog_gt, swan_gt = clips["pair_gt"], clips["swan_gt"]
    neg_on_swan = {**_deepest(swan_gt[0]), "type": "negative"}
    body = {"video": f"{url}/pair.mp4", "key_points": [_deepest(dog_gt[0]), neg_on_swan]}
    _, out = await _run(http, stack, body, tmp_path)
    masks = _masks(out)
    j_dog = np.mean([_iou(m, g) for m, g in zip(masks, dog_gt, strict=True)])
    on_swan = np.mean([(m & s).sum() / s.sum() for m, s in zip(masks, swan_gt, strict=True)])
    print(f"pair, dog prompted: J {j_dog:.3f}, swan covered {on_swan:.3f}")
    assert j_dog > 0.6 and on_swan < 0.1


async def test_the_prompted_one_of_two_objects(
    stack: Stack, http: aiohttp.ClientSession, url: str, clips: dict[str, Any], tmp_path: Path
) -> None:
    """Swan prompted on frame 5 (so both directions run): the mask stays off the dog."""
    dog_gt, swan_gt = clips["pair_gt"], clips["swan_gt"]
    body = {"video": f"{url}/pair.mp4", "key_points": [_deepest(swan_gt[5])], "frame_index": 5}
    _, out = await _run(http, stack, body, tmp_path)
    masks = _masks(out)
    j_swan = np.mean([_iou(m, g) for m, g in zip(masks, swan_gt, strict=True)])
    on_dog = np.mean([(m & d).sum() / d.sum() for m, d in zip(masks, dog_gt, strict=True)])
    print(f"pair, swan prompted on frame 5: J {j_swan:.3f}, dog covered {on_dog:.3f}")
    assert j_swan > 0.6 and on_dog < 0.1


async def test_prompt_on_the_last_frame_propagates_backward(
    stack: Stack, http: aiohttp.ClientSession, url: str, clips: dict[str, Any], tmp_path: Path
) -> None:
    gt = clips["dog_gt"]
    last = len(gt) - 1
    body = {"video": f"{url}/dog.mp4", "frame_index": last, "key_points": [_deepest(gt[last])]}
    status, out = await _run(http, stack, body, tmp_path)
    masks = _masks(out)
    assert masks.shape == gt.shape
    ious = [_iou(m, g) for m, g in zip(masks, gt, strict=True)]
    print(f"dog backward from frame {last}: mean J {np.mean(ious):.3f}, frame 0 {ious[0]:.3f}")
    assert np.mean(ious) > 0.6 and ious[0] > 0.4
    assert status["current_frame"] == status["total_frames"] == len(gt)


async def test_trimming(stack: Stack, http: aiohttp.ClientSession, url: str, tmp_path: Path) -> None:
    body: dict[str, Any] = {
        "video": f"{url}/long.mp4",
        "key_points": [{"x": 80, "y": 48, "type": "positive"}],
    }
    async with http.post(
        f"{stack.url}/mask_by_key_points", json=body, headers={"api_token": stack.token}
    ) as r:
        refused = await r.json()
    assert (
        r.status == 422 and "5s" in refused["error"]["details"] and "auto_trim" in refused["error"]["details"]
    )
    status, out = await _run(http, stack, {**body, "auto_trim": True}, tmp_path)
    assert "trimmed" in status["warning"]
    assert status["original_duration"] == pytest.approx(5.625, abs=0.05)
    assert status["processed_duration"] == pytest.approx(5.0, abs=0.01)
    facts = inspect(out)
    assert facts.frames == 40 and facts.last_pts_s == pytest.approx(39 / 8, abs=0.01)


@pytest.fixture(scope="module")
async def preset_masks(
    stack: Stack, url: str, clips: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """preset -> the key-point mask of audio.mp4 in it; the jobs submitted together (4 in flight,
    the API's per-token bound), so the worker runs two at a time instead of one."""
    tmp, slots = tmp_path_factory.mktemp("kp-presets"), asyncio.Semaphore(4)

    async def one(http: aiohttp.ClientSession, preset: str) -> Path:
        body = {"video": f"{url}/audio.mp4", "key_points": [clips["audio_point"]],
                "output_container_and_codec": preset}  # fmt: skip
        async with slots:
            return (await _run(http, stack, body, tmp))[1]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        outs = await asyncio.gather(*(one(http, preset) for preset in sorted(PRESETS)))
    return dict(zip(sorted(PRESETS), outs, strict=True))


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_every_preset(preset_masks: dict[str, Path], clips: dict[str, Any], preset: str) -> None:
    src = inspect(clips["root"] / "audio.mp4")
    facts = inspect(preset_masks[preset])
    expected_codec = {"h264": "h264", "h265": "hevc", "vp9": "vp9", "proresks": "prores", "gif": "gif"}
    assert facts.codec == expected_codec[preset.split("_")[-1]]
    assert (facts.width, facts.height) == (src.width, src.height)
    assert facts.frames == src.frames
    if preset != "gif":  # GIF's centisecond clock rounds the rate (the video pipeline's policy)
        assert facts.rate == src.rate
        assert facts.audio is not None  # audio kept
    assert 0 < facts.luma_mean < 250  # a selected object: neither an empty nor a full mask


# --- the tracker in-process, with a stand-in saliency model (fast, no servers) -----------------

BG = (90, 90, 90)


def _largest_colour_blob(rgb: np.ndarray) -> np.ndarray:
    """Stand-in for U2-Net-p that behaves like it where it matters here: only the dominant
    coloured thing *of the image it is given* is salient, so a small object is found only in
    a crop around it."""
    coloured = (np.abs(rgb.astype(int) - BG).sum(axis=2) > 60).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(coloured, connectivity=8)
    if n <= 1:
        return np.zeros(rgb.shape[:2], np.uint8)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.where(labels == biggest, 255, 0).astype(np.uint8)


def _two_objects(count: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """A large blue square (the salient distractor) and a small red disc moving right."""
    frames, discs = [], []
    square = np.zeros((144, 256), bool)
    square[20:120, 150:245] = True
    for i in range(count):
        rgb = np.full((144, 256, 3), BG, np.uint8)
        rgb[square] = (40, 60, 220)
        disc = np.zeros((144, 256), np.uint8)
        cv2.circle(disc, (30 + 4 * i, 90), 16, 1, -1)
        rgb[disc > 0] = (220, 50, 40)
        frames.append(rgb)
        discs.append(disc > 0)
    return frames, discs, square


def test_tracker_finds_the_small_object_in_its_crop_and_follows_it() -> None:
    frames, discs, square = _two_objects(12)
    # the stand-in sees only the square in the whole frame: the disc needs its crop
    assert not (_largest_colour_blob(frames[0]) > 0)[discs[0]].any()
    prompt = Prompt.from_arrays(
        np.array([[30, 90], [197, 70]], np.float32), np.array([1, 0], np.int32), 256, 144
    )
    tracker = KeypointTracker(_largest_colour_blob, work_long_side=256)
    masks = [tracker.start(frames[0], prompt)] + [tracker.step(f) for f in frames[1:]]
    ious = [_iou(m > 127, d) for m, d in zip(masks, discs, strict=True)]
    on_square = max(float((m > 127)[square].mean()) for m in masks)
    assert min(ious) > 0.7, ious
    assert on_square < 0.01


def _disc_track(count: int, occluded: range = range(0)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A red disc moving right on grey; on the frames in `occluded` a grey bar hides it."""
    frames, discs = [], []
    for i in range(count):
        rgb = np.full((144, 256, 3), BG, np.uint8)
        disc = np.zeros((144, 256), np.uint8)
        cv2.circle(disc, (40 + 5 * i, 72), 16, 1, -1)
        rgb[disc > 0] = (220, 50, 40)
        if i in occluded:
            rgb[:, 20 + 5 * i : 60 + 5 * i] = BG
            disc[:] = 0
        frames.append(rgb)
        discs.append(disc > 0)
    return frames, discs


def _blind(rgb: np.ndarray) -> np.ndarray:
    return np.zeros(rgb.shape[:2], np.uint8)


def test_tracker_finds_by_colour_what_saliency_cannot_see() -> None:
    """Saliency sees nothing (a small car in tyre smoke): the colours under the point still
    select the disc, and follow it."""
    frames, discs = _disc_track(10)
    prompt = Prompt.from_arrays(np.array([[40, 72]], np.float32), np.array([1], np.int32), 256, 144)
    tracker = KeypointTracker(_blind, work_long_side=256)
    masks = [tracker.start(frames[0], prompt)] + [tracker.step(f) for f in frames[1:]]
    ious = [_iou(m > 127, d) for m, d in zip(masks, discs, strict=True)]
    assert min(ious) > 0.7, ious


def test_tracker_drops_a_differently_coloured_part_joined_by_a_faint_bridge() -> None:
    """Saliency joins the disc to a blue block through a faint streak: the prompt selects the
    disc, not the block (the flower pot under the jumping horse)."""
    frames, discs = _disc_track(1)
    block = np.zeros((144, 256), bool)
    block[100:140, 20:70] = True
    frames[0][block] = (40, 60, 220)
    frames[0][30:45, 75:90] = (40, 60, 220)  # the block's colour is also the surroundings'

    def joined(rgb: np.ndarray) -> np.ndarray:
        sal = np.where(np.abs(rgb.astype(int) - BG).sum(axis=2) > 60, 255, 0).astype(np.uint8)
        sal[85:100, 38:42] = 80  # between LOOSE and SURE: groups the two, is neither
        return sal

    prompt = Prompt.from_arrays(np.array([[40, 72]], np.float32), np.array([1], np.int32), 256, 144)
    mask = KeypointTracker(joined, work_long_side=256).start(frames[0], prompt) > 127
    assert _iou(mask, discs[0]) > 0.8
    assert mask[block].mean() < 0.05


def test_tracker_keeps_the_object_through_an_occlusion() -> None:
    """Hidden for three frames, the disc is not dropped for good: after the occluder it is
    followed again (the mask is never emptied while flow keeps it in the frame)."""
    frames, discs = _disc_track(14, occluded=range(5, 8))
    prompt = Prompt.from_arrays(np.array([[40, 72]], np.float32), np.array([1], np.int32), 256, 144)
    tracker = KeypointTracker(_largest_colour_blob, work_long_side=256)
    masks = [tracker.start(frames[0], prompt)] + [tracker.step(f) for f in frames[1:]]
    after = [_iou(m > 127, d) for m, d in zip(masks[9:], discs[9:], strict=True)]
    assert all(m.any() for m in masks)
    assert min(after) > 0.7, after


def test_tracker_refuses_misuse() -> None:
    frames, _, _ = _two_objects(1)
    tracker = KeypointTracker(_largest_colour_blob)
    with pytest.raises(RuntimeError):
        tracker.step(frames[0])
    tracker.start(frames[0], Prompt.from_arrays(np.array([[30, 90]]), np.array([1]), 256, 144))
    with pytest.raises(ValueError):
        tracker.step(frames[0][:100])


async def test_errors(stack: Stack, http: aiohttp.ClientSession, url: str) -> None:
    api, auth = f"{stack.url}/mask_by_key_points", {"api_token": stack.token}
    started = time.time()
    pos = {"x": 10, "y": 10, "type": "positive"}
    ok = {"video": f"{url}/dog.mp4", "key_points": [pos]}

    async def refused(body: Any, **kw: Any) -> tuple[int, str]:
        status, err = await mask_error(http, "POST", api, json=body, headers=auth, **kw)
        return status, err["error"]["details"]

    assert (await mask_error(http, "POST", api, json=ok))[0] == 403
    assert (await mask_error(http, "POST", api, json=ok, headers={"api_token": "nope"}))[0] == 403
    assert (await mask_error(http, "GET", api, headers=auth))[0] == 405
    malformed = {**auth, "Content-Type": "application/json"}
    assert (await mask_error(http, "POST", api, data="{not json", headers=malformed))[0] == 400
    assert (await refused({"key_points": [pos]}))[0] == 422
    assert (await refused({"video": ok["video"]}))[0] == 422
    assert (await refused({**ok, "key_points": []}))[0] == 422
    status, details = await refused({**ok, "key_points": [{**pos, "type": "negative"}]})
    assert status == 422 and "positive" in details
    assert (await refused({**ok, "key_points": [{**pos, "type": "maybe"}]}))[0] == 422
    assert (await refused({**ok, "key_points": [{**pos, "x": 1.5}]}))[0] == 422
    assert (await refused({**ok, "frame_index": -1}))[0] == 422
    assert (await refused({**ok, "auto_trim": "yes"}))[0] == 422
    assert (await refused({**ok, "output_container_and_codec": "avi_xvid"}))[0] == 422
    status, details = await refused({**ok, "frame_index": 12})
    assert status == 422 and "0..11" in details
    status, details = await refused({**ok, "key_points": [{**pos, "x": 320}]})
    assert status == 422 and "320x180" in details
    status, details = await refused({**ok, "video": f"{url}/big.mp4"})
    assert status == 422 and "750" in details and "1344x756" in details
    status, details = await refused({**ok, "video": f"{url}/mpeg4.avi"})
    assert status == 415 and "mpeg4" in details
    assert (await refused({**ok, "video": f"{url}/missing/a.mp4"}))[0] == 400
    # nothing refused may leave an input behind
    uploads = stack.settings.data_dir / "uploads"
    fresh = [p for p in uploads.glob("*/*") if p.stat().st_mtime >= started] if uploads.exists() else []
    assert fresh == []
