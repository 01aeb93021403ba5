"""Test media made from the real clips in ../shared/data/videos, and a loopback server for them.

Clips are transcoded with PyAV into a session temp dir: short and small (320x180, about 1 s) so
the suite stays fast on two cores. `inspect` decodes a result fully, so its facts (frame count,
last timestamp, rotation, alpha) are what a player would see, not what a header claims.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
from PIL import Image

from devstack.processes import free_port


@dataclass(frozen=True)
class ClipSpec:
    name: str  # file name, extension included
    codec: str
    pix_fmt: str = "yuv420p"
    width: int = 320
    height: int = 180
    duration_s: float = 1.0
    audio: str | None = None  # audio encoder, or None for no audio
    rotation: int = 0  # display-matrix tag (counter-clockwise degrees)
    upright: bool = False  # width x height is the display size: frames are stored turned by -rotation
    sar: Fraction | None = None  # sample aspect ratio written into the stream
    vfr: bool = False  # alternate 1x and 2x frame intervals
    max_frames: int | None = None
    options: dict[str, str] | None = None
    fps: int | None = None  # keep one source frame per 1/fps s (GIF: 10); None keeps the source's rate


def make_clip(src: Path, dest_dir: Path, spec: ClipSpec) -> Path:
    """Transcode the first `duration_s` of a real clip; keeps its frame rate unless `fps` or `vfr`."""
    dest = dest_dir / spec.name
    if dest.exists():
        return dest
    tmp = dest.with_name("tmp-" + dest.name)
    with av.open(str(src)) as inp, av.open(str(tmp), mode="w") as out:
        vin = inp.streams.video[0]
        fps = 10 if spec.codec == "gif" else spec.fps  # GIF's centisecond clock holds 10 fps exactly
        rate = Fraction(fps) if fps else vin.average_rate or Fraction(25)
        vout = out.add_stream(spec.codec, rate=rate, options=spec.options or {})
        turns = spec.rotation // 90 if spec.upright else 0
        vout.width, vout.height = (spec.height, spec.width) if turns % 2 else (spec.width, spec.height)
        vout.pix_fmt = spec.pix_fmt
        tb = Fraction(1, 1000) if spec.vfr else 1 / rate
        vout.codec_context.time_base = tb
        if spec.sar is not None:
            vout.codec_context.sample_aspect_ratio = spec.sar
        if spec.rotation:
            vout.set_display_rotation(spec.rotation)
        aout = None
        if spec.audio and inp.streams.audio:
            aout = out.add_stream(spec.audio, rate=48000)
            aout.codec_context.layout = "stereo"
        n = 0
        pts = 0
        step = Fraction(1, 1) / rate
        bucket = -1
        for frame in inp.decode(vin):
            t = float(frame.pts * frame.time_base)
            if t >= spec.duration_s or (spec.max_frames is not None and n >= spec.max_frames):
                break
            if fps:  # keep one source frame per 1/fps s
                if int(t * fps) == bucket:
                    continue
                bucket = int(t * fps)
            small = frame.reformat(width=spec.width, height=spec.height, format=spec.pix_fmt)
            if spec.upright:  # what a phone does: upright scene, sensor-oriented pixels, a tag to turn them
                turned = np.ascontiguousarray(np.rot90(small.to_ndarray(format="rgb24"), -turns))
                small = av.VideoFrame.from_ndarray(turned, format="rgb24").reformat(format=spec.pix_fmt)
            small.pts = pts if spec.vfr else n
            small.time_base = tb
            for packet in vout.encode(small):
                out.mux(packet)
            n += 1
            pts += int(float(step) * 1000 * (2 if spec.vfr and n % 3 == 0 else 1))
        for packet in vout.encode(None):
            out.mux(packet)
        if aout is not None:
            fmt = aout.codec_context.codec.audio_formats[0].name
            resampler = av.AudioResampler(format=fmt, layout="stereo", rate=48000)
            inp.seek(0)
            for aframe in inp.decode(inp.streams.audio[0]):
                if aframe.pts is not None and float(aframe.pts * aframe.time_base) >= spec.duration_s:
                    break
                aframe.pts = None
                for r in resampler.resample(aframe):
                    out.mux(aout.encode(r))
            for r in resampler.resample(None):
                out.mux(aout.encode(r))
            out.mux(aout.encode(None))
    tmp.rename(dest)
    return dest


@dataclass(frozen=True)
class MediaFacts:
    container: str
    codec: str
    width: int
    height: int
    frames: int
    rate: Fraction | None
    last_pts_s: float
    intervals_ms: tuple[int, ...]
    rotation: int
    audio: str | None
    audio_duration_s: float | None
    alpha_mean: float | None  # mean alpha of the middle frame, when the stream has alpha
    luma_mean: float
    sar: Fraction | None  # the stream's sample aspect ratio as players read it (container, else codec)


def inspect(path: Path) -> MediaFacts:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        codec = v.codec_context.name
        # FFmpeg's native VP9 decoder drops the alpha side channel; libvpx keeps it
        alpha_meta = v.metadata.get("alpha_mode") == "1" or v.metadata.get("ALPHA_MODE") == "1"
        decoder = av.codec.CodecContext.create("libvpx-vp9", "r") if codec == "vp9" and alpha_meta else None
        times: list[float] = []
        frames: list[av.VideoFrame] = []
        rotation = 0
        audio = adur = None
        streams = [v, *c.streams.audio[:1]]
        last_audio = 0.0
        for packet in c.demux(*streams):
            if packet.stream.type == "audio":
                if packet.pts is not None:
                    end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    last_audio = max(last_audio, end)
                continue
            decoded = decoder.decode(packet) if decoder is not None else packet.decode()
            for f in decoded:
                if not times:
                    rotation = int(f.rotation or 0) % 360
                times.append(float(f.pts * f.time_base) if f.pts is not None else 0.0)
                if len(frames) < 64:
                    frames.append(f)
        mid = frames[len(frames) // 2]
        has_alpha = "a" in mid.format.name.replace("gray", "") and mid.format.name not in ("pal8",)
        alpha_mean = float(mid.to_ndarray(format="rgba")[..., 3].mean()) if has_alpha else None
        luma_mean = float(mid.to_ndarray(format="gray").mean())
        if c.streams.audio:
            audio = c.streams.audio[0].codec_context.name
            adur = last_audio
        intervals = tuple(round((b - a) * 1000) for a, b in zip(times, times[1:], strict=False))
        return MediaFacts(
            container=c.format.name,
            codec=codec,
            width=v.codec_context.width,
            height=v.codec_context.height,
            frames=len(times),
            rate=v.average_rate,
            last_pts_s=times[-1] - times[0] if times else 0.0,
            intervals_ms=intervals,
            rotation=rotation,
            audio=audio,
            audio_duration_s=adur,
            alpha_mean=alpha_mean,
            luma_mean=luma_mean,
            sar=v.sample_aspect_ratio,
        )


def apply_display_matrix(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Stored pixels [H,W,...] -> what a player shows, straight from the display matrix's
    definition (libavutil/display.h: x' = a*x + c*y, y' = b*x + d*y), not from PyAV's rotation
    getter or the service's own code: the independent reference the orientation tests check."""
    a, b, c, d = (float(matrix[i]) / 65536 for i in (0, 1, 3, 4))
    h, w = pixels.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    dx = np.rint(a * xs + c * ys).astype(np.int64)
    dy = np.rint(b * xs + d * ys).astype(np.int64)
    dx -= dx.min()
    dy -= dy.min()
    shown = np.zeros((int(dy.max()) + 1, int(dx.max()) + 1, *pixels.shape[2:]), pixels.dtype)
    shown[dy, dx] = pixels
    return shown


