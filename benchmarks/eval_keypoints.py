"""Quality and speed of /mask_by_key_points on DAVIS 2016 (../shared/data/video_masks).

For each sequence: the frames become an H.264 clip, the deepest ground-truth point of one frame is
the positive prompt (plus the deepest background point as a negative), and mean region similarity
J (IoU against the ground truth, every frame) is reported for a prompt on frame 0 (forward) and on
the middle frame (backward + forward), with the time per frame, and presence recall ("pr"): the
share of frames with the object visible where the mask overlaps it with IoU > 0.3. Two baselines
from the same run: the prompt frame's mask copied to every frame, and unprompted per-frame U2-Net-p
saliency.

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
from pathlib import Path
from typing import Any

import av
import numpy as np

from benchmarks.common import mask_job_via_api, serve_directory
from benchmarks.keypoints_common import (
    U2NetP,
    iou,
    load_sequence,
    presence_recall,
    prompt_from_mask,
    sequences,
)
from triton_models.keypoints import KeypointTracker, Prompt
from triton_models.keypoints.tracker import SaliencyFn
from triton_models.mask_geometry import bbox, expand


def _prompt(points: list[dict[str, Any]], width: int, height: int) -> Prompt:
    xy = np.array([[p["x"], p["y"]] for p in points], np.float32)
    labels = np.array([1 if p["type"] == "positive" else 0 for p in points], np.int32)
    return Prompt.from_arrays(xy, labels, width, height)


def in_process(
    frames: list[np.ndarray],
    saliency: SaliencyFn,
    start: int,
    points: list[dict[str, Any]],
    work_long_side: int,
) -> list[np.ndarray]:
    """What the Triton model does, without Triton: forward and backward trackers from `start`."""
    h, w = frames[0].shape[:2]
    out: list[np.ndarray] = [np.zeros((h, w), np.uint8)] * len(frames)
    for order in (range(start, len(frames)), range(start, -1, -1)):
        tracker = KeypointTracker(saliency, work_long_side)
        for step, i in enumerate(order):
            out[i] = tracker.start(frames[i], _prompt(points, w, h)) if step == 0 else tracker.step(frames[i])
    return out


def crop_bound(frames: list[np.ndarray], gts: list[np.ndarray], saliency: SaliencyFn) -> float:
    """Mean J of saliency > 0.5 on a crop around each frame's ground-truth box, framed by the
    tracker's own margin rule: how well the tracker could do if it always knew where the object is."""
    scores = []
    for rgb, gt in zip(frames, gts, strict=True):
        h, w = gt.shape
        pred = np.zeros((h, w), bool)
        if gt.any():
            x0, y0, x1, y1 = expand(bbox(gt), KeypointTracker.MARGIN, round(0.2 * min(h, w)), (h, w))
            pred[y0:y1, x0:x1] = saliency(np.ascontiguousarray(rgb[y0:y1, x0:x1])) > 127
        scores.append(iou(pred, gt))
    return float(np.mean(scores))


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 24) -> None:
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "14", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())


