"""Quality and speed of /mask_by_key_points on DAVIS 2016 (../shared/data/video_masks).

For each sequence: the frames become an H.264 clip, the deepest ground-truth point of one frame is
the positive prompt (plus the deepest background point as a negative), and mean region similarity
J (IoU against the ground truth, every frame) is reported for a prompt on frame 0 (forward) and on
the middle frame (backward + forward), with the time per frame. Two baselines from the same run:
the prompt frame's mask copied to every frame, and unprompted per-frame U2-Net-p saliency.

    python -m benchmarks.eval_keypoints --in-process            # the algorithm, no servers
    python -m benchmarks.eval_keypoints --gateway http://127.0.0.1:8080 --token T
        # the real API of a running stack started with ALLOW_LOOPBACK_URLS=true (clips are
        # served from a loopback HTTP server this script starts)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import av
import numpy as np

from benchmarks.keypoints_common import U2NetP, iou, load_sequence, prompt_from_mask, sequences
from gateway.keypoints import KeypointTracker, Prompt
from gateway.stack import free_port


def _prompt(points: list[dict[str, Any]], width: int, height: int) -> Prompt:
    xy = np.array([[p["x"], p["y"]] for p in points], np.float32)
    labels = np.array([1 if p["type"] == "positive" else 0 for p in points], np.int32)
    return Prompt.from_arrays(xy, labels, width, height)


def in_process(
    frames: list[np.ndarray],
    sal: list[np.ndarray],
    start: int,
    points: list[dict[str, Any]],
    work_long_side: int,
) -> list[np.ndarray]:
    """What the Triton model does, without Triton: forward and backward trackers from `start`."""
    h, w = frames[0].shape[:2]
    out: list[np.ndarray] = [np.zeros((h, w), np.uint8)] * len(frames)
    for order in (range(start, len(frames)), range(start, -1, -1)):
        tracker = KeypointTracker(work_long_side)
        for step, i in enumerate(order):
            out[i] = (
                tracker.start(frames[i], sal[i], _prompt(points, w, h))
                if step == 0
                else tracker.step(frames[i], sal[i])
            )
    return out


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 24) -> None:
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "14", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())


@contextmanager
def serve(root: Path) -> Iterator[str]:
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


async def via_api(
    gateway: str, token: str, clip_url: str, start: int, points: list[dict[str, Any]], dest: Path
) -> list[np.ndarray]:
    import aiohttp

    body = {"video": clip_url, "frame_index": start, "key_points": points}
    headers = {"api_token": token}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway}/mask_by_key_points", json=body, headers=headers) as r:
            payload = await r.json()
            if r.status != 202:
                raise RuntimeError(f"submit refused: {r.status} {payload}")
        while True:
            async with http.get(payload["status_url"], headers=headers) as r:
                status = await r.json()
            if status["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.5)
        if status["status"] != "completed":
            raise RuntimeError(f"job failed: {status}")
        async with http.get(status["mask_url"]) as r:
            dest.write_bytes(await r.read())
    with av.open(str(dest)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--gateway", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--work-long-side", type=int, default=480)
    parser.add_argument("--no-negative", action="store_true")
    parser.add_argument("sequences", nargs="*")
    args = parser.parse_args()
    if not args.in_process and not args.gateway:
        parser.error("choose --in-process or --gateway URL --token T")
    net = U2NetP()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kp-eval-") as tmp_dir, serve(Path(tmp_dir)) as base:
        tmp = Path(tmp_dir)
        print(f"{'sequence':16} {'frames':>6} {'J fwd':>6} {'J mid':>6} {'copy':>6} {'u2netp':>6} {'ms':>8}")
        for seq in args.sequences or sequences():
            frames, gts = load_sequence(seq)
            sal = [net(f) for f in frames]
            write_clip(tmp / f"{seq}.mp4", frames)
            scores, elapsed = [], 0.0
            for start in (0, len(frames) // 2):
                points = prompt_from_mask(gts[start], negative=not args.no_negative)
                t0 = time.perf_counter()
                if args.in_process:
                    masks = in_process(frames, sal, start, points, args.work_long_side)
                else:
                    masks = asyncio.run(
                        via_api(
                            args.gateway,
                            args.token,
                            f"{base}/{seq}.mp4",
                            start,
                            points,
                            tmp / f"{seq}-{start}.mp4",
                        )
                    )
                elapsed += time.perf_counter() - t0
                if len(masks) != len(gts):
                    raise RuntimeError(f"{seq}: {len(masks)} masks for {len(gts)} frames")
                scores.append(np.mean([iou(m > 127, g) for m, g in zip(masks, gts, strict=True)]))
            copy = np.mean([iou(gts[0], g) for g in gts])
            saliency = np.mean([iou(s > 127, g) for s, g in zip(sal, gts, strict=True)])
            ms = 1000 * elapsed / (2 * len(frames))
            rows.append((scores[0], scores[1], copy, saliency, ms))
            print(
                f"{seq:16} {len(frames):6d} {scores[0]:6.3f} {scores[1]:6.3f} {copy:6.3f} {saliency:6.3f} "
                f"{ms:8.1f}",
                flush=True,
            )
    mean = np.mean(rows, axis=0)
    print(f"{'MEAN':16} {'':6} {mean[0]:6.3f} {mean[1]:6.3f} {mean[2]:6.3f} {mean[3]:6.3f} {mean[4]:8.1f}")
    mode = "in-process (saliency precomputed, not timed)" if args.in_process else f"API {args.gateway}"
    print(f"mode: {mode}; ms/frame = wall time of the job / frames (in-process: tracker only)")


if __name__ == "__main__":
    main()