def displayed(path: Path, fmt: str = "rgb24", count: int = 1) -> list[np.ndarray]:
    """The first `count` frames as a player shows them (display matrix applied when present)."""
    shown: list[np.ndarray] = []
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        codec = v.codec_context.name
        alpha = v.metadata.get("alpha_mode") == "1" or v.metadata.get("ALPHA_MODE") == "1"
        decoder = av.codec.CodecContext.create("libvpx-vp9", "r") if codec == "vp9" and alpha else None
        for packet in c.demux(v):
            for f in decoder.decode(packet) if decoder is not None else packet.decode():
                pixels = f.to_ndarray(format=fmt)
                matrices = [sd for sd in f.side_data if sd.type.name == "DISPLAYMATRIX"]
                if matrices:
                    pixels = apply_display_matrix(pixels, np.frombuffer(bytes(matrices[0]), "<i4"))
                shown.append(pixels)
                if len(shown) == count:
                    return shown
    return shown


@dataclass(frozen=True)
class SyncSpec:
    """A clip whose sync can be measured: black frames but one (a person, which the matting model
    sees, so the flash survives into masks and composites) and a 10 ms 1 kHz click in silent audio
    at the same input instant `flash_s`. `video_start_s`/`audio_start_s` offset each stream; a
    negative start in MP4 becomes an edit list that hides the frames before 0."""

    name: str
    vcodec: str
    acodec: str
    video_start_s: float = 0.0
    audio_start_s: float = 0.0
    flash_s: float = 0.6
    duration_s: float = 1.2
    fps: int = 25
    tags: tuple[tuple[str, str], ...] = (("language", "fra"), ("title", "Commentaire"))
    options: dict[str, str] | None = None


