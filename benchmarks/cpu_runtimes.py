"""RVM's CPU runtimes side by side: speed and the quality guard of issue 15 in one run.

Variants (triton_models.onnx.session's config parameters): onnxruntime fp32 (the reference),
OpenVINO f32, OpenVINO bf16, and OpenVINO bf16 with each sequence's first frame (no recurrent
state yet) in f32 (configs/cpu-bf16.pbtxt), each on the exported graph
(model_repository/rvm/1/model.onnx) with the rvm config's threads.

Speed: the same decoded frames at 720p (../shared/data/videos/02_cups.mp4) and 1080p (the same
frames upscaled with OpenCV's bicubic: no 1080p clip is in the data), each variant's recurrent
loop over them from a fresh state, the variants interleaved frame by frame (A, B, C on frame 0,
then on frame 1 ...) for `--rounds` rounds, the first `WARMUP` frames untimed (OpenVINO compiles
per shape); median ms per frame and its ratio to onnxruntime from the same rounds, so other
load on the machine shifts all variants alike.

Quality guard, same run: per frame, IoU of alpha >= 128 against onnxruntime fp32 over the first
`--frames` frames of every clip in ../shared/data/videos (mean >= 0.98, worst frame >= 0.95);
mean J (IoU of alpha >= 128 against the ground truth) over the DAVIS sequences in
../shared/data/video_masks, first `--frames` frames each, within 0.005 of onnxruntime's.

    python -m benchmarks.cpu_runtimes              # about 6-9 min on a quiet 2-core machine
    python -m benchmarks.cpu_runtimes --quick      # a smoke test (~1 min)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import DATA, OUT_DIR, config_threads, machine, machine_line, write_json
from benchmarks.keypoints_common import iou, load_sequence, sequences
from common.settings import REPO_ROOT
from export.parity import video_frames
from triton_models.onnx import Session

MODEL = REPO_ROOT / "model_repository" / "rvm" / "1" / "model.onnx"
WARMUP = 2
IOU_MEAN, IOU_WORST, J_SLACK = 0.98, 0.95, 0.005
STATE_OUT = ["r1o", "r2o", "r3o", "r4o"]
STATE_IN = ["r1i", "r2i", "r3i", "r4i"]


def model_with_base(base: float, out: Path) -> Path:
    """The shipped wrapper around the original RVM graph with another downsample base: the ratio
    is min(1, base / long side) instead of min(1, 512 / long side) (`export models
    --downsample-base`), written under `out`."""
    import onnx

    from export import sources, wrap

    source = sources.SOURCES["rvm"]
    raw = sources.load_checked(source, sources.locate(source))
    path = out / f"rvm-base{base:g}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(wrap.wrap_rvm(raw, downsample_base=base), str(path))
    return path


def make_session(
    runtime: str, precision: str, threads: int, first: str | None = None, model: Path = MODEL
) -> Session:
    if runtime == "openvino":
        from triton_models.openvino_runtime import OpenVINOSession

        return OpenVINOSession(
            model, threads, precision, state_inputs=STATE_IN, initial_state_precision=first
        )
    from benchmarks.common import ort_session

    return ort_session(model, threads)


# name: (runtime, precision, precision of a sequence's first frame; None = the same)
VARIANTS: dict[str, tuple[str, str, str | None]] = {
    "onnxruntime fp32": ("onnxruntime", "f32", None),
    "openvino f32": ("openvino", "f32", None),
    "openvino bf16": ("openvino", "bf16", None),
    "ov bf16, f32 first": ("openvino", "bf16", "f32"),  # cpu-bf16.pbtxt
}
REFERENCE = "onnxruntime fp32"


def alphas(session: Session, frames: list[np.ndarray]) -> list[np.ndarray]:
    """RVM's recurrent loop from a fresh state: alpha uint8 [H,W] per frame."""
    state = [np.zeros((1, 1, 1, 1), np.float32)] * 4
    out = []
    for frame in frames:
        feed = {"frame": frame[None], **{f"r{k + 1}i": s for k, s in enumerate(state)}}
        alpha, *state = session.run(["alpha", *STATE_OUT], feed)
        out.append(alpha[0])
    return out


def speed(sessions: dict[str, Session], frames: list[np.ndarray], rounds: int) -> dict[str, float]:
    """Median over rounds of each variant's mean seconds per frame. Within a round every variant
    runs its own recurrent loop from a fresh state, interleaved frame by frame (A, B, C on frame 0,
    then on frame 1 ...), so load that comes and goes hits all variants alike; the first WARMUP
    frames run untimed (OpenVINO compiles per input shape)."""
    per_round: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        states = {name: [np.zeros((1, 1, 1, 1), np.float32)] * 4 for name in sessions}
        spent = dict.fromkeys(sessions, 0.0)
        for i, frame in enumerate(frames):
            for name, session in sessions.items():
                feed = {"frame": frame[None], **{f"r{k + 1}i": s for k, s in enumerate(states[name])}}
                start = time.perf_counter()
                _, *states[name] = session.run(["alpha", *STATE_OUT], feed)
                if i >= WARMUP:
                    spent[name] += time.perf_counter() - start
        for name in sessions:
            per_round[name].append(spent[name] / (len(frames) - WARMUP))
    return {name: statistics.median(t) for name, t in per_round.items()}


