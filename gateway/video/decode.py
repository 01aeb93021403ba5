"""Decode a video into RGB frames on a thread, handed over through a bounded queue.

The queue bound is what keeps memory flat whatever the length: the decoder stops when the
consumer (inference) falls behind. Closing the iterator early stops the thread and the file.
Frames come out upright (the display rotation applied, as a player shows them): the models are
trained on upright scenes, and key points and backgrounds are given in display orientation.
An input's own transparency comes along with each frame (gateway/video/alpha.py), upright too.

Limits hold here, on the frames actually decoded, whatever the container header claims
(`FrameLimits`): a trim stops at the limit by timestamp and by count, a refusing limit fails the
run with 422 as soon as a frame is past it, every frame must have the probed size, and a stream
that ends with far fewer frames than the file holds packets for is a damaged file, not a result.

Timing: a frame that repeats an earlier frame's timestamp is left out, as FFmpeg does when it
keeps a file's timestamps; a few such frames are reported (`DecodeOutcome.repeated`,
`timing_notes`); more than the damage slack fails the run (422). A file where every frame has one
timestamp has no timing at all: probe marks it `retimed` and its frames are timed at the nominal
rate.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from gateway.video import alpha as input_alpha
from gateway.video.geometry import to_display
from gateway.video.integrity import frame_slack
from gateway.video.probe import MediaError, VideoInfo

_DONE = object()


@dataclass(frozen=True)
class FrameLimits:
    """What the decoded frames must respect; seconds count from the first frame's timestamp.

    `trim_s`: stop before the first frame at or after it (trim). `max_s`: refuse (MediaError 422
    "Video too long") a frame that starts after it. `max_frames`: stop after this many frames,
    or refuse the next one when `max_s` is set (timestamps squeezed together cannot carry more
    frames past a duration limit). `size`: (width, height) every frame has as stored (the
    probed size; a stream that changes size mid-way is refused, 422). `packets`: the video
    packets the file holds (probe); decoding to the end with more than a small slack fewer frames
    is a damaged file (422). `declared_s`: the header's duration, quoted in the refusal.
    `retime_fps`: the frames' own timestamps are ignored for this nominal rate."""

    trim_s: float | None = None
    max_s: float | None = None
    max_frames: int | None = None
    size: tuple[int, int] | None = None
    packets: int = 0
    declared_s: float = 0.0
    retime_fps: Fraction | None = None  # time frame i at i / retime_fps s (VideoInfo.retimed)


def frame_limits(
    info: VideoInfo, *, max_fps: float, trim_s: float | None = None, max_s: float | None = None
) -> FrameLimits:
    """The limits for `info`'s file: a trim (`trim_s`) or a refusing limit (`max_s`) in seconds,
    each also as a frame count at `max_fps` (frames per second), the probed size and packets."""
    bound = trim_s if trim_s is not None else max_s
    return FrameLimits(
        trim_s=trim_s,
        max_s=max_s,
        max_frames=math.ceil(bound * max_fps) if bound is not None else None,
        size=(info.width, info.height),
        packets=info.packets,
        declared_s=info.declared_duration_s,
        retime_fps=info.fps if info.retimed else None,
    )


@dataclass
class DecodeOutcome:
    """Filled in by the decoding thread; read after the reader is exhausted."""

    trimmed: bool = False  # stopped at a trim limit with frames left in the file
    decoded: int = 0
    repeated: int = 0  # frames left out for repeating an earlier frame's timestamp
    retimed_fps: Fraction | None = None  # the frames were timed at this nominal rate


def timing_notes(outcome: DecodeOutcome) -> list[str]:
    """What the job's status says about the frames' timing (the `warning` field), if anything."""
    notes: list[str] = []
    if outcome.retimed_fps is not None:
        notes.append(
            "The video's frames all carry the same timestamp; they were timed at its nominal "
            f"{float(outcome.retimed_fps):g} fps"
        )
    if outcome.repeated:
        notes.append(f"{outcome.repeated} frame(s) repeated an earlier frame's timestamp and were left out")
    return notes


@dataclass(frozen=True)
class DecodedFrame:
    rgb: np.ndarray  # uint8 HxWx3, display orientation; over white where the input is transparent
    pts: int  # in time_base, as the container stores it (VFR kept)
    time_base: Fraction
    index: int
    alpha: np.ndarray | None = None  # uint8 HxW, the input's own alpha; None: opaque
    colour: np.ndarray | None = None  # uint8 HxWx3 straight colour under `alpha` (None with it)
    duration: int = 0  # in time_base, how long the frame shows (a GIF's delay); 0: not stored

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)

    def end_s(self, fps: Fraction) -> float:
        """When the frame stops showing, in seconds: pts + its own duration, else one 1/fps period
        (0 fps: no period)."""
        if self.duration > 0:
            return float((self.pts + self.duration) * self.time_base)
        return self.time_s + (float(1 / fps) if fps else 0.0)


def _too_long(limits: FrameLimits, why: str) -> MediaError:
    assert limits.max_s is not None
    declared = f" although the container declares {limits.declared_s:.2f}s" if limits.declared_s else ""
    return MediaError(
        422,
        "Video too long",
        f"The decoded video runs past the {limits.max_s:g}s limit ({why}){declared}; "
        "trim the video and submit it again.",
    )


