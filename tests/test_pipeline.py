"""The video pipeline on real clips: probe, decode, encode presets, URL intake, Triton streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import HUNT
from media import inspect, serve
from PIL import Image

from common.settings import Settings
from devstack.processes import free_port
from gateway.triton import Triton, TritonUnavailable
from gateway.video.compose import mask_frame, opaque_background
from gateway.video.decode import DecodedFrame, iter_frames
from gateway.video.encode import PRESETS, TRANSPARENT_PRESETS, Preset, VideoWriter
from gateway.video.infer import infer_frames
from gateway.video.intake import fetch_and_probe
from gateway.video.probe import MediaError, probe
from gateway.video.run import run_video

CODEC = {
    "h264_aac.mp4": "h264",
    "hevc.mov": "hevc",
    "vp9_opus.webm": "vp9",
    "av1.mp4": "libdav1d",
    "mjpeg.avi": "mjpeg",
    "mjpeg.mov": "mjpeg",
    "anim.gif": "gif",
}


@pytest.fixture(scope="session")
def clips(video_clips: dict[str, Path]) -> dict[str, Path]:
    return video_clips


@pytest.fixture(scope="session")
def clip_dir(video_clips: dict[str, Path]) -> Path:
    return video_clips["h264_aac.mp4"].parent


@pytest.fixture(scope="session")
def clip_server(clip_dir: Path, clips: dict[str, Path]) -> Iterator[str]:
    with serve(clip_dir, slow_delay_s=20) as url:
        yield url


@pytest.mark.parametrize("name", sorted(CODEC))
def test_probe_accepts_documented_inputs(clips: dict[str, Path], name: str) -> None:
    info = probe(clips[name])
    facts = inspect(clips[name])
    assert info.video_codec == CODEC[name]
    assert (info.width, info.height) == (320, 180)
    # exact from the container index, else estimated from duration x rate (WebM has no count)
    assert abs(info.frame_count - facts.frames) <= (0 if info.frame_count_exact else 1)
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert (info.audio is not None) == (facts.audio is not None)


def test_probe_reports_rotation_vfr_and_audio(clips: dict[str, Path]) -> None:
    assert probe(clips["rot90.mp4"]).rotation == 90
    assert probe(clips["h264_aac.mp4"]).audio is not None
    assert probe(clips["hevc.mov"]).audio is None
    vfr = inspect(clips["vfr.mp4"])
    assert len(set(vfr.intervals_ms)) > 1  # the fixture really is variable frame rate


@pytest.mark.parametrize(
    ("name", "kwargs", "status"),
    [
        ("mpeg4.avi", {}, 415),
        ("corrupt.mp4", {}, 422),
        ("truncated.mp4", {}, 400),
        ("noise.mp4", {}, 400),
        ("h264_aac.mp4", {"max_side": 300}, 413),
        ("long.mp4", {"max_duration_s": 5.0}, 422),
    ],
)
def test_probe_refusals(clips: dict[str, Path], name: str, kwargs: dict[str, float], status: int) -> None:
    with pytest.raises(MediaError) as info:
        probe(clips[name], **kwargs)  # type: ignore[arg-type]
    assert info.value.status == status
    assert info.value.details


def test_decode_trims_and_stops_early(clips: dict[str, Path]) -> None:
    frames = list(iter_frames(clips["long.mp4"], max_duration_s=4.0))
    assert len(frames) == 40  # 10 fps: the frame at exactly 4.0 s is the first one cut
    assert frames[-1].time_s < 4.0
    assert frames[0].rgb.shape == (180, 320, 3) and frames[0].rgb.dtype == np.uint8
    with iter_frames(clips["long.mp4"]) as reader:
        assert next(reader).index == 0  # closing mid-stream must not hang


def _encode(src: Path, out: Path, preset: Preset, max_s: float | None = None) -> int:
    info = probe(src)
    writer = VideoWriter(out, preset, info, src, max_s)
    for frame in iter_frames(src, max_duration_s=max_s):
        luma = frame.rgb.mean(axis=2).astype(np.uint8)
        if preset.alpha:
            writer.write(np.dstack([frame.rgb, luma]), frame.pts, frame.duration)
        else:
            writer.write(mask_frame(luma), frame.pts, frame.duration)
    return writer.close()


def _video_end_s(path: Path) -> float:
    """Where the last frame stops showing: the latest pts + duration of the video's packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ends = [
            (packet.pts + (packet.duration or 0)) * packet.time_base
            for packet in container.demux(stream)
            if packet.pts is not None and packet.size
        ]
    return float(max(ends))