def mask_ious(a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
    return [iou(x >= 128, y >= 128) for x, y in zip(a, b, strict=True)]


def guard(sessions: dict[str, Session], frames_per_clip: int, log: Callable[[str], None]) -> dict[str, dict]:
    """Per variant: IoU against the reference on ../shared/data/videos (mean, worst frame) and mean
    J on DAVIS; `passed` by the issue's bars."""
    per_frame: dict[str, list[float]] = {name: [] for name in sessions}
    for clip in sorted((DATA / "videos").glob("*.mp4")):
        frames = list(video_frames(clip, frames_per_clip))
        ref = alphas(sessions[REFERENCE], frames)
        for name, session in sessions.items():
            if name != REFERENCE:
                per_frame[name] += mask_ious(alphas(session, frames), ref)
        log(f"  guard: {clip.name} done")
    j: dict[str, list[float]] = {name: [] for name in sessions}
    for seq in sequences():
        frames, gts = load_sequence(seq, frames_per_clip)
        for name, session in sessions.items():
            masks = alphas(session, frames)
            j[name].append(float(np.mean([iou(a >= 128, g) for a, g in zip(masks, gts, strict=True)])))
    log("  guard: DAVIS done")
    ref_j = float(np.mean(j[REFERENCE]))
    out: dict[str, dict] = {}
    for name in sessions:
        mean_j = float(np.mean(j[name]))
        ious = per_frame[name] or [1.0]
        out[name] = {
            "iou_mean": float(np.mean(ious)),
            "iou_worst": float(np.min(ious)),
            "davis_mean_j": mean_j,
            "davis_j_delta": mean_j - ref_j,
            "passed": bool(
                np.mean(ious) >= IOU_MEAN and np.min(ious) >= IOU_WORST and abs(mean_j - ref_j) <= J_SLACK
            ),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_runtimes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="few frames and rounds: a smoke test")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--frames", type=int, default=30, help="guard frames per clip / DAVIS sequence")
    p.add_argument("--speed-only", action="store_true", help="skip the quality guard (no table, no json)")
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all (reference always)")
    p.add_argument("--downsample-bases", type=float, nargs="*", default=[],
                   help="also onnxruntime fp32 with these downsample bases (default graph: 512)")  # fmt: skip
    args = p.parse_args(argv)
    rounds, guard_frames, speed_frames = (1, 4, 4) if args.quick else (args.rounds, args.frames, 12)
    host = machine()
    print(machine_line(host), flush=True)
    threads = config_threads("rvm")
    keep = set(args.variants or VARIANTS) | {REFERENCE}
    wanted = {n: v for n, v in VARIANTS.items() if n in keep}
    sessions = {name: make_session(rt, prec, threads, first) for name, (rt, prec, first) in wanted.items()}
    for base in args.downsample_bases:
        path = model_with_base(base, args.out)
        sessions[f"ort fp32, base {base:g}"] = make_session("onnxruntime", "f32", threads, model=path)
    clip = list(video_frames(DATA / "videos" / "02_cups.mp4", speed_frames))
    upscaled = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in clip]
    sizes = {"720p": clip, "1080p": upscaled}
    figures: dict[str, dict] = {}
    for label, frames in sizes.items():
        per_frame = speed(sessions, frames, rounds)
        figures[label] = {
            name: {"ms": s * 1e3, "x_reference": per_frame[REFERENCE] / s} for name, s in per_frame.items()
        }
        row = figures[label]
        shown = ", ".join(f"{n} {v['ms']:.0f} ms ({v['x_reference']:.2f}x)" for n, v in row.items())
        print(f"speed {label}: {shown}", flush=True)
    if args.speed_only:
        print(machine_line(host))
        return 0
    quality = guard(sessions, guard_frames, lambda line: print(line, flush=True))
    print(f"\n{'variant':<18} {'720p ms':>8} {'x ort':>6} {'1080p ms':>9} {'x ort':>6} "
          f"{'IoU mean':>8} {'worst':>6} {'DAVIS J':>8} {'dJ':>7}  guard")  # fmt: skip
    for name in sessions:
        a, b, q = figures["720p"][name], figures["1080p"][name], quality[name]
        print(f"{name:<18} {a['ms']:8.1f} {a['x_reference']:6.2f} {b['ms']:9.1f} {b['x_reference']:6.2f} "
              f"{q['iou_mean']:8.4f} {q['iou_worst']:6.3f} {q['davis_mean_j']:8.4f} "
              f"{q['davis_j_delta']:+7.4f}  {'pass' if q['passed'] else 'FAIL'}")  # fmt: skip
    print(f"threads {threads}; {rounds} interleaved rounds of {speed_frames - WARMUP} timed frames; "
          f"guard on {guard_frames} frames per clip / sequence")  # fmt: skip
    print(machine_line(host))
    name = "cpu-runtimes-quick.json" if args.quick else "cpu-runtimes.json"
    write_json(args.out / name, {"machine": host, "speed": figures, "quality": quality, "rounds": rounds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
