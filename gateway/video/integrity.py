"""What a video file really holds, measured from its packets, against what its header declares.

Container headers are written by whoever made the file: an MP4 `mvhd`/`mdhd`/`tkhd`, a Matroska
Segment Duration or an AVI frame count can say 1 s over 90 s of frames, or 30 s over a file cut
after 8 s. Limits therefore use the packets the demuxer actually reads (demuxing only: no frame is
decoded, so the scan costs file I/O, not CPU), and a file whose streams end well before what it
declares is refused as truncated or damaged instead of being processed to a partial result.
The decoder (gateway/video/decode.py) then holds every limit again on the frames it decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import av.error

# Beyond this many packets the scan stops: the file is already over every frame limit
# (60 s at 240 fps is 14,400 video packets, plus audio at ~50 packets/s).
MAX_SCANNED_PACKETS = 200_000
# An honest file's streams end within a few hundredths of a second of its declared duration
# (measured on ../shared/data/videos and ../shared/hunt: at most 0.03 s); truncation shows as
# seconds. The tolerance is the larger of these.
MIN_SLACK_S = 0.25
SLACK_FRAMES = 2
SLACK_SHARE = 0.01


@dataclass(frozen=True)
class PacketScan:
    """Seconds on the container's clock (packet timestamps x time base)."""

    video_packets: int  # video packets that carry data and are presented (one per shown frame)
    video_packets_stored: int  # the same with those an edit list hides (what a frame count counts)
    video_times: int  # distinct presentation times among the shown packets (1 for many: no timing)
    video_times_stored: int  # the same among the stored ones
    video_start_s: float  # the first video packet's presentation time
    video_end_s: float  # the last video packet's end (presentation time + duration)
    media_end_s: float  # the latest end of any stream's packets
    complete: bool  # False: stopped at MAX_SCANNED_PACKETS (the file is longer than any limit)
    read_error: bool  # the demuxer failed before the end of the file (cut mid-packet, garbage)


def scan_packets(path: Path, video_index: int) -> PacketScan:
    """Demux every packet of every stream of `path` (no decoding). Raises av.error.FFmpegError
    / OSError only when the file cannot be opened."""
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        starts: dict[int, float] = {}
        ends: dict[int, float] = {}
        video_packets = stored = 0
        video_times: set[int] = set()
        stored_times: set[int] = set()
        scanned = 0
        complete, read_error = True, False
        try:
            for packet in container.demux():
                time = packet.pts if packet.pts is not None else packet.dts
                if time is None or packet.time_base is None:
                    continue
                scanned += 1
                if scanned > MAX_SCANNED_PACKETS:
                    complete = False
                    break
                index = packet.stream.index
                if index == video_index and packet.size:
                    stored += 1
                    stored_times.add(time)
                if packet.is_discard:
                    # before an MP4 edit list's start: decoded for reference, never shown
                    continue
                start = float(time * packet.time_base)
                end = float((time + (packet.duration or 0)) * packet.time_base)
                starts[index] = min(starts.get(index, start), start)
                ends[index] = max(ends.get(index, end), end)
                if index == video_index and packet.size:
                    video_packets += 1
                    video_times.add(time)
        except (av.error.FFmpegError, ValueError):
            read_error = True
    origin = starts.get(video_index, 0.0)
    return PacketScan(
        video_packets=video_packets,
        video_packets_stored=stored,
        video_times=len(video_times),
        video_times_stored=len(stored_times),
        video_start_s=origin,
        video_end_s=ends.get(video_index, origin),
        media_end_s=max(ends.values(), default=origin),
        complete=complete,
        read_error=read_error,
    )


def slack_s(declared_s: float, fps: float) -> float:
    """How far an honest file's streams may end from its declared duration."""
    return max(MIN_SLACK_S, SLACK_FRAMES / fps if fps > 0 else 0.0, SLACK_SHARE * declared_s)


def frame_slack(frames: int) -> int:
    """How many of `frames` an honest file may lose between header, packets and decoder."""
    return max(SLACK_FRAMES, int(frames * SLACK_SHARE))


def missing_media(
    scan: PacketScan, declared_s: float, declared_frames: int, fps: float, start_s: float
) -> str | None:
    """Why the file holds less than it declares (the user-facing sentence), or None when whole.

    `start_s`: where the declared duration starts on the container's clock (its start time);
    `declared_frames`: 0 when the container does not count frames."""
    if not scan.complete:
        return None  # longer than any limit: the limits refuse or trim it
    held_frames = scan.video_packets_stored
    if declared_frames > 0 and held_frames < declared_frames - frame_slack(declared_frames):
        return (
            f"The file declares {declared_frames} video frames but holds {held_frames}: "
            "it is truncated or damaged."
        )
    held_s = scan.media_end_s - start_s
    if declared_s > 0 and held_s < declared_s - slack_s(declared_s, fps):
        return (
            f"The file declares {declared_s:.2f}s of media but its streams end at {max(held_s, 0):.2f}s: "
            "it is truncated or damaged."
        )
    return None


def gif_trailer_missing(path: Path) -> bool:
    """A GIF declares no duration; a whole one ends with the trailer byte 0x3B (GIF89a, 27)."""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 16))
        tail = f.read().rstrip(b"\x00")
    return not tail.endswith(b";")
