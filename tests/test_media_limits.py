"""Limits that hold on what a video file really holds, not on what its header declares.

Hostile variants are made here by patching bytes (tests/media_lies.py): a header that claims a
short clip over 30 s of frames, files cut part way, a stream that changes size, timestamps
squeezed together. In-process checks of the probe and the decoder, then the API end to end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from conftest import SHARED, VIDEOS, Stack, finished_status, mask_error, post_json_job
from media import serve
from media_lies import (
    freeze_timestamps,
    lie_about_duration,
    make_edit_list_clip,
    make_long_clip,
    make_repeating_clip,
    make_size_change_avi,
    make_squeezed_clip,
    truncate,
)

from gateway.video.decode import FrameLimits, frame_limits, iter_frames, timing_notes
from gateway.video.probe import MediaError, VideoInfo, probe

HUNT = SHARED / "hunt"
# container -> (encoder, pixel format)
CODECS = {
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("mjpeg", "yuvj420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".avi": ("mjpeg", "yuvj420p"),
    ".gif": ("gif", "rgb8"),
}
LYING = (".webm", ".mp4", ".mov", ".mkv", ".avi")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """long.<ext>: 30 s at 10 fps; lie.<ext>: the same frames under a header that says 1 s;
    trunc.<ext>: the first 60 % of long.<ext>; plus the hunt's odd.webm cut at 40,000 bytes."""
    root = tmp_path_factory.mktemp("hostile")
    files: dict[str, Path] = {}
    for ext, (codec, pix_fmt) in CODECS.items():
        long = make_long_clip(root / f"long{ext}", codec, 30.0, pix_fmt=pix_fmt)
        files[f"long{ext}"] = long
        files[f"trunc{ext}"] = truncate(long, root / f"trunc{ext}", 0.6)
        if ext in LYING:
            files[f"lie{ext}"] = lie_about_duration(long, root / f"lie{ext}", 1.0)
    files["trunc_odd.webm"] = truncate(HUNT / "odd.webm", root / "trunc_odd.webm", 40000)
    files["trunc_biker.mp4"] = truncate(VIDEOS / "21_biker.mp4", root / "trunc_biker.mp4", 0.6)
    files["sizes.avi"] = make_size_change_avi(root / "sizes.avi", root)
    files["squeezed.mkv"] = make_squeezed_clip(root / "squeezed.mkv", 300)
    # every frame at time 0: an MP4 whose stts says so, a Matroska file whose blocks do
    no_b_frames = make_long_clip(root / "plain.mp4", "libx264", 3.0, options={"bf": "0"})
    files["frozen.mp4"] = freeze_timestamps(no_b_frames, root / "frozen.mp4")
    files["frozen.mkv"] = make_repeating_clip(root / "frozen.mkv", 30, 29, first=1)
    return files


def _drain(path: Path, limits: FrameLimits) -> int:
    with iter_frames(path, limits=limits) as reader:
        return sum(1 for _ in reader)


@pytest.mark.parametrize("ext", LYING)
def test_probe_measures_the_packets_not_the_header(hostile: dict[str, Path], ext: str) -> None:
    info = probe(hostile[f"lie{ext}"])
    assert info.declared_duration_s == pytest.approx(1.0, abs=0.01)
    assert info.duration_s == pytest.approx(30.0, abs=0.15)
    assert info.frame_count == info.packets == 300
    with pytest.raises(MediaError) as refused:
        probe(hostile[f"lie{ext}"], max_duration_s=5.0)
    assert refused.value.status == 422 and "30.00s exceeds the 5s limit" in refused.value.details


@pytest.mark.parametrize(
    "name", ["trunc.webm", "trunc.mkv", "trunc.avi", "trunc.gif", "trunc_odd.webm", "trunc_biker.mp4"]
)
def test_probe_refuses_truncated_files(hostile: dict[str, Path], name: str) -> None:
    with pytest.raises(MediaError) as refused:
        probe(hostile[name])
    assert (refused.value.status, refused.value.message) == (422, "Damaged video")
    assert "truncated" in refused.value.details