def make_sync_clip(person: Path, dest_dir: Path, spec: SyncSpec) -> Path:
    """Mux `spec` (320x180, mono 48 kHz) with PyAV; `person` is a real clip with a person in it."""
    dest = dest_dir / spec.name
    if dest.exists():
        return dest
    with av.open(str(person)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == 20:
                flash = f.reformat(width=320, height=180, format="rgb24").to_ndarray()
                break
    rate = 48000
    tmp = dest.with_name("tmp-" + dest.name)
    with av.open(str(tmp), mode="w") as out:
        v = out.add_stream(spec.vcodec, rate=spec.fps, options=spec.options or {})
        v.width, v.height, v.pix_fmt = 320, 180, "yuv420p"
        v.codec_context.time_base = Fraction(1, spec.fps)
        a = out.add_stream(spec.acodec, rate=rate)
        a.codec_context.layout = "mono"
        for key, value in spec.tags:
            a.metadata[key] = value
        first = round(spec.video_start_s * spec.fps)
        black = np.zeros((180, 320, 3), np.uint8)
        for i in range(round(spec.duration_s * spec.fps)):
            pts = first + i
            rgb = flash if pts == round(spec.flash_s * spec.fps) else black
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, spec.fps)
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
        samples = np.zeros(round(spec.duration_s * rate), np.float32)
        click = round((spec.flash_s - spec.audio_start_s) * rate)
        samples[click : click + 480] = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(480) / rate)
        fmt = a.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate)
        start = round(spec.audio_start_s * rate)
        for offset in range(0, len(samples), 960):
            chunk = av.AudioFrame.from_ndarray(
                samples[None, offset : offset + 960], format="flt", layout="mono"
            )
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, start + offset, Fraction(1, rate)
            for r in resampler.resample(chunk):
                for packet in a.encode(r):
                    out.mux(packet)
        for packet in a.encode(None):
            out.mux(packet)
    tmp.rename(dest)
    return dest


@dataclass(frozen=True)
class SyncFacts:
    """What a player presents, in seconds of the file's own timeline (edit lists, priming applied)."""

    video_start_s: float  # first decoded frame
    audio_start_s: float  # first decoded sample
    flash_s: float  # brightest frame
    click_s: float  # first sample at half the click's peak
    video_end_s: float  # last frame + one frame interval
    audio_end_s: float  # end of the last decoded sample
    audio_tags: dict[str, str]


