"""Hostile variants of honest test clips, made by patching bytes as an attacker would.

`lie_about_duration` rewrites only what a container *declares* (MP4/MOV `mvhd`/`tkhd`/`mdhd`,
Matroska/WebM Segment Duration, AVI `avih`/`strh` frame counts) and leaves every frame in place,
so a service that trusts the header sees a short clip while the decoder hands out all of it.
`truncate` cuts a file as an interrupted upload or copy does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_long_clip(
    dest: Path,
    codec: str,
    seconds: float,
    *,
    rate: int = 10,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """A 64x48 synthetic clip of `seconds` at `rate` fps (cheap to encode and to process);
    `options`: the encoder's (e.g. {"bf": "0"}: no B-frames)."""
    if dest.exists():
        return dest
    tmp = dest.with_name("tmp-" + dest.name)
    with av.open(str(tmp), mode="w", format=_format_of(dest)) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for i in range(round(seconds * rate)):
            pixels = np.full((48, 64, 3), (i * 7) % 255, np.uint8)
            pixels[:, i % 64] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    tmp.rename(dest)
    return dest


def _format_of(path: Path) -> str | None:
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4"}.get(path.suffix)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO-BMFF boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, pos + size
        pos += size


def _patch_mp4(data: bytearray, seconds: float) -> int:
    """Every mvhd/tkhd/mdhd duration set to `seconds` (version 0 and 1 boxes)."""
    patched = 0
    movie_timescale = 1000

    def walk(start: int, end: int) -> None:
        nonlocal patched, movie_timescale
        for kind, body, box_end in _boxes(bytes(data), start, end):
            if kind in (b"moov", b"trak", b"mdia"):
                walk(body, box_end)
                continue
            version = data[body]
            if kind in (b"mvhd", b"mdhd"):
                ts_at = body + (20 if version == 1 else 12)
                timescale = struct.unpack(">I", data[ts_at : ts_at + 4])[0]
                if kind == b"mvhd":
                    movie_timescale = timescale
                _write_duration(data, ts_at + 4, version, round(seconds * timescale))
                patched += 1
            elif kind == b"tkhd":
                at = body + (28 if version == 1 else 20)
                _write_duration(data, at, version, round(seconds * movie_timescale))
                patched += 1

    walk(0, len(data))
    return patched


def _write_duration(data: bytearray, at: int, version: int, value: int) -> None:
    if version == 1:
        data[at : at + 8] = struct.pack(">Q", value)
    else:
        data[at : at + 4] = struct.pack(">I", value)


def _patch_matroska(data: bytearray, seconds: float) -> int:
    """Segment Duration (EBML id 0x4489, 8-byte float, in TimestampScale units: 1 ms here)."""
    at = data.find(b"\x44\x89\x88")
    if at < 0:
        return 0
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000.0)
    return 1


def _patch_avi(data: bytearray, frames: int) -> int:
    """avih dwTotalFrames and every strh dwLength."""
    patched = 0
    at = data.find(b"avih")
    if at >= 0:
        data[at + 8 + 16 : at + 8 + 20] = struct.pack("<I", frames)
        patched += 1
    at = data.find(b"strh")
    while at >= 0:
        data[at + 8 + 32 : at + 8 + 36] = struct.pack("<I", frames)
        patched += 1
        at = data.find(b"strh", at + 4)
    return patched


def lie_about_duration(src: Path, dest: Path, seconds: float, *, rate: int = 10) -> Path:
    """A copy of `src` whose container headers claim `seconds` (AVI: seconds x rate frames)."""
    data = bytearray(src.read_bytes())
    suffix = src.suffix.lower()
    if suffix in (".mp4", ".mov"):
        patched = _patch_mp4(data, seconds)
    elif suffix in (".webm", ".mkv"):
        patched = _patch_matroska(data, seconds)
    elif suffix == ".avi":
        patched = _patch_avi(data, round(seconds * rate))
    else:
        raise ValueError(f"no header duration to patch in {suffix}")
    if not patched:
        raise AssertionError(f"no duration field found in {src.name}")
    dest.write_bytes(bytes(data))
    return dest