@pytest.mark.parametrize("name", ["gif", "mp4_h264", "webm_vp9", "mov_h265"])
@pytest.mark.parametrize("delays_ms", [[100, 500], [40, 40, 1000], [250, 70, 30, 420]])
def test_each_frame_keeps_its_own_duration(tmp_path: Path, name: str, delays_ms: list[int]) -> None:
    """An animation's long last frame (a GIF's final hold) lasts as long as in the input, not one
    average frame period; a trim cuts it at the limit."""
    src = tmp_path / "anim.gif"
    shades = np.linspace(0, 255, len(delays_ms)).astype(np.uint8)
    images = [Image.fromarray(np.full((32, 48, 3), shade, np.uint8)) for shade in shades]
    images[0].save(src, save_all=True, append_images=images[1:], duration=delays_ms, loop=0)
    preset = PRESETS[name]
    out = tmp_path / f"out.{preset.extension}"
    assert _encode(src, out, preset) == len(delays_ms)
    assert _video_end_s(out) == pytest.approx(sum(delays_ms) / 1000, abs=0.011)
    assert inspect(out).intervals_ms == tuple(delays_ms[:-1])
    cut_s = (sum(delays_ms) - delays_ms[-1] / 2) / 1000  # in the middle of the last frame
    _encode(src, out, preset, max_s=cut_s)
    assert _video_end_s(out) == pytest.approx(cut_s, abs=0.011)


