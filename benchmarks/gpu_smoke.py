"""GPU smoke test and benchmark of the exported graphs, for a machine with PyTorch (CUDA) and
onnxruntime but no Triton, Docker or TensorRT:

    python -m benchmarks.gpu_smoke                    # cuda: ~5 minutes
    python -m benchmarks.gpu_smoke --device cpu --sizes 8x520 --seconds 0 --warmup 0 --min-calls 1

For rvm and u2netp (model_repository/<m>/1/model.onnx, `make models`), on every engine the
machine offers:
* `onnxruntime-cuda` (fp32, TF32 off) when onnxruntime has the CUDA provider;
* `torch-fp32` (TF32 off) and, on CUDA, `torch-fp16` (autocast): the ONNX graph run with PyTorch
  operators (benchmarks/onnx_torch.py), so no converter package is needed.
1. Checks each engine against onnxruntime on the CPU (the reference the CPU route is proven
   against): rvm over a sequence of frames (the recurrent state included), u2netp on one image;
   uint8 levels: max and mean absolute difference, IoU of the masks at 128, within TOLERANCES.
2. Times frames/s per engine at each size (default 720p, 1080p, 4K): one frame per call, the
   uint8 frame copied to the device and the outputs back, as Triton would; rvm's state stays on
   the device. Printed beside the RVM paper's figures (MobileNetV3 on a GTX 1080 Ti: 104 fps HD
   at downsample 0.25, 76 fps 4K at 0.125, model alone); our graphs work at a long side of 512
   (0.267 at HD, 0.133 at 4K) and include the uint8 pre/post-processing.
Frames are synthetic (deterministic texture and a moving disc), so the script needs no data.
Exit status 0 when every check passes, 1 otherwise. --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.onnx_torch import OnnxGraph
from common.settings import REPO_ROOT

STATES = ("r1i", "r2i", "r3i", "r4i")
NAMED_SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}
PAPER_FPS = {(1080, 1920): 104.0, (2160, 3840): 76.0}  # RVM paper, GTX 1080 Ti, MobileNetV3


@dataclass(frozen=True)
class Tolerance:
    mean_abs: float
    min_iou: float


TOLERANCES = {"fp32": Tolerance(0.5, 0.995), "fp16": Tolerance(2.0, 0.98)}


@dataclass(frozen=True)
class Check:
    model: str
    engine: str
    size: str
    output: str
    max_abs: int
    mean_abs: float
    iou: float
    passed: bool


@dataclass(frozen=True)
class Timing:
    model: str
    engine: str
    size: str
    calls: int
    per_second: float
    paper_fps: float | None


# (request inputs, starts a sequence) -> uint8 outputs. rvm's states are kept by the function
# itself (on the device for torch), as Triton keeps them: zeros again when a sequence starts.
Run = Callable[[dict[str, np.ndarray], bool], dict[str, np.ndarray]]


class Engine:
    """One way to run a graph: `start(path)` gives a Run for it."""

    def __init__(self, name: str, precision: str) -> None:
        self.name, self.precision = name, precision

    def start(self, path: Path) -> Run:
        raise NotImplementedError


class OrtEngine(Engine):
    def __init__(self, name: str, providers: list[str | tuple[str, dict[str, str]]]) -> None:
        super().__init__(name, "fp32")
        self.providers = providers

    def start(self, path: Path) -> Run:
        session = ort.InferenceSession(str(path), providers=self.providers)
        names = [o.name for o in session.get_outputs()]
        stateful = {i.name for i in session.get_inputs()} >= set(STATES)
        kept: dict[str, np.ndarray] = {}

        def run(inputs: dict[str, np.ndarray], start: bool) -> dict[str, np.ndarray]:
            if stateful and (start or not kept):
                kept.update(_zeros())
            out = dict(zip(names, session.run(names, {**inputs, **kept}), strict=True))
            if stateful:
                kept.update({s: out[s[:-1] + "o"] for s in STATES})
            return out

        return run


class TorchEngine(Engine):
    def __init__(self, device: torch.device, precision: str) -> None:
        super().__init__(f"torch-{precision}", precision)
        self.device = device

    def _autocast(self) -> AbstractContextManager[object]:
        if self.precision == "fp16":
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return nullcontext()

    def start(self, path: Path) -> Run:
        model = onnx.load(str(path))
        graph = OnnxGraph(model, self.device)
        stateful = {i.name for i in model.graph.input} >= set(STATES)
        kept: dict[str, torch.Tensor] = {}

        def run(inputs: dict[str, np.ndarray], start: bool) -> dict[str, np.ndarray]:
            feed = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
            if stateful and (start or not kept):
                kept.update({k: torch.from_numpy(v).to(self.device) for k, v in _zeros().items()})
            with self._autocast():
                out = graph(**feed, **kept)
            if stateful:
                kept.update({s: out[s[:-1] + "o"] for s in STATES})
            # the uint8 outputs come back to the host (what a client receives); states stay
            return {k: v.cpu().numpy() for k, v in out.items() if v.dtype == torch.uint8}

        return run


def engines(device: torch.device) -> list[Engine]:
    found: list[Engine] = []
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32; fp16 is its own engine
        torch.backends.cudnn.allow_tf32 = False
        if "CUDAExecutionProvider" in ort.get_available_providers():
            found.append(OrtEngine("onnxruntime-cuda", [("CUDAExecutionProvider", {"use_tf32": "0"})]))
        found += [TorchEngine(device, "fp32"), TorchEngine(device, "fp16")]
    else:
        found.append(TorchEngine(device, "fp32"))
    return found


def synthetic_frames(height: int, width: int, count: int) -> Iterator[np.ndarray]:
    """uint8 [H,W,3]: a fixed texture with a light disc moving right by 1/20 of the width a frame."""
    rng = np.random.default_rng(17)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1)
    base = (base + rng.integers(0, 24, (height, width, 3))).clip(0, 255).astype(np.uint8)
    radius = max(1, min(height, width) // 4)
    for i in range(count):
        frame = base.copy()
        frame[(yy - height // 2) ** 2 + (xx - width // 3 - i * width // 20) ** 2 < radius**2] = (
            236,
            212,
            190,
        )
        yield frame


def compare(model: str, engine: Engine, size: str, output: str, got: np.ndarray, want: np.ndarray) -> Check:
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    a, b = got >= 128, want >= 128
    union = int((a | b).sum())
    iou = float((a & b).sum() / union) if union else 1.0
    tol = TOLERANCES[engine.precision]
    passed = got.shape == want.shape and float(diff.mean()) <= tol.mean_abs and iou >= tol.min_iou
    return Check(model, engine.name, size, output, int(diff.max()), float(diff.mean()), iou, passed)


def _zeros() -> dict[str, np.ndarray]:
    """RVM's documented initial state: [1,1,1,1] zeros, which the graph broadcasts."""
    return {s: np.zeros((1, 1, 1, 1), np.float32) for s in STATES}


