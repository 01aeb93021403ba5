"""Decode a video into RGB frames on a thread, handed over through a bounded queue.

The queue bound is what keeps memory flat whatever the length: the decoder stops when the
consumer (inference) falls behind. Closing the iterator early stops the thread and the file.
Frames come out upright (the display rotation applied, as a player shows them): the models are
trained on upright scenes, and key points and backgrounds are given in display orientation.
An input's own transparency comes along with each frame (gateway/video/alpha.py), upright too.
"""

from __future__ import annotations

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
from gateway.video.probe import MediaError

_DONE = object()


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


def _decode_into(
    path: Path, out: queue.Queue[object], stop: threading.Event, max_duration_s: float | None
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
                pts = frame.pts if frame.pts is not None else (last_pts + 1 if last_pts is not None else 0)
                if last_pts is not None and pts <= last_pts:
                    continue  # duplicate/out-of-order timestamps would break the encoder's ordering
                if start is None:
                    start = pts
                if max_duration_s is not None and float((pts - start) * time_base) >= max_duration_s - 1e-6:
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
                    int(frame.duration or 0),
                )
                index += 1
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        _put_final(out, stop, _DONE)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        _put_final(
            out,
            stop,
            MediaError(
                422,
                "Undecodable video",
                f"Decoding failed ({type(exc).__name__}: {exc}); the file may be truncated or corrupt.",
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

    def __init__(self, path: Path, max_duration_s: float | None, queue_size: int) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=_decode_into,
            args=(path, self._queue, self._stop, max_duration_s),
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


def iter_frames(path: Path, *, max_duration_s: float | None = None, queue_size: int = 8) -> FrameReader:
    """Frames of the first video stream, in presentation order, up to `max_duration_s` seconds.

    Raises MediaError (422) when the stream breaks part way. Use as a context manager (or call
    `close()`) when the frames may not be read to the end, so the decoding thread stops.
    """
    return FrameReader(path, max_duration_s, queue_size)
