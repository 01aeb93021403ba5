"""Encode result frames (masks, composites, RGBA) with the input's timing, geometry and audio.

`VideoWriter` keeps the input's resolution, sample aspect ratio, display rotation, average frame
rate and each frame's own timestamp (so VFR stays VFR), and carries the audio: stream-copied
when the target container can hold the codec, re-encoded otherwise (table in docs/video.md).
Frames arrive upright (as the input displays); how they are stored, and in which pixel format
an odd size fits, is geometry.py's choice. Encoding runs on its own thread behind a bounded
queue so it overlaps inference.

One timeline for both streams: the output's 0 is the input instant where the first of them is
presented (the first video frame, or the first audio sample a player plays, priming cut), and
every timestamp keeps its distance from it, so an offset between audio and video, an edit list
or a negative start comes out as it went in. A trim ends both streams at the same input instant.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from gateway.video.geometry import encoder_options, encoder_pix_fmt, encoder_refuses, output_geometry
from gateway.video.matroska import MatroskaPatchError, set_display_size
from gateway.video.probe import MediaError, VideoInfo

log = logging.getLogger("gateway.video.encode")


@dataclass(frozen=True)
class Preset:
    name: str
    format: str  # libavformat muxer
    extension: str
    media_type: str
    codec: str
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)
    codec_tag: str | None = None
    audio_copy: frozenset[str] = frozenset()  # audio codecs the container holds as they are
    audio_codec: str | None = None  # re-encode target; None = the format has no audio
    time_base: Fraction | None = None  # forced by the format (GIF: centiseconds)
    alpha: bool = False  # frames written are RGBA


_X264 = {"preset": "veryfast", "crf": "18"}
_X265 = {"preset": "veryfast", "crf": "22", "x265-params": "log-level=error"}
_VP9 = {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0", "row-mt": "1"}
_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})
_MOV_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_s16be"})
_MKV_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "vorbis", "flac", "pcm_s16le", "pcm_s24le"})
_WEBM_AUDIO = frozenset({"opus", "vorbis"})


def _h264(name: str, fmt: str, ext: str, media: str, audio: frozenset[str]) -> Preset:
    return Preset(name, fmt, ext, media, "libx264", "yuv420p", _X264, None, audio, "aac")


def _h265(name: str, fmt: str, ext: str, media: str, audio: frozenset[str], tag: str | None) -> Preset:
    # hvc1 tagging is what QuickTime/Safari need to play HEVC in MP4/MOV
    return Preset(name, fmt, ext, media, "libx265", "yuv420p", _X265, tag, audio, "aac")


def _vp9(name: str, fmt: str, ext: str, media: str, audio: frozenset[str]) -> Preset:
    return Preset(name, fmt, ext, media, "libvpx-vp9", "yuv420p", _VP9, None, audio, "libopus")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _h264("mp4_h264", "mp4", "mp4", "video/mp4", _MP4_AUDIO),
        _h265("mp4_h265", "mp4", "mp4", "video/mp4", _MP4_AUDIO, "hvc1"),
        _vp9("webm_vp9", "webm", "webm", "video/webm", _WEBM_AUDIO),
        _h265("mov_h265", "mov", "mov", "video/quicktime", _MOV_AUDIO, "hvc1"),
        # ProRes 4444 (profile 4) as the document names it; 4:4:4 10-bit
        Preset(
            "mov_proresks", "mov", "mov", "video/quicktime", "prores_ks", "yuv444p10le",
            {"profile": "4"}, None, _MOV_AUDIO, "aac",
        ),
        _h264("mkv_h264", "matroska", "mkv", "video/x-matroska", _MKV_AUDIO),
        _h265("mkv_h265", "matroska", "mkv", "video/x-matroska", _MKV_AUDIO, None),
        _vp9("mkv_vp9", "matroska", "mkv", "video/x-matroska", _MKV_AUDIO),
        # GIF: no audio; its clock ticks in centiseconds; gray keeps all 256 mask levels
        Preset("gif", "gif", "gif", "image/gif", "gif", "gray", time_base=Fraction(1, 100)),
    )
}  # fmt: skip
DEFAULT_PRESET = "mp4_h264"

# Transparent outputs of /video/submit/v1 (no background chosen).
TRANSPARENT_PRESETS: dict[str, Preset] = {
    "webm": Preset(
        "webm_vp9_alpha", "webm", "webm", "video/webm", "libvpx-vp9", "yuva420p",
        {**_VP9, "auto-alt-ref": "0"}, None, _WEBM_AUDIO, "libopus", None, True,
    ),
    "mov": Preset(
        "mov_prores4444_alpha", "mov", "mov", "video/quicktime", "prores_ks", "yuva444p10le",
        {"profile": "4", "alpha_bits": "16"}, None, _MOV_AUDIO, "aac", None, True,
    ),
}  # fmt: skip


class EncodeError(Exception):
    """The encoder or muxer failed; a server-side fault, never the caller's input."""


