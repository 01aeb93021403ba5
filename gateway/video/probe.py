"""Read what a video file is before any work is queued for it.

The gateway probes downloaded inputs before answering, so the documented 413/415/422 come back on
the request itself; the worker probes again (cheap) because a file may have been replaced by a
retry. One decoded frame is pulled so "it opens but cannot be decoded" is caught here too, and
because the display rotation travels in frame side data. Durations and frame counts come from the
packets the file holds, not only from what its header declares (gateway/video/integrity.py): a
header that claims less than the packets hold is overruled, one that claims more is a truncated
or damaged file and refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from gateway.video.alpha import stream_has_alpha
from gateway.video.integrity import (
    PacketScan,
    frame_slack,
    gif_trailer_missing,
    missing_media,
    scan_packets,
    slack_s,
)

# Demuxer names as libavformat reports them -> the container the API talks about.
CONTAINERS: dict[str, str] = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4/mov",
    "matroska,webm": "webm",
    "avi": "avi",
    "gif": "gif",
}
# Decoder names -> the codec names of the API document ("PhotoJPEG" is MJPEG in a MOV/AVI).
VIDEO_CODECS: dict[str, str] = {
    "h264": "H.264",
    "hevc": "H.265",
    "vp9": "VP9",
    "libvpx-vp9": "VP9",
    "av1": "AV1",
    "libdav1d": "AV1",
    "mjpeg": "PhotoJPEG",
    # the codecs that carry transparency in MOV (gateway/video/alpha.py)
    "prores": "ProRes",
    "png": "PNG",
}
SUPPORTED_TEXT = (
    "Supported containers: .mp4, .mov, .webm, .avi, .gif; "
    "supported codecs: H.264, H.265 (HEVC), VP9, AV1, PhotoJPEG, ProRes, PNG (and GIF in .gif)."
)


class MediaError(Exception):
    """An input the API refuses: `status` is the HTTP status the caller gets."""

    def __init__(self, status: int, message: str, details: str) -> None:
        super().__init__(f"{status} {message}: {details}")
        self.status = status
        self.message = message
        self.details = details


@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str


@dataclass(frozen=True)
class VideoInfo:
    container: str  # libavformat demuxer name
    video_codec: str  # decoder name (h264, hevc, vp9, av1, mjpeg, gif)
    width: int  # coded size: what the decoder hands out
    height: int
    fps: Fraction  # average rate; per-frame timestamps are kept as they are (but see `retimed`)
    time_base: Fraction
    start_pts: int
    duration_s: float  # what the packets hold when the header claims less (see integrity.py)
    frame_count: int
    frame_count_exact: bool
    sample_aspect_ratio: Fraction
    rotation: int  # counter-clockwise degrees of the display matrix (PyAV's convention)
    pix_fmt: str
    has_alpha: bool
    audio: AudioInfo | None
    declared_duration_s: float = 0.0  # what the container header says (0: nothing)
    packets: int = 0  # video packets that carry data: the frames the decoder must hand out
    # The frames carry no usable timing (every one at the same timestamp): they are timed at the
    # nominal `fps` instead, frame i at i / fps (gateway/video/decode.py).
    retimed: bool = False


def _fraction(value: object, default: Fraction) -> Fraction:
    if value is None:
        return default
    try:
        f = Fraction(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return default
    return f if f > 0 else default


# Beyond this a "nominal rate" is a time base, not a frame rate (the 240 fps of the API's limits).
MAX_NOMINAL_FPS = 240


def nominal_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """The stream's nominal frame rate, for frames without usable timestamps: FFmpeg's guess
    (av_guess_frame_rate: the container's or the codec's declared rate), else 25 fps."""
    rate = _fraction(stream.guessed_rate, Fraction(25))
    return rate if rate <= MAX_NOMINAL_FPS else Fraction(25)


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def probe(path: Path, *, max_side: int = 16000, max_duration_s: float | None = None) -> VideoInfo:
    """Describe `path` or raise MediaError with the status the API documents.

    415 unsupported container/codec, 413 a side over `max_side`, 422 longer than `max_duration_s`
    (None: no limit, for callers that trim instead) by header or by packets (frames without
    timing: by their count at the nominal rate), 422 "Damaged video"
    when the streams end well before the declared duration or frame count (truncated), 400
    unreadable or no video stream. Reads the whole file once (demux only, no decoding).
    """
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        raise MediaError(
            400,
            "Unreadable video",
            "The file could not be opened as a video. " + SUPPORTED_TEXT,
        ) from None
    with container:
        fmt = container.format.name
        if fmt not in CONTAINERS:
            # FFmpeg's short names (jpeg_pipe, matroska,webm) mean nothing to a client; its long
            # name says what the file really is ("piped jpeg sequence" for a photo named .mp4)
            what = container.format.long_name or fmt
            details = f"The file reads as {what}, not a supported video. {SUPPORTED_TEXT}"
            raise MediaError(415, "Unsupported container", details)
        if not container.streams.video:
            raise MediaError(400, "No video stream", "The file has no video stream. " + SUPPORTED_TEXT)
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:  # a codec tag no decoder knows: a corrupt header or a foreign codec
            raise MediaError(415, "Unsupported codec", f"The video codec is not recognised. {SUPPORTED_TEXT}")
        codec = ctx.name
        if codec not in VIDEO_CODECS and not (codec == "gif" and fmt == "gif"):
            raise MediaError(
                415, "Unsupported codec", f"Video codec '{codec}' is not accepted. {SUPPORTED_TEXT}"
            )
        width, height = int(ctx.width), int(ctx.height)
        if width <= 0 or height <= 0:
            raise MediaError(400, "Unreadable video", "The video stream has no frame size.")
        if width > max_side or height > max_side:
            raise MediaError(
                413,
                "Payload Too Large",
                f"Input resolution {width}x{height} exceeds the {max_side}x{max_side} limit.",
            )
        declared = _duration_s(container, stream)
        fps = _fraction(stream.average_rate, Fraction(0)) or _fraction(stream.guessed_rate, Fraction(25))
        declared_frames = int(stream.frames or 0)
        start_s = container.start_time / av.time_base if container.start_time is not None else None
        scan = _scan(path, stream.index)
        held = scan.video_end_s - scan.video_start_s
        # Every frame at one timestamp (a broken muxer or an edited MP4 `stts`): players and FFmpeg
        # fall back to the stream's nominal rate, and so does everything here (limits included).
        retimed = scan.complete and scan.video_packets > 1 and scan.video_times == 1
        if retimed:
            fps = nominal_rate(stream)
            held = scan.video_packets / float(fps)
        # the header is believed unless the packets hold more (a lie that would dodge the limits)
        duration = held if held > declared + slack_s(declared, float(fps)) else declared
        missing = _broken_timing(scan, retimed) or missing_media(
            scan,
            0.0 if retimed else declared,  # without timing, only the frame count can tell a cut file
            declared_frames,
            float(fps),
            scan.video_start_s if start_s is None else start_s,
        )
        if missing is None and fmt == "gif" and gif_trailer_missing(path):
            missing = "The GIF ends before its trailer: it is truncated."
        if missing is not None:
            raise MediaError(422, "Damaged video", f"{missing} Export or upload the whole file again.")
        if max_duration_s is not None and duration > max_duration_s + 1e-3:
            raise MediaError(
                422,
                "Video too long",
                f"Input duration {duration:.2f}s exceeds the {max_duration_s:g}s limit; "
                "trim the video and submit it again.",
            )
        time_base = _fraction(stream.time_base, Fraction(1, 90000))
        frames = declared_frames
        exact = frames > 0 and scan.complete and frames == scan.video_packets_stored
        if scan.complete and scan.video_packets > 0:
            frames = scan.video_packets  # what the file holds, whatever the header counts
        elif not exact:
            frames = max(1, round(duration * fps)) if duration > 0 else 0
        rotation, pix_fmt, first_pts = _first_frame(container, stream)
        audio = None
        if container.streams.audio:
            a = container.streams.audio[0]
            actx = a.codec_context
            audio = AudioInfo(
                index=a.index,
                codec=actx.name,
                sample_rate=int(actx.sample_rate or 0),
                channels=int(actx.channels or 0),
                layout=actx.layout.name if actx.layout is not None else "",
            )
        return VideoInfo(
            container=fmt,
            video_codec=codec,
            width=width,
            height=height,
            fps=fps,
            time_base=time_base,
            start_pts=first_pts,
            duration_s=duration,
            frame_count=frames,
            frame_count_exact=exact,
            sample_aspect_ratio=_fraction(stream.sample_aspect_ratio, Fraction(1)),
            rotation=rotation,
            pix_fmt=pix_fmt,
            has_alpha=stream_has_alpha(stream, pix_fmt),
            audio=audio,
            declared_duration_s=declared,
            packets=scan.video_packets if scan.complete else 0,
            retimed=retimed,
        )


def _broken_timing(scan: PacketScan, retimed: bool) -> str | None:
    """Why the frames' timestamps cannot be used (the user-facing sentence), or None. Checked
    before truncation: frames stacked on a few timestamps also end the streams early, and "cut
    short" would send the user after the wrong problem."""
    if retimed or not scan.complete:
        return None
    stored, times = scan.video_packets_stored, scan.video_times_stored
    if stored > 2 and times * 2 < stored:  # e.g. an MP4 whose stts says 0 but whose ctts does not
        distinct = f"{times} distinct timestamp{'' if times == 1 else 's'}"
        return f"Its {stored} frames carry only {distinct}: the file's timing is broken."
    repeats = scan.video_packets - scan.video_times
    if repeats > frame_slack(scan.video_packets):
        return f"{repeats} of its {scan.video_packets} frames repeat an earlier frame's timestamp."
    return None


def _scan(path: Path, video_index: int) -> PacketScan:
    try:
        return scan_packets(path, video_index)
    except (av.error.FFmpegError, OSError):
        raise MediaError(400, "Unreadable video", "The file could not be read as a video.") from None


def _first_frame(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> tuple[int, str, int]:
    """Decode one frame: proves the stream decodes and yields rotation, pixel format, start pts."""
    try:
        for frame in container.decode(stream):
            rotation = int(round(frame.rotation or 0)) % 360
            return rotation, frame.format.name, int(frame.pts or 0)
    except (av.error.FFmpegError, ValueError):
        raise MediaError(
            422,
            "Undecodable video",
            "The video stream could not be decoded; "
            "the file may be truncated or corrupt. Re-export it and submit it again.",
        ) from None
    raise MediaError(
        422,
        "Undecodable video",
        "The video stream holds no decodable frame; the file may be truncated or empty.",
    )
