"""Write a non-square sample aspect ratio into a finished Matroska/WebM file.

Matroska keeps the aspect ratio in the track header (Video/DisplayWidth, DisplayHeight), which
FFmpeg's muxer fills from the stream's sample_aspect_ratio; PyAV 18 offers no way to set that
(only the codec's, which VP9 cannot carry in its bitstream), so a VP9 output would lose it.
This patch adds the two elements after the file is closed, without moving anything that other
elements point at: the muxer leaves a Void element after the SeekHead (room it reserved for the
SeekHead), so Info and Tracks slide into it by the bytes Tracks grows, Tracks still ends where
it ended, and the SeekHead's positions of the moved elements are rewritten in place (same widths).
CRC-32 elements (written in .mkv, not in .webm) are recomputed for the elements that change.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

SEGMENT = 0x18538067
SEEK_HEAD = 0x114D9B74
SEEK = 0x4DBB
SEEK_ID = 0x53AB
SEEK_POSITION = 0x53AC
VOID = 0xEC
CRC32 = 0xBF
CLUSTER = 0x1F43B675
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_TYPE = 0x83
VIDEO = 0xE0
DISPLAY_WIDTH = 0x54B0
DISPLAY_HEIGHT = 0x54BA
DISPLAY_UNIT = 0x54B2
_VIDEO_TRACK = 1
_HEADER_BYTES = 1 << 20  # SeekHead, Info and Tracks are a few hundred bytes at the front


class MatroskaPatchError(Exception):
    """The file is not laid out as FFmpeg's Matroska muxer writes it; nothing was changed."""


@dataclass(frozen=True)
class _Element:
    id: int  # with its length-marker bits, as written
    start: int  # offset of the ID
    header: int  # ID + size-field bytes
    size: int  # payload bytes

    @property
    def data(self) -> int:
        return self.start + self.header

    @property
    def end(self) -> int:
        return self.data + self.size

    @property
    def size_width(self) -> int:
        return self.header - _id_width(self.id)


def _id_width(element_id: int) -> int:
    return (element_id.bit_length() + 7) // 8


def _vint(buf: bytes, pos: int) -> tuple[int, int]:
    """EBML variable-size integer at `pos` -> (value without the marker bit, width in bytes)."""
    if pos >= len(buf) or buf[pos] == 0:
        raise MatroskaPatchError(f"no EBML number at offset {pos}")
    first = buf[pos]
    width = 9 - first.bit_length()
    value = first & ((1 << (8 - width)) - 1)
    for byte in buf[pos + 1 : pos + width]:
        value = (value << 8) | byte
    return value, width


def _element_at(buf: bytes, pos: int) -> _Element:
    first = buf[pos] if pos < len(buf) else 0
    if first == 0:
        raise MatroskaPatchError(f"no element at offset {pos}")
    id_width = 9 - first.bit_length()
    element_id = int.from_bytes(buf[pos : pos + id_width], "big")
    size, size_width = _vint(buf, pos + id_width)
    return _Element(element_id, pos, id_width + size_width, size)


def _children(buf: bytes, parent: _Element, stop_at: int | None = None) -> list[_Element]:
    out: list[_Element] = []
    pos = parent.data
    while pos < parent.end:
        element = _element_at(buf, pos)
        if element.id == stop_at:
            break
        if element.end > len(buf):
            raise MatroskaPatchError("an element reaches past the header bytes read")
        out.append(element)
        pos = element.end
    return out


def _size_field(value: int, width: int) -> bytes:
    """`value` as an EBML size of at least `width` bytes (wider only when it does not fit)."""
    while value >= (1 << (7 * width)) - 1:  # all ones would mean "unknown size"
        width += 1
    if width > 8:
        raise MatroskaPatchError("element too large")
    return ((1 << (7 * width)) | value).to_bytes(width, "big")


def _uint(element_id: int, value: int) -> bytes:
    payload = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return element_id.to_bytes(_id_width(element_id), "big") + _size_field(len(payload), 1) + payload


def _master(old: _Element, payload: bytes) -> bytes:
    """`old`'s ID and size width around a new payload, its CRC-32 (if it had one) recomputed."""
    if payload[:1] == bytes([CRC32]) and payload[1:2] == b"\x84":
        rest = payload[6:]
        payload = payload[:2] + zlib.crc32(rest).to_bytes(4, "little") + rest
    return old.id.to_bytes(_id_width(old.id), "big") + _size_field(len(payload), old.size_width) + payload