_STOP = object()
# Audio track tags players show (language menu, track name). Each muxer writes them its own way:
# MP4/MOV keep the language in mdhd and the title in a udta "name" box (read back as "name"),
# Matroska/WebM as Language and Name elements; handler_name is MP4/MOV's hdlr track name.
_AUDIO_TAGS = ("language", "title", "handler_name")
# Demuxed packets read before giving up on decoding the first audio frame (then: first packet).
_FIRST_AUDIO_PACKETS = 64


def audio_tags(stream: av.audio.stream.AudioStream) -> dict[str, str]:
    """The input audio stream's language, title and handler name, where it has them."""
    meta = dict(stream.metadata)
    if "title" not in meta and "name" in meta:  # what FFmpeg reads MP4/MOV's udta title as
        meta["title"] = meta["name"]
    return {key: meta[key] for key in _AUDIO_TAGS if meta.get(key)}


def first_audio_time(path: Path) -> Fraction | None:
    """Input-timeline seconds of the first audio sample a player presents, or None without audio.

    The first decoded frame's timestamp: the decoder has already dropped encoder priming (MP4
    edit lists, Matroska/Opus pre-skip), which the first packet's timestamp still includes. Falls
    back to the first packet's timestamp when nothing decodes within a few packets.
    """
    first_packet: Fraction | None = None
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        try:
            for count, packet in enumerate(container.demux(stream)):
                if packet.pts is not None and first_packet is None:
                    first_packet = Fraction(packet.pts) * packet.time_base
                for frame in packet.decode():
                    if frame.pts is not None:
                        return Fraction(frame.pts) * frame.time_base
                if count >= _FIRST_AUDIO_PACKETS:
                    break
        except (av.error.FFmpegError, ValueError):
            pass
    return first_packet


def _head(frame: av.AudioFrame, samples: int) -> av.AudioFrame:
    """The first `samples` samples of a decoded frame (same format, layout, rate and pts)."""
    data = frame.to_ndarray()
    width = samples if frame.format.is_planar else samples * frame.layout.nb_channels
    head = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data[:, :width]), format=frame.format.name, layout=frame.layout.name
    )
    head.sample_rate = frame.sample_rate
    head.pts = frame.pts
    head.time_base = frame.time_base
    return head


