"""Quality and speed of the unprompted video foreground (`model` = auto, rvm, salient) on DAVIS 2016.

For each sequence in ../shared/data/video_masks the frames become an H.264 clip, /foreground_mask
runs it once per model choice, and the mean region similarity J (IoU of mask > 127 against the
ground truth, every frame) is printed with the job's wall time per frame. The baseline from the
same run: unprompted per-frame U2-Net-p saliency (the exported graph under onnxruntime) on the
original frames. Beside J, `flicker`: the share of pixels (of the object's size) whose mask
label changes from one frame to the next where the ground truth's does not, in percent; 0 for a
mask that only changes where the object does. The person-only subset (the ground truth is one
person: breakdance, kite-surf, parkour) is averaged apart, where `auto` must stay within 0.01 of
RVM alone.

    python -m benchmarks.eval_foreground                 # starts its own private stack (~25 min)
    python -m benchmarks.eval_foreground --gateway URL --token T   # a running stack started with
                                                         # ALLOW_LOOPBACK_URLS=true
    python -m benchmarks.eval_foreground --in-process    # the algorithm without servers (~4 min)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import TOKEN, bench_stack, mask_job_via_api, serve_directory
from benchmarks.eval_keypoints import write_clip
from benchmarks.keypoints_common import U2NetP, iou, load_sequence, sequences
from common.settings import REPO_ROOT
from triton_models.foreground import ForegroundModel, ForegroundTracker

MODELS = tuple(m.value for m in ForegroundModel)
PERSON_ONLY = ("breakdance", "kite-surf", "parkour")
# Targets of the foreground issue: auto's mean J, and how far auto may fall below the baselines.
AUTO_TARGET, SALIENCY_SLACK, RVM_SLACK = 0.70, 0.05, 0.01


class InProcess:
    """What the `foreground` Triton model does, without Triton: the exported graphs under
    onnxruntime (RVM with its recurrent state) and the same tracker."""

    def __init__(self, threads: int) -> None:
        from benchmarks.common import ort_session

        self.u2netp = U2NetP(threads=threads)
        self.rvm = ort_session(REPO_ROOT / "model_repository" / "rvm" / "1" / "model.onnx", threads)

    def _rvm(self, frames: list[np.ndarray]) -> Iterator[np.ndarray]:
        state = [np.zeros((1, 1, 1, 1), np.float32)] * 4
        for frame in frames:
            feed = {"frame": frame[None], **{f"r{k + 1}i": s for k, s in enumerate(state)}}
            alpha, *state = self.rvm.run(["alpha", "r1o", "r2o", "r3o", "r4o"], feed)
            yield alpha[0]

    def masks(self, frames: list[np.ndarray], model: str) -> list[np.ndarray]:
        if model == ForegroundModel.RVM:
            return list(self._rvm(frames))
        tracker = ForegroundTracker(self.u2netp)
        people = self._rvm(frames) if model == ForegroundModel.AUTO else (None for _ in frames)
        return [tracker.step(f, a).alpha for f, a in zip(frames, people, strict=True)]


async def via_api(gateway: str, token: str, clip_url: str, model: str, dest: Path) -> list[np.ndarray]:
    """The mask of one clip from /foreground_mask with this `model`, decoded (gray)."""
    body = {"video": clip_url, "model": model, "output_container_and_codec": "mp4_h264"}
    return await mask_job_via_api(gateway, token, "/foreground_mask", body, dest)


@contextlib.contextmanager
def _gateway(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.gateway:
        yield args.gateway, args.token
        return
    with (
        tempfile.TemporaryDirectory(prefix="fg-stack-") as data,
        bench_stack(Path(data), workers=1, worker_max_jobs=1) as stack,
    ):
        yield stack.base_url, TOKEN


def flicker(masks: list[np.ndarray], gts: list[np.ndarray]) -> float:
    """Mean over consecutive frames of |pred flips \\ ground-truth flips| / |ground truth|, in %."""
    shares = []
    for (p0, p1), (g0, g1) in zip(itertools.pairwise(masks), itertools.pairwise(gts), strict=True):
        spurious = ((p0 > 127) ^ (p1 > 127)) & ~(g0 ^ g1)
        shares.append(spurious.sum() / max(1, g1.sum()))
    return 100.0 * float(np.mean(shares)) if shares else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-process", action="store_true", help="no servers: the tracker on onnxruntime")
    parser.add_argument("--gateway", default="", help="a running stack (default: start a private one)")
    parser.add_argument("--token", default="")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (in-process)")
    parser.add_argument("--limit", type=int, default=0, help="first N frames of each sequence only")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS)
    )
    parser.add_argument(
        "--carry", type=float, default=None, help="in-process: override ForegroundTracker.CARRY (0 = none)"
    )
    parser.add_argument("sequences", nargs="*")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    if args.carry is not None:
        ForegroundTracker.CARRY = args.carry
    baseline = U2NetP(threads=args.threads)
    local = InProcess(args.threads) if args.in_process else None
    scores: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fg-eval-")))
        if local is None:
            gateway, token = stack.enter_context(_gateway(args))
            clips = stack.enter_context(serve_directory(tmp))
        header = " ".join(f"{m:>7} {'flick':>5} {'ms/f':>6}" for m in [*models, "u2netp"])
        print(f"{'sequence':16} {'frames':>6} {header}", flush=True)
        for seq in args.sequences or sequences():
            frames, gts = load_sequence(seq, args.limit or None)
            if local is None:
                write_clip(tmp / f"{seq}.mp4", frames)
            row: dict[str, float] = {}
            cells = []
            for model in models:
                t0 = time.perf_counter()
                if local is not None:
                    masks = local.masks(frames, model)
                else:
                    masks = asyncio.run(
                        via_api(gateway, token, f"{clips}/{seq}.mp4", model, tmp / f"{seq}-{model}.mp4")
                    )
                ms = 1000 * (time.perf_counter() - t0) / len(frames)
                if len(masks) != len(gts):
                    raise RuntimeError(f"{seq}/{model}: {len(masks)} masks for {len(gts)} frames")
                row[model] = float(np.mean([iou(m > 127, g) for m, g in zip(masks, gts, strict=True)]))
                row[f"{model} flicker"] = flicker(masks, gts)
                cells.append(f"{row[model]:7.3f} {row[f'{model} flicker']:5.2f} {ms:6.0f}")
            t0 = time.perf_counter()
            per_frame = [baseline(f) for f in frames]
            ms = 1000 * (time.perf_counter() - t0) / len(frames)
            row["u2netp"] = float(np.mean([iou(m > 127, g) for m, g in zip(per_frame, gts, strict=True)]))
            row["u2netp flicker"] = flicker(per_frame, gts)
            cells.append(f"{row['u2netp']:7.3f} {row['u2netp flicker']:5.2f} {ms:6.0f}")
            scores[seq] = row
            print(f"{seq:16} {len(frames):6d} {' '.join(cells)}", flush=True)
    _summary(scores, models, "in-process" if local is not None else "through the API (mp4_h264 masks)")


def _summary(scores: dict[str, dict[str, float]], models: list[str], mode: str) -> None:
    columns = [*models, "u2netp"]

    def mean(seqs: list[str], suffix: str = "") -> str:
        return " ".join(f"{np.mean([scores[s][c + suffix] for s in seqs]):14.3f}" for c in columns)

    every = list(scores)
    people = [s for s in every if s in PERSON_ONLY]
    print(f"{'':23} " + " ".join(f"{c:>14}" for c in columns))
    print(f"{'MEAN J':23} {mean(every)}")
    print(f"{'MEAN flicker %':23} {mean(every, ' flicker')}")
    if people:
        print(f"{'person-only J':23} {mean(people)}   ({', '.join(people)})")
    print(f"mode: {mode}; ms/f = wall time per frame of the whole job (u2netp: in-process baseline)")
    if "auto" not in models:
        return
    auto = np.mean([scores[s]["auto"] for s in every])
    print(f"target auto mean J >= {AUTO_TARGET}: {auto:.3f} {'met' if auto >= AUTO_TARGET else 'NOT met'}")
    below = [s for s in every if scores[s]["auto"] < scores[s]["u2netp"] - SALIENCY_SLACK]
    print(f"sequences below per-frame saliency by more than {SALIENCY_SLACK}: {', '.join(below) or 'none'}")
    if "rvm" in models and people:
        gap = np.mean([scores[s]["auto"] for s in people]) - np.mean([scores[s]["rvm"] for s in people])
        print(f"person-only auto - rvm: {gap:+.3f} (must be >= -{RVM_SLACK})")


if __name__ == "__main__":
    main()