async def via_api(
    gateway: str, token: str, clip_url: str, start: int, points: list[dict[str, Any]], dest: Path
) -> list[np.ndarray]:
    body = {"video": clip_url, "frame_index": start, "key_points": points}
    return await mask_job_via_api(gateway, token, "/mask_by_key_points", body, dest)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--gateway", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--work-long-side", type=int, default=480)
    parser.add_argument("--no-negative", action="store_true")
    parser.add_argument("--starts", choices=("both", "first", "middle"), default="both")
    parser.add_argument("--limit", type=int, default=0, help="first N frames of each sequence only")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (in-process)")
    parser.add_argument("--skip-baselines", action="store_true", help="no per-frame U2-Net-p run")
    parser.add_argument(
        "--crop-bound",
        action="store_true",
        help="also print what U2-Net-p scores on a crop framed by the ground-truth box (the ceiling "
        "of a saliency-in-a-crop tracker with a perfect box)",
    )
    parser.add_argument("sequences", nargs="*")
    args = parser.parse_args()
    if not args.in_process and not args.gateway:
        parser.error("choose --in-process or --gateway URL --token T")
    net = U2NetP(threads=args.threads)
    rows = []
    nan = float("nan")
    with tempfile.TemporaryDirectory(prefix="kp-eval-") as tmp_dir, serve_directory(Path(tmp_dir)) as base:
        tmp = Path(tmp_dir)
        print(f"{'sequence':16} {'frames':>6} {'J fwd':>6} {'J mid':>6} {'pr fwd':>6} {'pr mid':>6} "
              f"{'copy':>6} {'u2netp':>6} {'ms':>7} {'sal ms':>7} {'calls':>5}")  # fmt: skip
        for seq in args.sequences or sequences():
            frames, gts = load_sequence(seq, args.limit or None)
            if args.gateway:
                write_clip(tmp / f"{seq}.mp4", frames)
            starts = {"both": (0, len(frames) // 2), "first": (0,), "middle": (len(frames) // 2,)}
            scores, presence, elapsed, sal_s, calls, walked = {}, {}, 0.0, 0.0, 0, 0
            for start in starts[args.starts]:
                points = prompt_from_mask(gts[start], negative=not args.no_negative)
                t0, s0, c0 = time.perf_counter(), net.seconds, net.calls
                if args.in_process:
                    masks = in_process(frames, net, start, points, args.work_long_side)
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
                sal_s += net.seconds - s0
                calls += net.calls - c0
                walked += len(frames) + 1
                if len(masks) != len(gts):
                    raise RuntimeError(f"{seq}: {len(masks)} masks for {len(gts)} frames")
                scores[start] = np.mean([iou(m > 127, g) for m, g in zip(masks, gts, strict=True)])
                presence[start] = presence_recall(masks, gts)
            j_fwd, j_mid = scores.get(0, nan), scores.get(len(frames) // 2, nan)
            pr_fwd, pr_mid = presence.get(0, nan), presence.get(len(frames) // 2, nan)
            copy = np.mean([iou(gts[0], g) for g in gts])
            saliency = (
                nan
                if args.skip_baselines
                else np.mean([iou(net(f) > 127, g) for f, g in zip(frames, gts, strict=True)])
            )
            if args.crop_bound:
                print(f"{seq:16} crop-bound J {crop_bound(frames, gts, net):.3f}", flush=True)
            # in-process: the tracker's own time (saliency calls excluded, reported beside it);
            # through the API: the whole job's wall time.
            ms = 1000 * (elapsed - sal_s if args.in_process else elapsed) / walked
            rows.append(
                (j_fwd, j_mid, pr_fwd, pr_mid, copy, saliency, ms, 1000 * sal_s / walked, calls / walked)
            )
            print(
                f"{seq:16} {len(frames):6d} {j_fwd:6.3f} {j_mid:6.3f} {pr_fwd:6.3f} {pr_mid:6.3f} "
                f"{copy:6.3f} {saliency:6.3f} {rows[-1][6]:7.1f} {rows[-1][7]:7.1f} {rows[-1][8]:5.2f}",
                flush=True,
            )
    m = np.nanmean(rows, axis=0)
    print(
        f"{'MEAN':16} {'':6} {m[0]:6.3f} {m[1]:6.3f} {m[2]:6.3f} {m[3]:6.3f} {m[4]:6.3f} {m[5]:6.3f} "
        f"{m[6]:7.1f} {m[7]:7.1f} {m[8]:5.2f}"
    )
    mode = "in-process" if args.in_process else f"API {args.gateway}"
    print(f"mode: {mode}; ms = per frame walked (in-process: tracker only, U2-Net-p calls beside it: "
          f"'sal ms' their time, 'calls' their count per frame)")  # fmt: skip


if __name__ == "__main__":
    main()