class _AudioCarrier:
    """Copies or re-encodes the input's first audio stream, interleaved with the video as it goes.

    Times are input-timeline seconds. Nothing is written before `start(origin, cut)`: `origin` is
    the input instant that becomes 0 in the output (shared with the video), `cut` the instant the
    kept span ends (None: the whole stream). Copied packets keep their own pts/dts, both moved by
    the same origin, so priming packets keep their negative times and the muxer its edit list;
    except in Matroska (see `drops_priming`).
    Re-encoded audio starts at its first decoded sample's place and then counts samples, so
    container timestamp rounding (Matroska: 1 ms) does not jitter the encoder's packets.
    """

    def __init__(self, out: av.container.OutputContainer, src: Path, preset: Preset) -> None:
        self.first_s = first_audio_time(src)
        self.inp = av.open(str(src), mode="r", metadata_errors="ignore")
        self.ain = self.inp.streams.audio[0]
        self.origin = Fraction(0)
        self.cut: Fraction | None = None
        self.clock: int | None = None  # next output sample (re-encoding), in 1/rate
        self.copy = self.ain.codec_context.name in preset.audio_copy
        # Matroska has no edit list and cannot store a negative time. FFmpeg's muxer accepts one only
        # down to a stream's CodecDelay, which it writes from the stream's `initial_padding`, a field
        # PyAV neither copies from an MP4 input nor lets us set; otherwise it moves every stream later
        # by the priming's length (AAC: 1024 samples, 21 ms) and players then play the priming. So a
        # copied packet lying wholly before the output's 0 (priming an MP4 edit list hid) is left
        # out: frames keep their times and the audio its presented length; the decoder starts
        # without that packet's pre-roll, a ramp-in over the first ~21 ms. A packet that straddles 0
        # is kept (real samples), and the muxer's shift is then that part of a frame only.
        self.drops_priming = self.copy and preset.format in ("matroska", "webm")
        if self.copy:
            self.aout = out.add_stream_from_template(self.ain)
        else:
            assert preset.audio_codec is not None
            rate = int(self.ain.codec_context.sample_rate or 48000)
            if preset.audio_codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            self.aout = out.add_stream(preset.audio_codec, rate=rate)
            layout = self.ain.codec_context.layout
            if layout is not None and layout.nb_channels in (1, 2):
                self.aout.codec_context.layout = layout.name
            else:
                self.aout.codec_context.layout = "stereo"
            fmt = self.aout.codec_context.codec.audio_formats[0].name
            self.resampler = av.AudioResampler(format=fmt, layout=self.aout.codec_context.layout, rate=rate)
            self.rate = rate
        for key, value in audio_tags(self.ain).items():
            self.aout.metadata[key] = value
        self.packets = self.inp.demux(self.ain)
        self.done = False
        self.out = out

    def start(self, origin: Fraction, cut: Fraction | None) -> None:
        self.origin, self.cut = origin, cut

    def _emit(self, packet: av.Packet) -> bool:
        """Mux or transcode one input packet; False once past the end of the kept span."""
        if packet.pts is None or packet.size == 0:
            return True
        if self.cut is not None and packet.pts * packet.time_base >= self.cut:
            return False
        if self.copy:
            shift = round(self.origin / packet.time_base)
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            if self.drops_priming and packet.pts + (packet.duration or 0) <= 0:
                return True
            packet.stream = self.aout
            self.out.mux(packet)
            return True
        for frame in self.ain.codec_context.decode(packet):
            kept = self._trim(frame)
            if kept is None:
                return False
            self._encode(kept)
        return True

    def _trim(self, frame: av.AudioFrame) -> av.AudioFrame | None:
        """The part of a decoded frame before the cut (sample exact); None when none is."""
        if self.cut is None or frame.pts is None:
            return frame
        start = frame.pts * frame.time_base
        if start >= self.cut:
            return None
        keep = round((self.cut - start) * frame.sample_rate)
        if keep <= 0:
            return None
        return frame if keep >= frame.samples else _head(frame, keep)

    def _encode(self, frame: av.AudioFrame | None) -> None:
        """Resample and encode (None flushes the resampler), placing samples on the output clock."""
        if self.clock is None and frame is not None:
            fallback = self.first_s if self.first_s is not None else self.origin
            at = frame.pts * frame.time_base if frame.pts is not None else fallback
            self.clock = max(0, round((at - self.origin) * self.rate))
        for rframe in self.resampler.resample(frame):
            rframe.pts = self.clock if self.clock is not None else 0
            rframe.time_base = Fraction(1, self.rate)
            self.clock = rframe.pts + rframe.samples
            self.out.mux(self.aout.encode(rframe))

    def advance(self, until_s: Fraction | None) -> None:
        """Write audio whose input time is before `until_s` (None: to the end)."""
        while not self.done:
            try:
                packet = next(self.packets)
            except StopIteration:
                self.done = True
                break
            if not self._emit(packet):
                self.done = True
                break
            if until_s is not None and packet.pts is not None and packet.pts * packet.time_base >= until_s:
                break

    def finish(self) -> None:
        self.advance(None)
        if not self.copy:
            self._encode(None)
            self.out.mux(self.aout.encode(None))
        self.inp.close()