EXPECTED = {  # preset -> (decoder name, audio codec of the output for an AAC input)
    "mp4_h264": ("h264", "aac"),
    "mp4_h265": ("hevc", "aac"),
    "webm_vp9": ("vp9", "opus"),
    "mov_h265": ("hevc", "aac"),
    "mov_proresks": ("prores", "aac"),
    "mkv_h264": ("h264", "aac"),
    "mkv_h265": ("hevc", "aac"),
    "mkv_vp9": ("vp9", "aac"),
    "gif": ("gif", None),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_keeps_geometry_timing_and_audio(
    clips: dict[str, Path], tmp_path: Path, name: str
) -> None:
    preset = PRESETS[name]
    src = clips["h264_aac.mp4"]
    out = tmp_path / f"out.{preset.extension}"
    written = _encode(src, out, preset)
    facts, source = inspect(out), inspect(src)
    codec, audio = EXPECTED[name]
    assert facts.codec == codec
    assert (facts.width, facts.height) == (320, 180)
    if name == "gif":  # centisecond clock: 29.97 fps becomes 3-4 cs steps, every frame kept
        assert facts.frames == written == source.frames
        assert facts.last_pts_s == pytest.approx(source.last_pts_s, abs=0.02)
    else:
        assert facts.frames == written == source.frames
        assert facts.rate == Fraction(30000, 1001)
        assert facts.last_pts_s == pytest.approx(source.last_pts_s, abs=0.002)
    assert facts.audio == audio
    if audio:
        assert facts.audio_duration_s == pytest.approx(source.audio_duration_s, abs=0.1)


def test_a_transparent_background_image_shows_black_not_its_hidden_colour() -> None:
    """Red stored under alpha 0, 128 and 255 (a PNG or WebP with transparency as bg_image)."""
    image = np.zeros((1, 3, 4), np.uint8)
    image[..., 0] = 255
    image[0, :, 3] = (0, 128, 255)
    assert opaque_background(image).tolist() == [[[0, 0, 0], [128, 0, 0], [255, 0, 0]]]


@pytest.mark.parametrize("name", ["mkv_h264", "mp4_h264", "webm_vp9"])
def test_aac_priming_stays_hidden_in_every_container(tmp_path: Path, name: str) -> None:
    """An MP4 whose AAC has its encoder's priming hidden by an edit list (the hunt's
    rot90_tagged.mp4, as phones and FFmpeg write them): the output's first frame stays at 0 and
    a player decodes exactly the samples it did from the input, whether the audio is copied into
    MP4 (edit list) or Matroska (priming left out), or re-encoded (Opus pre-skip)."""
    src = HUNT / "rot90_tagged.mp4"
    out = tmp_path / f"out.{PRESETS[name].extension}"
    _encode(src, out, PRESETS[name])

    def presented(path: Path) -> tuple[float, int]:
        with av.open(str(path)) as c:
            first = next(c.decode(video=0))
            start = float(first.pts * first.time_base)
        with av.open(str(path)) as c:
            return start, sum(f.samples for f in c.decode(audio=0))

    (start, samples), (_, want) = presented(out), presented(src)
    assert start == pytest.approx(0.0, abs=1e-6)
    assert samples == want


def test_vfr_rotation_and_trim_survive_encoding(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "vfr.mp4"
    _encode(clips["vfr.mp4"], out, PRESETS["mp4_h264"])
    assert inspect(out).intervals_ms == inspect(clips["vfr.mp4"]).intervals_ms
    out = tmp_path / "rot.mkv"
    _encode(clips["rot90.mp4"], out, PRESETS["mkv_h264"])
    assert inspect(out).rotation == 90
    out = tmp_path / "trim.mp4"
    assert _encode(clips["long.mp4"], out, PRESETS["mp4_h264"], max_s=4.0) == 40
    facts = inspect(out)
    assert facts.last_pts_s < 4.0 and facts.audio_duration_s is not None
    assert facts.audio_duration_s == pytest.approx(4.0, abs=0.1)


@pytest.mark.parametrize("key", sorted(TRANSPARENT_PRESETS))
def test_transparent_outputs_carry_alpha(clips: dict[str, Path], tmp_path: Path, key: str) -> None:
    preset = TRANSPARENT_PRESETS[key]
    out = tmp_path / f"alpha.{preset.extension}"
    _encode(clips["one.mp4"], out, preset)
    facts = inspect(out)
    assert facts.alpha_mean is not None
    # alpha was the frame's luma: neither all opaque nor all transparent
    assert 20 < facts.alpha_mean < 235


async def test_intake_refuses_404_and_slow_urls(clip_server: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, allow_loopback_urls=True, download_timeout_s=1.5)
    dest = tmp_path / "in.mp4"
    with pytest.raises(MediaError) as missing:
        await fetch_and_probe(f"{clip_server}/missing/x.mp4", dest, settings, max_duration_s=60)
    assert missing.value.status == 400 and "404" in missing.value.details
    with pytest.raises(MediaError) as slow:
        await fetch_and_probe(f"{clip_server}/slow/x.mp4", dest, settings, max_duration_s=60)
    assert slow.value.status == 400 and "longer than" in slow.value.details
    assert not dest.exists()
    info = await fetch_and_probe(f"{clip_server}/hevc.mov", dest, settings, max_duration_s=60)
    assert info.video_codec == "hevc" and dest.is_file()


async def test_run_video_one_frame_and_vfr(
    triton_settings: Settings, clips: dict[str, Path], tmp_path: Path
) -> None:
    triton = Triton(triton_settings)
    try:
        for name in ("one.mp4", "vfr.mp4"):
            src = clips[name]
            out = tmp_path / f"mask-{name}"
            seen: list[tuple[int, int | None]] = []

            async def progress(
                current: int, total: int | None, seen: list[tuple[int, int | None]] = seen
            ) -> None:
                seen.append((current, total))

            result = await run_video(
                triton=triton,
                info=probe(src),
                input_path=src,
                output_path=out,
                preset=PRESETS["mp4_h264"],
                render=lambda r: mask_frame(r.alpha),
                foreground=False,
                model="auto",
                frames_in_flight=4,
                timeout_s=60,
                progress=progress,
            )
            facts = inspect(out)
            assert result.frames == facts.frames == inspect(src).frames
            assert seen[-1] == (facts.frames, facts.frames)
            assert facts.intervals_ms == inspect(src).intervals_ms
            assert 5 < facts.luma_mean < 250  # the dog is found: neither empty nor full
    finally:
        await triton.close()


async def test_unreachable_triton_fails_fast(clips: dict[str, Path]) -> None:
    triton = Triton(Settings(triton_grpc_port=free_port()))
    try:
        with pytest.raises(TritonUnavailable):
            async for _ in infer_frames(
                triton.pick(), _aiter(iter_frames(clips["one.mp4"])), frames_in_flight=2, timeout_s=5
            ):
                pass
    finally:
        await triton.close()


async def _aiter(frames: Iterable[DecodedFrame]) -> AsyncIterator[DecodedFrame]:
    for frame in frames:
        yield frame