def check_rvm(reference: Run, run: Run, engine: Engine, size: tuple[int, int], frames: int) -> list[Check]:
    """One sequence of `frames` frames through both: the kept state is part of what is compared."""
    checks = []
    for i, frame in enumerate(synthetic_frames(*size, frames)):
        want, got = reference({"frame": frame[None]}, i == 0), run({"frame": frame[None]}, i == 0)
        checks += [
            compare("rvm", engine, f"{size[1]}x{size[0]}", o, got[o], want[o])
            for o in ("alpha", "foreground")
        ]
    return checks


def check_u2netp(reference: Run, run: Run, engine: Engine, size: tuple[int, int]) -> list[Check]:
    image = next(synthetic_frames(*size, 1))
    want, got = reference({"image": image}, True), run({"image": image}, True)
    return [compare("u2netp", engine, f"{size[1]}x{size[0]}", "alpha", got["alpha"], want["alpha"])]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    model: str,
    run: Run,
    size: tuple[int, int],
    seconds: float,
    device: torch.device,
    warmup: int = 2,
    least: int = 3,
) -> tuple[int, float]:
    """(calls, calls per second) after `warmup` calls, for at least `seconds` and `least` calls;
    rvm as one sequence (the frames cycle through a few synthetic ones)."""
    name = "frame" if model == "rvm" else "image"
    frames = [f[None] if model == "rvm" else f for f in synthetic_frames(*size, 4)]
    for i in range(warmup):
        run({name: frames[i % len(frames)]}, i == 0)
    _sync(device)
    calls, start = 0, time.perf_counter()
    while calls < least or time.perf_counter() - start < seconds:
        run({name: frames[calls % len(frames)]}, False)
        calls += 1
    _sync(device)
    return calls, calls / (time.perf_counter() - start)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in NAMED_SIZES:
            sizes.append(NAMED_SIZES[part])
        else:
            h, w = (int(v) for v in part.split("x"))
            sizes.append((h, w))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--sizes", default="720p,1080p,4k", help="720p, 1080p, 4k or HxW, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per model, engine and size")
    parser.add_argument("--check-frames", type=int, default=4, help="rvm frames compared per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each timing")
    parser.add_argument("--min-calls", type=int, default=3, help="timed calls at least, whatever --seconds")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--json", type=Path, default=None, help="write checks and timings here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device visible to PyTorch (use --device cpu for the CPU run)", file=sys.stderr)
        return 2
    sizes = parse_sizes(args.sizes)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {machine}; torch {torch.__version__}; onnxruntime {ort.__version__}")
    checks: list[Check] = []
    timings: list[Timing] = []
    started = time.perf_counter()
    for model in ("rvm", "u2netp"):
        path = args.repository / model / "1" / "model.onnx"
        reference = OrtEngine("onnxruntime-cpu", ["CPUExecutionProvider"]).start(path)
        for engine in engines(device):
            run = engine.start(path)
            for size in sizes:
                found = (
                    check_rvm(reference, run, engine, size, args.check_frames)
                    if model == "rvm"
                    else check_u2netp(reference, run, engine, size)
                )
                checks += found
                calls, rate = time_calls(model, run, size, args.seconds, device, args.warmup, args.min_calls)
                paper = PAPER_FPS.get(size) if model == "rvm" else None
                timings.append(Timing(model, engine.name, f"{size[1]}x{size[0]}", calls, rate, paper))
                worst = max(found, key=lambda c: c.mean_abs)
                verdict = "ok" if all(c.passed for c in found) else "FAILED"
                beside = f"  (paper: {paper:g} fps)" if paper else ""
                print(
                    f"{model:7} {engine.name:17} {size[1]:>5}x{size[0]:<5} {rate:8.1f}/s{beside:22} check: "
                    f"worst mean {worst.mean_abs:.3f} max {worst.max_abs} iou {worst.iou:.4f} {verdict}",
                    flush=True,
                )
    passed = all(c.passed for c in checks)
    print(f"{'all checks passed' if passed else 'CHECKS FAILED'} in {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        report = {
            "device": machine,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "checks": [asdict(c) for c in checks],
            "timings": [asdict(t) for t in timings],
        }
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