def test_probe_refuses_truncated_mp4_without_index(hostile: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as refused:
        probe(hostile["trunc.mp4"])  # moov at the end: cut off, nothing to play
    assert refused.value.status == 400 and "Error" not in refused.value.details


def test_honest_files_pass_the_integrity_checks() -> None:
    """Every field input and real clip probes whole: the truncation tolerances fit honest files.
    Decoding every real clip takes 12 s on two cores, so two of them (the longest and one with
    audio) are decoded here; all ten decode to exactly their packet count (checked once)."""
    hunt = sorted(HUNT.glob("*.webm")) + sorted(HUNT.glob("*.mp4"))
    videos = sorted(VIDEOS.glob("*.mp4"))
    assert len(hunt) >= 4 and len(videos) >= 10
    for path in hunt + videos:
        info = probe(path)
        assert info.packets > 0 and abs(info.duration_s - info.declared_duration_s) < 0.05, path.name
        if path in hunt or path.name in ("07_snowboarder.mp4", "01_dog.mp4"):
            decoded = _drain(path, frame_limits(info, max_fps=240, max_s=60.0))
            assert decoded == info.packets, path.name


def test_an_edit_list_that_hides_frames_is_not_damage(tmp_path: Path) -> None:
    """Samples before an MP4 edit list's start are stored and decoded but never shown: the
    frame count and the decoded frames are the shown ones, and the file is whole."""
    path = make_edit_list_clip(tmp_path / "edit.mp4", frames=30, hidden=10)
    info = probe(path)
    assert (info.packets, info.frame_count) == (20, 20)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert _drain(path, frame_limits(info, max_fps=240, max_s=60.0)) == 20


def _header_trusting(path: Path) -> VideoInfo:
    """The VideoInfo a header-trusting probe returned (the state before this change)."""
    info = probe(path)
    return replace(info, duration_s=info.declared_duration_s, packets=0)


@pytest.mark.parametrize("ext", LYING)
def test_decoder_holds_the_limits_whatever_the_probe_believed(hostile: dict[str, Path], ext: str) -> None:
    """The worker's second line: even with the header's 1 s believed, decoding stops or refuses."""
    path = hostile[f"lie{ext}"]
    info = _header_trusting(path)
    with iter_frames(path, limits=frame_limits(info, max_fps=240, trim_s=4.0)) as reader:
        frames = list(reader)
    assert len(frames) == 40 and reader.outcome.trimmed
    assert frames[-1].time_s - frames[0].time_s < 4.0
    with pytest.raises(MediaError) as refused:
        _drain(path, frame_limits(info, max_fps=240, max_s=5.0))
    assert (refused.value.status, refused.value.message) == (422, "Video too long")
    assert "declares 1.00s" in refused.value.details


def test_decoder_limits_count_as_well_as_time(hostile: dict[str, Path]) -> None:
    """300 frames 1 ms apart: 0.3 s by timestamps, 300 by count; the count limit holds."""
    info = probe(hostile["squeezed.mkv"])
    with iter_frames(hostile["squeezed.mkv"], limits=frame_limits(info, max_fps=100, trim_s=1.0)) as reader:
        assert sum(1 for _ in reader) == 100 and reader.outcome.trimmed
    with pytest.raises(MediaError, match="more than 100 frames"):
        _drain(hostile["squeezed.mkv"], frame_limits(info, max_fps=100, max_s=1.0))


def test_decoder_refuses_a_size_change(hostile: dict[str, Path]) -> None:
    info = probe(hostile["sizes.avi"])
    assert (info.width, info.height) == (64, 48)
    with pytest.raises(MediaError) as refused:
        _drain(hostile["sizes.avi"], frame_limits(info, max_fps=240))
    assert refused.value.status == 422 and "128x96" in refused.value.details


def test_decoder_refuses_frames_missing_against_the_packets(hostile: dict[str, Path]) -> None:
    """Fewer frames decoded than the file holds packets for is a damaged file, not a result."""
    info = probe(hostile["long.mkv"])
    claimed = replace(info, packets=info.packets + 20)
    with pytest.raises(MediaError) as refused:
        _drain(hostile["long.mkv"], frame_limits(claimed, max_fps=240))
    assert (refused.value.status, refused.value.message) == (422, "Damaged video")


@pytest.mark.parametrize("name", ["frozen.mp4", "frozen.mkv"])
def test_frames_without_timing_are_timed_at_the_nominal_rate(hostile: dict[str, Path], name: str) -> None:
    """Every frame at one timestamp gave a one-frame result presented as success: all 30 frames
    now come out, 1/10 s apart (the stream's nominal rate), and the outcome says so."""
    info = probe(hostile[name])
    assert info.retimed and info.fps == 10 and info.frame_count == 30, info
    assert info.duration_s == pytest.approx(3.0, abs=0.01)
    with iter_frames(hostile[name], limits=frame_limits(info, max_fps=240)) as reader:
        times = [frame.time_s for frame in reader]
    assert times == pytest.approx([i / 10 for i in range(30)], abs=1e-3)
    assert timing_notes(reader.outcome) == [
        "The video's frames all carry the same timestamp; they were timed at its nominal 10 fps"
    ]


def test_untimed_frames_are_held_to_the_limits_by_their_count(hostile: dict[str, Path]) -> None:
    """90 s of frames at time 0 under a 1 s header: 90 s for every limit, not 0 s or 1 s."""
    root = hostile["frozen.mp4"].parent
    plain = make_long_clip(root / "plain90.mp4", "libx264", 90.0, options={"bf": "0"})
    lying = lie_about_duration(freeze_timestamps(plain, root / "frozen90.mp4"), root / "lie90f.mp4", 1.0)
    with pytest.raises(MediaError) as refused:
        probe(lying, max_duration_s=60)
    assert refused.value.message == "Video too long"
    assert "90.00s exceeds the 60s limit" in refused.value.details
    info = probe(hostile["frozen.mkv"])  # and a trim cuts the retimed frames at the right one
    with iter_frames(hostile["frozen.mkv"], limits=frame_limits(info, max_fps=240, trim_s=1.0)) as reader:
        assert sum(1 for _ in reader) == 10 and reader.outcome.trimmed


def test_frames_piled_on_a_few_timestamps_are_broken_timing_not_truncation(tmp_path: Path) -> None:
    """A fresh tester's variant: B-frames' MP4 with `stts` zeroed (its `ctts` kept) was refused
    as "truncated", which sends the user after the wrong problem."""
    clip = make_long_clip(tmp_path / "b.mp4", "libx264", 3.0)  # B-frames: x264's defaults
    with pytest.raises(MediaError) as refused:
        probe(freeze_timestamps(clip, tmp_path / "piled.mp4", ctts=False))
    assert refused.value.message == "Damaged video"
    assert "distinct timestamps: the file's timing is broken" in refused.value.details
    assert "truncated" not in refused.value.details


def test_a_few_repeated_timestamps_are_left_out_and_said(tmp_path: Path) -> None:
    clip = make_repeating_clip(tmp_path / "two.mkv", 20, 2)
    info = probe(clip)
    assert not info.retimed
    with iter_frames(clip, limits=frame_limits(info, max_fps=240)) as reader:
        times = [frame.time_s for frame in reader]
    assert len(times) == 18 and times == sorted(set(times))
    notes = timing_notes(reader.outcome)
    assert notes == ["2 frame(s) repeated an earlier frame's timestamp and were left out"]


def test_many_repeated_timestamps_are_a_damaged_file(tmp_path: Path) -> None:
    """Leaving out a quarter of the frames is not a result: refused by the probe at submit, and by
    the decoder too where a probe was not asked (the limits then come from a header)."""
    clip = make_repeating_clip(tmp_path / "five.mkv", 20, 5)
    with pytest.raises(MediaError) as refused:
        probe(clip)
    assert (refused.value.status, refused.value.message) == (422, "Damaged video")
    assert "5 of its 20 frames repeat an earlier frame's timestamp" in refused.value.details
    with pytest.raises(MediaError) as failed:
        _drain(clip, FrameLimits())
    assert (failed.value.status, failed.value.message) == (422, "Damaged video")


# --- through the API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_url(hostile: dict[str, Path]) -> Iterator[str]:
    with serve(next(iter(hostile.values())).parent, slow_delay_s=5) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.mark.parametrize("name", ["lie.webm", "lie.mp4", "lie.avi"])
async def test_key_points_refuse_a_lying_header(
    stack: Stack, http: aiohttp.ClientSession, hostile_url: str, name: str
) -> None:
    """30 s of frames under a 1 s header against the 5 s limit without auto_trim: 422."""
    body = {"video": f"{hostile_url}/{name}", "key_points": [{"x": 10, "y": 10, "type": "positive"}]}
    status, payload = await mask_error(
        http, "POST", f"{stack.url}/mask_by_key_points", json=body, headers={"api_token": stack.token}
    )
    assert status == 422 and "30.00s exceeds the 5s limit" in payload["error"]["details"], payload


@pytest.mark.parametrize("ext", [".webm", ".mp4"])
async def test_foreground_mask_refuses_90s_under_a_1s_header(
    stack: Stack, http: aiohttp.ClientSession, hostile: dict[str, Path], hostile_url: str, ext: str
) -> None:
    """The issue's repro: a 90 s clip saying 1 s was accepted and all 900 frames processed."""
    codec, pix_fmt = CODECS[ext]
    root = hostile[f"long{ext}"].parent
    long = make_long_clip(root / f"long90{ext}", codec, 90.0, pix_fmt=pix_fmt)
    lie_about_duration(long, root / f"lie90{ext}", 1.0)
    status, payload = await mask_error(
        http,
        "POST",
        f"{stack.url}/foreground_mask",
        json={"video": f"{hostile_url}/lie90{ext}"},
        headers={"api_token": stack.token},
    )
    assert status == 422 and payload["error"]["message"] == "Video too long", payload
    assert "90.00s exceeds the 60s limit" in payload["error"]["details"]


@pytest.mark.parametrize("name", ["trunc_odd.webm", "trunc.mkv", "trunc.avi", "trunc.gif"])
async def test_truncated_video_is_refused_not_half_processed(
    stack: Stack, http: aiohttp.ClientSession, hostile: dict[str, Path], hostile_url: str, name: str
) -> None:
    status, payload = await mask_error(
        http,
        "POST",
        f"{stack.url}/foreground_mask",
        json={"video": f"{hostile_url}/{name}"},
        headers={"api_token": stack.token},
    )
    assert status == 422 and payload["error"]["message"] == "Damaged video", payload
    form = aiohttp.FormData()
    form.add_field("file", hostile[name].read_bytes(), filename=name, content_type="application/octet-stream")
    async with http.post(f"{stack.url}/video/submit/v1", data=form, headers={"api_token": stack.token}) as r:
        assert r.status == 400
        body = await r.json()
    assert set(body) == {"detail"} and "truncated" in body["detail"]


async def test_video_submit_trims_a_lying_webm_by_its_frames(
    stack: Stack, http: aiohttp.ClientSession, hostile: dict[str, Path], tmp_path: Path
) -> None:
    """The issue's repro: a WebM saying 1 s over 30 s of frames answered "1.00s" and came back whole."""
    form = aiohttp.FormData()
    form.add_field("file", hostile["lie.webm"].read_bytes(), filename="lie.webm", content_type="video/webm")
    form.add_field("bg_color", "0,255,0")
    form.add_field("model", "rvm")
    async with http.post(f"{stack.url}/video/submit/v1", data=form, headers={"api_token": stack.token}) as r:
        assert r.status == 202
        body = await r.json()
    assert body["duration"] == "30.00s" and body["processed_duration"] == "4s", body
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        r = await http.get(f"{stack.url}/video/result/{body['uuid']}", headers={"api_token": stack.token})
        if r.status != 202:
            break
        r.release()
        await asyncio.sleep(0.5)
    assert r.status == 200
    assert r.headers["X-Original-Duration"] == "30.00s" and r.headers["X-Processed-Duration"] == "4.00s"
    out = tmp_path / "out.mp4"
    out.write_bytes(await r.read())
    info = probe(out)
    assert info.packets == 40 and info.duration_s <= 4.05


async def test_an_untimed_video_comes_back_whole_with_a_warning(
    stack: Stack, http: aiohttp.ClientSession, hostile_url: str, tmp_path: Path
) -> None:
    """The fresh tester's repro: frames all at time 0 came back as a one-frame mask video."""
    body = {"video": f"{hostile_url}/frozen.mp4", "model": "rvm"}  # the timing is the pipeline's
    accepted = await post_json_job(http, stack, "/foreground_mask", body)
    status = await finished_status(http, stack, accepted["request_id"], 180)
    assert status["status"] == "completed", status
    assert "timed at its nominal 10 fps" in status["warning"], status
    assert "original_duration" not in status  # the trim's fields: nothing was trimmed
    async with http.get(status["mask_url"]) as r:
        assert r.status == 200
        (tmp_path / "mask.mp4").write_bytes(await r.read())
    out = probe(tmp_path / "mask.mp4")
    assert out.packets == 30 and out.duration_s == pytest.approx(3.0, abs=0.05) and not out.retimed