def _void(total: int) -> bytes:
    """A Void element of exactly `total` bytes (0 is none; 1 cannot be written)."""
    if total == 0:
        return b""
    if total == 1:
        raise MatroskaPatchError("no room for a one-byte Void")
    if total >= 9:  # the muxer's own form: an 8-byte size field
        return bytes([VOID]) + _size_field(total - 9, 8) + bytes(total - 9)
    return bytes([VOID]) + _size_field(total - 2, 1) + bytes(total - 2)


def _uint_value(buf: bytes, element: _Element) -> int:
    return int.from_bytes(buf[element.data : element.end], "big")


def _new_tracks(buf: bytes, tracks: _Element, display_width: int, display_height: int) -> bytes:
    entries = _children(buf, tracks)
    out = bytearray()
    found = False
    for entry in entries:
        if entry.id != TRACK_ENTRY or found:
            out += buf[entry.start : entry.end]
            continue
        fields = _children(buf, entry)
        if not any(f.id == TRACK_TYPE and _uint_value(buf, f) == _VIDEO_TRACK for f in fields):
            out += buf[entry.start : entry.end]
            continue
        found = True
        entry_payload = bytearray()
        for f in fields:
            if f.id != VIDEO:
                entry_payload += buf[f.start : f.end]
                continue
            keep = b"".join(
                buf[v.start : v.end]
                for v in _children(buf, f)
                if v.id not in (DISPLAY_WIDTH, DISPLAY_HEIGHT, DISPLAY_UNIT)
            )
            display = _uint(DISPLAY_WIDTH, display_width) + _uint(DISPLAY_HEIGHT, display_height)
            entry_payload += _master(f, keep + display)
        out += _master(entry, bytes(entry_payload))
    if not found:
        raise MatroskaPatchError("no video track")
    return _master(tracks, bytes(out))


def set_display_size(path: Path, display_width: int, display_height: int) -> None:
    """Give the video track of a finished Matroska/WebM file a display size (pixels), which is
    how Matroska states a sample aspect ratio: SAR = display_width * height / (width * display_height).

    Raises MatroskaPatchError (file unchanged) when the layout is not the one FFmpeg's muxer
    writes (Segment -> SeekHead, Void, ..., Tracks before the first Cluster).
    """
    with path.open("rb") as f:
        buf = f.read(_HEADER_BYTES)
    header = _element_at(buf, 0)
    segment = _element_at(buf, header.end)
    if segment.id != SEGMENT:
        raise MatroskaPatchError("no Segment after the EBML header")
    top = _children(buf, _Element(segment.id, segment.start, segment.header, len(buf)), stop_at=CLUSTER)
    ids = [e.id for e in top]
    if TRACKS not in ids or SEEK_HEAD not in ids:
        raise MatroskaPatchError("no Tracks or SeekHead before the first Cluster")
    tracks = top[ids.index(TRACKS)]
    new_tracks = _new_tracks(buf, tracks, display_width, display_height)
    grow = len(new_tracks) - (tracks.end - tracks.start)
    voids = [i for i, e in enumerate(top[: ids.index(TRACKS)]) if e.id == VOID]
    seek_at = ids.index(SEEK_HEAD)
    if not voids or voids[-1] < seek_at:
        raise MatroskaPatchError("no Void between the SeekHead and Tracks to grow into")
    void = top[voids[-1]]
    moved = top[voids[-1] + 1 : ids.index(TRACKS)]
    region = _void(void.end - void.start - grow) + b"".join(buf[e.start : e.end] for e in moved) + new_tracks
    if len(region) != tracks.end - void.start:
        raise MatroskaPatchError("the patched header does not fit its old span")
    # SeekPosition counts from the Segment's payload; the moved elements start `grow` bytes earlier.
    shift = {e.start - segment.data: e.start - segment.data - grow for e in [*moved, tracks]}
    seek_head = top[seek_at]
    seek_payload = bytearray()
    for seek in _children(buf, seek_head):
        if seek.id != SEEK:
            seek_payload += buf[seek.start : seek.end]
            continue
        entry = bytearray()
        for field in _children(buf, seek):
            if field.id == SEEK_POSITION and _uint_value(buf, field) in shift:
                value = shift[_uint_value(buf, field)].to_bytes(field.size, "big")
                entry += buf[field.start : field.data] + value
            else:
                entry += buf[field.start : field.end]
        seek_payload += _master(seek, bytes(entry))
    new_seek_head = _master(seek_head, bytes(seek_payload))
    if len(new_seek_head) != seek_head.end - seek_head.start:
        raise MatroskaPatchError("the SeekHead changed size")
    with path.open("r+b") as f:
        f.seek(seek_head.start)
        f.write(new_seek_head)
        f.seek(void.start)
        f.write(region)