def measure_sync(path: Path) -> SyncFacts:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        times, brightness = [], []
        for frame in c.decode(stream):
            times.append(float(frame.pts * frame.time_base))
            brightness.append(float(frame.to_ndarray(format="gray").mean()))
        interval = 1 / float(stream.average_rate or 25)
    with av.open(str(path)) as c:
        audio = c.streams.audio[0]
        meta = dict(audio.metadata)
        chunks: list[tuple[float, np.ndarray, int]] = []
        for frame in c.decode(audio):
            data = np.abs(frame.to_ndarray().astype(np.float64))
            envelope = (
                data.max(axis=0)
                if frame.format.is_planar
                else data.reshape(-1, frame.layout.nb_channels).max(axis=1)
            )
            chunks.append((float(frame.pts * frame.time_base), envelope, frame.sample_rate))
    peak = max(float(e.max()) for _, e, _ in chunks)
    click = next(t + int(np.argmax(e >= peak / 2)) / r for t, e, r in chunks if (e >= peak / 2).any())
    tags = {k: meta[k] for k in ("language", "title") if k in meta}
    if "title" not in tags and "name" in meta:  # MP4/MOV titles read back as "name"
        tags["title"] = meta["name"]
    return SyncFacts(
        video_start_s=times[0],
        audio_start_s=chunks[0][0],
        flash_s=times[int(np.argmax(brightness))],
        click_s=click,
        video_end_s=times[-1] + interval,
        audio_end_s=chunks[-1][0] + len(chunks[-1][1]) / chunks[-1][2],
        audio_tags=tags,
    )


# Input transparency of the alpha clips: columns [0, CLEAR_TO) clear, [CLEAR_TO, HALF_TO) half
# transparent (128; GIF has no half: clear there too), the rest opaque. The person of the source
# clip stands in columns ~147-210, so the half band crosses it.
CLEAR_TO, HALF_TO = 128, 160


def input_alpha(width: int = 320, height: int = 180, binary: bool = False) -> np.ndarray:
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, :HALF_TO] = 0 if binary else 128
    alpha[:, :CLEAR_TO] = 0
    return alpha


ALPHA_CODECS = {  # clip name -> (encoder, pix_fmt, options); .gif is written by Pillow
    "alpha_vp9.webm": (
        "libvpx-vp9",
        "yuva420p",
        {"deadline": "realtime", "cpu-used": "8", "auto-alt-ref": "0"},
    ),
    "alpha_prores.mov": ("prores_ks", "yuva444p10le", {"profile": "4"}),
    "alpha_png.mov": ("png", "rgba", {}),
    "alpha.gif": ("gif", "", {}),
}


def make_alpha_clip(person: Path, dest_dir: Path, name: str, frames: int = 10) -> Path:
    """The first `frames` frames of a real clip at 320x180 with `input_alpha` as their own alpha
    (25 fps; GIF: 10 fps), in one of ALPHA_CODECS. What the clear pixels store is the scene."""
    dest = dest_dir / name
    if dest.exists():
        return dest
    with av.open(str(person)) as c:
        rgb = [
            f.reformat(width=320, height=180, format="rgb24").to_ndarray()
            for _, f in zip(range(frames), c.decode(video=0), strict=False)
        ]
    tmp = dest.with_name("tmp-" + dest.name)
    codec, pix_fmt, options = ALPHA_CODECS[name]
    if codec == "gif":
        alpha = input_alpha(binary=True)
        images = [Image.fromarray(np.dstack([f, alpha]), "RGBA") for f in rgb]
        images[0].save(tmp, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0, disposal=2)
    else:
        alpha = input_alpha()
        with av.open(str(tmp), mode="w", format=dest.suffix[1:]) as out:
            v = out.add_stream(codec, rate=25, options=options)
            v.width, v.height, v.pix_fmt = 320, 180, pix_fmt
            v.codec_context.time_base = Fraction(1, 25)
            for i, f in enumerate(rgb):
                frame = av.VideoFrame.from_ndarray(np.dstack([f, alpha]), format="rgba").reformat(
                    format=pix_fmt
                )
                frame.pts, frame.time_base = i, Fraction(1, 25)
                for packet in v.encode(frame):
                    out.mux(packet)
            for packet in v.encode(None):
                out.mux(packet)
    tmp.rename(dest)
    return dest