def truncate(src: Path, dest: Path, keep: float | int) -> Path:
    """The first `keep` bytes (an int) or share (a float in (0, 1)) of `src`."""
    data = src.read_bytes()
    size = keep if isinstance(keep, int) else int(len(data) * keep)
    dest.write_bytes(data[:size])
    return dest


def make_size_change_avi(dest: Path, work: Path) -> Path:
    """An MJPEG AVI of 64x48 frames then 128x96 ones (each JPEG carries its own size) under a
    header that gives the first size: what a probe sees is not what the decoder hands out."""
    parts = []
    for width in (64, 128):
        part = work / f"part{width}.avi"
        with av.open(str(part), mode="w", format="avi") as out:
            stream = out.add_stream("mjpeg", rate=10)
            stream.width, stream.height, stream.pix_fmt = width, width * 3 // 4, "yuvj420p"
            for i in range(5):
                pixels = np.full((stream.height, width, 3), 40 * i, np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            out.mux(stream.encode())
        parts.append(part)
    with av.open(str(dest), mode="w", format="avi") as out:
        stream = None
        pts = 0
        for part in parts:
            with av.open(str(part)) as inp:
                source = inp.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(source)
                for packet in inp.demux(source):
                    if not packet.size:
                        continue
                    packet.stream = stream
                    packet.pts = packet.dts = pts
                    out.mux(packet)
                    pts += 1
    return dest


def make_squeezed_clip(dest: Path, frames: int, step_ms: int = 1) -> Path:
    """A Matroska H.264 clip of `frames` frames `step_ms` apart: many frames in a short time."""
    with av.open(str(dest), mode="w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=1000 // step_ms)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i % 255, np.uint8), format="rgb24")
            frame.pts = i * step_ms
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return dest


def freeze_timestamps(src: Path, dest: Path, *, ctts: bool = True) -> Path:
    """A copy of MP4 `src` whose every frame sits at time 0: each `stts` sample delta and `ctts`
    offset set to 0 (what a broken muxer or editor leaves), every frame still in place. Make
    `src` without B-frames: FFmpeg's demuxer then reads every frame at 0 (with B-frames, its edit
    list hides them all). `ctts=False` keeps the B-frames' composition offsets: the frames then
    pile up on those few times."""
    data = bytearray(src.read_bytes())
    patched = 0

    def walk(start: int, end: int) -> None:
        nonlocal patched
        for kind, body, box_end in _boxes(bytes(data), start, end):
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                walk(body, box_end)
            elif kind == b"stts" or (kind == b"ctts" and ctts):
                # version/flags, entry count, then (count, value) entries: each value set to 0
                entries = struct.unpack(">I", data[body + 4 : body + 8])[0]
                for k in range(entries):
                    at = body + 8 + 8 * k + 4
                    data[at : at + 4] = b"\x00\x00\x00\x00"
                patched += 1

    walk(0, len(data))
    if not patched:
        raise AssertionError(f"no stts box found in {src.name}")
    dest.write_bytes(bytes(data))
    return dest


def make_repeating_clip(dest: Path, frames: int, repeats: int, first: int = 4) -> Path:
    """A Matroska MJPEG clip of `frames` frames at 10 fps where `repeats` frames (from index
    `first` on) carry the timestamp of the frame before them, as a glitching muxer writes them
    (first=1, repeats=frames-1: every frame at time 0)."""
    with av.open(str(dest), mode="w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        previous: int | None = None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 9 % 255, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                if first <= i < first + repeats and previous is not None:
                    packet.pts = packet.dts = previous
                previous = packet.pts
                out.mux(packet)
        out.mux(stream.encode())
    return dest


def make_edit_list_clip(dest: Path, frames: int = 30, hidden: int = 10) -> Path:
    """An honest MP4 whose edit list hides its first `hidden` frames (as a stream-copy trim
    leaves it): the file stores `frames` samples, a player shows `frames - hidden`."""
    with av.open(str(dest), mode="w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 10)
        packets: list[av.Packet] = []
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
            frame.pts = i
            packets += stream.encode(frame)
        packets += stream.encode()
        for packet in packets:  # negative times: the muxer writes an edit list starting at 0
            assert packet.pts is not None and packet.dts is not None
            packet.pts -= hidden
            packet.dts -= hidden
            out.mux(packet)
    return dest