def _check_frame(limits: FrameLimits, frame: av.VideoFrame, seconds: float, count: int) -> bool:
    """False: stop here (a trim limit); raises MediaError for a refusing limit or a size change."""
    if limits.size is not None and (frame.width, frame.height) != limits.size:
        width, height = limits.size
        raise MediaError(
            422,
            "Unsupported video",
            f"The frame size changes mid-stream from {width}x{height} to {frame.width}x{frame.height}; "
            "re-export the video at one size and submit it again.",
        )
    if limits.max_s is not None:
        if seconds > limits.max_s + 1e-3:
            raise _too_long(limits, f"a frame at {seconds:.2f}s")
        if limits.max_frames is not None and count >= limits.max_frames:
            raise _too_long(limits, f"more than {limits.max_frames} frames")
    if limits.trim_s is not None and seconds >= limits.trim_s - 1e-6:
        return False
    return limits.max_frames is None or limits.max_s is not None or count < limits.max_frames


def _decode_into(
    path: Path, out: queue.Queue[object], stop: threading.Event, limits: FrameLimits, outcome: DecodeOutcome
) -> None:
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            time_base = Fraction(stream.time_base or Fraction(1, 90000))
            start: int | None = None
            last_pts: int | None = None
            index = 0
            rotation: int | None = None
            may_have_alpha: bool | None = None
            for frame in _frames(container, stream):
                if stop.is_set():
                    return
                outcome.decoded += 1
                if limits.retime_fps is not None:  # frame k at k / fps after the first one's time
                    first = start if start is not None else frame.pts or 0
                    pts = first + round((outcome.decoded - 1) / (limits.retime_fps * time_base))
                elif frame.pts is not None:
                    pts = frame.pts
                else:
                    pts = last_pts + 1 if last_pts is not None else 0
                if last_pts is not None and pts <= last_pts:
                    outcome.repeated += 1  # two frames at one time would break the encoder's ordering
                    continue
                if start is None:
                    start = pts
                if not _check_frame(limits, frame, float((pts - start) * time_base), index):
                    outcome.trimmed = True
                    break
                last_pts = pts
                if rotation is None:  # the first frame's, as probe reads it: one turn for the whole file
                    rotation = int(round(frame.rotation or 0))
                if may_have_alpha is None:
                    may_have_alpha = input_alpha.stream_has_alpha(stream, frame.format.name)
                rgb, alpha, colour = input_alpha.split(frame, may_have_alpha)
                item = DecodedFrame(
                    to_display(rgb, rotation),
                    pts,
                    time_base,
                    index,
                    None if alpha is None else to_display(alpha, rotation),
                    None if colour is None else to_display(colour, rotation),
                    0 if limits.retime_fps is not None else int(frame.duration or 0),
                )
                index += 1
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        outcome.retimed_fps = limits.retime_fps
        if outcome.repeated > frame_slack(outcome.decoded):
            raise MediaError(
                422,
                "Damaged video",
                f"{outcome.repeated} of the {outcome.decoded} frames decoded repeat an earlier frame's "
                "timestamp: the file's timing is damaged. Export the video again.",
            )
        if (
            not outcome.trimmed
            and limits.packets
            and outcome.decoded < limits.packets - frame_slack(limits.packets)
        ):
            raise MediaError(
                422,
                "Damaged video",
                f"Only {outcome.decoded} of the {limits.packets} frames the file holds could be decoded: "
                "it is damaged. Export or upload the whole file again.",
            )
        _put_final(out, stop, _DONE)
    except (av.error.FFmpegError, ValueError, OSError):
        # the library's exception text names its internals (avcodec_send_packet()): not for users
        _put_final(
            out,
            stop,
            MediaError(
                422,
                "Undecodable video",
                f"Decoding failed after {outcome.decoded} frames; the file may be truncated or corrupt.",
            ),
        )
    except BaseException as exc:
        _put_final(out, stop, exc)


def _frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[av.VideoFrame]:
    """The stream's frames, through libvpx-vp9 when it is VP9 with alpha (see alpha.py)."""
    decoder = input_alpha.alpha_decoder(stream)
    if decoder is None:
        yield from container.decode(stream)
        return
    for packet in container.demux(stream):
        yield from decoder.decode(packet)


def _put_final(out: queue.Queue[object], stop: threading.Event, item: object) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


class FrameReader:
    """Iterator over decoded frames; `close()` is safe from any thread, even mid-`next()`."""

    def __init__(self, path: Path, limits: FrameLimits, queue_size: int) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._finished = False
        self.outcome = DecodeOutcome()  # final once the iterator is exhausted
        self._thread = threading.Thread(
            target=_decode_into,
            args=(path, self._queue, self._stop, limits, self.outcome),
            name="video-decode",
            daemon=True,
        )
        self._thread.start()

    def __iter__(self) -> FrameReader:
        return self

    def __next__(self) -> DecodedFrame:
        while not self._finished:
            if self._stop.is_set():
                break
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            assert isinstance(item, DecodedFrame)
            return item
        self._finished = True
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_frames(
    path: Path,
    *,
    max_duration_s: float | None = None,
    limits: FrameLimits | None = None,
    queue_size: int = 8,
) -> FrameReader:
    """Frames of the first video stream, in presentation order, up to `max_duration_s` seconds
    (a trim; shorthand for `limits=FrameLimits(trim_s=...)`), within `limits`.

    Raises MediaError (422) when the stream breaks part way, runs past a refusing limit, changes
    size or ends with frames missing. `reader.outcome.trimmed` says whether a trim cut frames.
    Use as a context manager (or call `close()`) when the frames may not be read to the end, so
    the decoding thread stops.
    """
    if limits is None:
        limits = FrameLimits(trim_s=max_duration_s)
    elif max_duration_s is not None:
        raise TypeError("give the trim in `limits` or as `max_duration_s`, not both")
    return FrameReader(path, limits, queue_size)