def decode_rgba(path: Path) -> list[np.ndarray]:
    """Every frame as uint8 [H,W,4] (opaque formats: alpha 255), VP9 alpha through libvpx."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tagged = {k.lower(): x for k, x in v.metadata.items()}.get("alpha_mode") == "1"
        if v.codec_context.name == "vp9" and tagged:
            decoder = av.codec.CodecContext.create("libvpx-vp9", "r")
            return [f.to_ndarray(format="rgba") for p in c.demux(v) for f in decoder.decode(p)]
        return [f.to_ndarray(format="rgba") for f in c.decode(v)]


def first_frame_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            return f.to_ndarray(format="rgb24")
    raise AssertionError("no frame")


@contextmanager
def serve(root: Path, slow_delay_s: float = 30.0) -> Iterator[str]:
    """Serves `root` on loopback; /missing/* answers 404, /slow/<name> stalls after the headers."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            if self.path.startswith("/missing/"):
                self.send_error(404)
                return
            if self.path.startswith("/slow/"):
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                deadline = time.monotonic() + slow_delay_s
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(b"\0" * 16)
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    pass
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# The input clips every video test uses (each container/codec the API accepts, plus edge cases),
# transcoded once per session from one real clip (conftest `video_clips`).
_X265 = {"x265-params": "log-level=error"}
_VP9 = {"deadline": "realtime", "cpu-used": "8"}
INPUT_CLIPS = {
    "h264_aac.mp4": ClipSpec("h264_aac.mp4", "libx264", audio="aac"),
    "hevc.mov": ClipSpec("hevc.mov", "libx265", options=_X265),
    "vp9_opus.webm": ClipSpec("vp9_opus.webm", "libvpx-vp9", audio="libopus", options=_VP9),
    "av1.mp4": ClipSpec("av1.mp4", "libsvtav1", options={"preset": "12", "svtav1-params": "log-level=0"}),
    "mjpeg.avi": ClipSpec("mjpeg.avi", "mjpeg", pix_fmt="yuvj420p"),
    "mjpeg.mov": ClipSpec("mjpeg.mov", "mjpeg", pix_fmt="yuvj420p"),
    "anim.gif": ClipSpec("anim.gif", "gif", pix_fmt="rgb8"),
    "vfr.mp4": ClipSpec("vfr.mp4", "libx264", vfr=True, duration_s=0.4),  # 12 frames, 4 of them doubled
    "rot90.mp4": ClipSpec("rot90.mp4", "libx264", rotation=90),
    "one.mp4": ClipSpec("one.mp4", "libx264", max_frames=1),
    "mpeg4.avi": ClipSpec("mpeg4.avi", "mpeg4"),
    # 10 fps: the 4 s cut is 40 frames for the models, not 120 (the cut is what the tests check)
    "long.mp4": ClipSpec("long.mp4", "libx264", duration_s=5.2, audio="aac", fps=10),
}
BROKEN_CLIPS = ("truncated.mp4", "corrupt.mp4", "noise.mp4", "not-a-video.txt")


def make_input_clips(source: Path, root: Path) -> dict[str, Path]:
    """INPUT_CLIPS transcoded from `source`, plus files that are not (or no longer) videos."""
    out = {name: make_clip(source, root, spec) for name, spec in INPUT_CLIPS.items()}
    data = bytearray(out["h264_aac.mp4"].read_bytes())
    # truncated: the MP4 index (moov, written last) is gone, so the file does not open
    (root / "truncated.mp4").write_bytes(bytes(data[:6000]))
    # corrupt: opens (index intact) but the coded frames are garbage
    start = data.find(b"mdat") + 4
    data[start : start + len(data) // 2] = b"\x11" * (len(data) // 2)
    (root / "corrupt.mp4").write_bytes(bytes(data))
    (root / "noise.mp4").write_bytes(os.urandom(4096))
    (root / "not-a-video.txt").write_text("hello")
    out.update({name: root / name for name in BROKEN_CLIPS})
    return out