class VideoWriter:
    """Writes the result video of any job: masks, composites and transparent frames alike.

    `write(frame, pts, duration)` queues one uint8 frame, upright at the input's display size: [H,W]
    (a mask, written grey), [H,W,3] RGB or [H,W,4] RGBA (transparent presets); `pts` and
    `duration` are in the input's time base. Each frame's own duration is kept on its packet, so
    the last frame shows as long as in the input (a GIF's long final delay, a slide's hold)
    instead of one average frame period. `close()` flushes and returns the number of frames
    written; `abort()` stops without flushing. Both `write` and `close` raise EncodeError with what
    the encoder thread hit.
    The constructor raises av.error.FFmpegError when the container or codec cannot be opened.
    """

    def __init__(
        self,
        out_path: Path,
        preset: Preset,
        info: VideoInfo,
        audio_from: Path | None,
        max_duration_s: float | None,
        queue_size: int = 8,
    ) -> None:
        self.out_path = out_path
        self.preset = preset
        self.info = info
        self.max_duration_s = max_duration_s
        self.geometry = output_geometry(preset.format, info)
        self.frames_written = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size))
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._container = av.open(str(out_path), mode="w", format=preset.format)
        try:
            self._stream = self._add_video_stream()
            self._audio = (
                _AudioCarrier(self._container, audio_from, preset)
                if audio_from is not None and info.audio is not None and preset.audio_codec is not None
                else None
            )
        except BaseException:
            self._container.close()
            raise
        self._thread = threading.Thread(target=self._run, name="video-encode", daemon=True)
        self._thread.start()

    def _add_video_stream(self) -> av.video.stream.VideoStream:
        p, info, geo = self.preset, self.info, self.geometry
        # Timestamps are written as the input has them, so the codec works in the input's time base.
        rate = info.fps if info.fps > 0 else Fraction(25)
        options = encoder_options(p.codec, p.options, geo.width, info.frame_count)
        stream = self._container.add_stream(p.codec, rate=rate, options=options)
        ctx = stream.codec_context
        ctx.width, ctx.height = geo.width, geo.height
        # colour until the first frame says it is a mask (_set_pix_fmt): the codec opens at it
        ctx.pix_fmt = encoder_pix_fmt(p.codec, p.pix_fmt, geo.width, geo.height, mono=False)
        ctx.time_base = p.time_base or info.time_base
        stream.time_base = p.time_base or info.time_base
        if geo.sample_aspect_ratio != 1:
            ctx.sample_aspect_ratio = geo.sample_aspect_ratio
        if p.codec_tag:
            ctx.codec_tag = p.codec_tag
        if p.format != "gif":
            ctx.color_range = 1  # limited ("tv") range: what players assume for YUV video
        if geo.rotation:
            stream.set_display_rotation(geo.rotation)
        return stream

    def _set_pix_fmt(self, first: np.ndarray) -> None:
        """Masks (2-D frames) at odd sizes are written 4:0:0; known only once the first frame comes."""
        p, geo, ctx = self.preset, self.geometry, self._stream.codec_context
        if ctx.is_open:
            return
        ctx.pix_fmt = encoder_pix_fmt(p.codec, p.pix_fmt, geo.width, geo.height, mono=first.ndim == 2)
        if ctx.pix_fmt == "gray" and p.format != "gif":
            # Full range, flagged: FFmpeg converts grey as full range whatever the flag says (a
            # limited mask would show 16..235), and a player assuming limited still shows 0 and
            # 255 as black and white.
            ctx.color_range = 2

    def write(self, frame: np.ndarray, pts: int, duration: int = 0) -> None:
        """Queue one frame; `pts` and `duration` (0: not known) are in the input's time base.
        Blocks while the queue is full."""
        while True:
            if self._error is not None:
                raise EncodeError(f"encoder failed: {self._error}") from self._error
            try:
                self._queue.put((frame, pts, duration), timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> int:
        """Flush everything; returns the number of frames written."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise EncodeError(f"encoder failed: {self._error}") from self._error
        self._write_display_size()
        return self.frames_written

    def _write_display_size(self) -> None:
        """Matroska states a SAR only as a display size, which PyAV cannot hand its muxer."""
        geo = self.geometry
        if self.preset.format not in ("matroska", "webm") or geo.sample_aspect_ratio == 1:
            return
        display_width = max(1, round(geo.width * geo.sample_aspect_ratio))
        try:
            set_display_size(self.out_path, display_width, geo.height)
        except (MatroskaPatchError, OSError) as exc:
            # the pixels are all there; only the aspect is lost, which is no reason to fail the job
            log.warning("sample aspect ratio not written to %s: %s", self.out_path.name, exc)

    def abort(self) -> None:
        self._abort.set()
        self._thread.join(timeout=30)

    def _to_video_frame(self, array: np.ndarray) -> av.VideoFrame:
        array = self.geometry.from_display(array)
        if array.ndim == 2:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="gray")
        elif array.shape[2] == 4:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgba")
        else:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        ctx = self._stream.codec_context
        if ctx.pix_fmt == "gray":  # GIF's grey, or a 4:0:0 mask: full range as it comes
            return vf.reformat(format="gray")
        return vf.reformat(format=ctx.pix_fmt, dst_color_range=1)

    def _start_timeline(self, first_pts: int) -> Fraction:
        """Fix the common origin at the first frame; returns the video's lead in seconds (how long
        after the output's 0 its first frame comes: > 0 when the audio starts earlier)."""
        first_s = first_pts * self.info.time_base
        if self._audio is None:
            return Fraction(0)
        audio_s = self._audio.first_s
        origin = first_s if audio_s is None else min(first_s, audio_s)
        # The trim is counted from the first frame, as the decoder counts it, for both streams.
        cut = None if self.max_duration_s is None else first_s + Fraction(self.max_duration_s)
        self._audio.start(origin, cut)
        return first_s - origin

    def _mux_video(self, packet: av.Packet, durations: dict[int, int]) -> None:
        duration = durations.pop(packet.pts, 0) if packet.pts is not None else 0
        if duration and not packet.duration:
            packet.duration = duration
        self._container.mux(packet)

    def _run(self) -> None:
        container = self._container
        try:
            start_pts: int | None = None
            lead = Fraction(0)
            last_out = -1
            out_tb = self._stream.codec_context.time_base
            # out pts -> that frame's duration: encoders leave packet durations at 0, and a muxer
            # then guesses the last frame's from the average rate
            durations: dict[int, int] = {}
            while True:
                if self._abort.is_set():
                    return
                try:
                    item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is _STOP:
                    break
                array, pts, duration = item  # type: ignore[misc]
                if start_pts is None:
                    start_pts = pts
                    self._set_pix_fmt(array)
                    lead = self._start_timeline(pts)
                rel = Fraction(pts - start_pts) * self.info.time_base
                if self.max_duration_s is not None and rel >= self.max_duration_s:
                    continue
                if out_tb != self.info.time_base:
                    out_pts = int((rel + lead) / out_tb)
                else:
                    out_pts = pts - start_pts + round(lead / out_tb)
                if out_pts <= last_out:
                    continue  # only GIF's coarse clock can fold two frames onto one tick
                last_out = out_pts
                if duration > 0:
                    shown = Fraction(duration) * self.info.time_base
                    if self.max_duration_s is not None:
                        shown = min(shown, self.max_duration_s - rel)  # the trim ends the last one
                    durations[out_pts] = max(1, round(shown / out_tb))
                vf = self._to_video_frame(array)
                vf.pts = out_pts
                vf.time_base = out_tb
                for packet in self._stream.encode(vf):
                    self._mux_video(packet, durations)
                self.frames_written += 1
                if self._audio is not None:
                    self._audio.advance(pts * self.info.time_base + Fraction(1, 2))
            for packet in self._stream.encode(None):
                self._mux_video(packet, durations)
            if self._audio is not None:
                self._audio.finish()
        except BaseException as exc:
            self._error = exc
        finally:
            try:
                container.close()
            except (av.error.FFmpegError, OSError) as exc:
                if self._error is None:
                    self._error = exc
            if self._audio is not None and self._error is not None:
                self._audio.inp.close()


def check_output_size(preset: Preset, info: VideoInfo) -> None:
    """Refuse, before any work, an input the preset's encoder cannot write at its exact size.

    Raises MediaError(422) naming the presets that can.
    """
    geo = output_geometry(preset.format, info)
    width, height = geo.width, geo.height
    minimum = encoder_refuses(preset.codec, width, height)
    if minimum is None:
        return
    fits = [p.name for p in PRESETS.values() if encoder_refuses(p.codec, width, height) is None]
    raise MediaError(
        422,
        "Output not possible for this input",
        f"Preset '{preset.name}' ({preset.codec}) cannot encode frames smaller than "
        f"{minimum}x{minimum} pixels, and this video is {width}x{height}; "
        f"choose one of: {', '.join(fits)}.",
    )


def preset_by_name(name: str) -> Preset:
    """Any preset a job record may name: the nine documented ones or a transparent output."""
    if name in PRESETS:
        return PRESETS[name]
    for preset in TRANSPARENT_PRESETS.values():
        if preset.name == name:
            return preset
    raise KeyError(name)
