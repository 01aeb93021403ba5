"""Start-time parity for the Triton image: what the server answers for `rvm` and `u2netp` against
onnxruntime on the CPU running the same 1/model.onnx, on synthetic frames.

The image is built from a clean checkout, without ../shared/data, so `python -m export models`
runs there with --no-parity; this check takes its place once the server is up (on the GPU it is
the check that matters: CUDA kernels, TF32 and the native backends against the CPU graph the
development suite proves against the packages' own references). docker/triton-start.sh runs it
and writes the marker the HEALTHCHECK waits for; a failure stops the container.

Needs numpy, onnxruntime (triton_models' dependencies) and tritonclient[grpc]. Exit status 0
when every output agrees within TOLERANCE, 1 otherwise, 2 when the server never became ready.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient

STATES = ("r1i", "r2i", "r3i", "r4i")


@dataclass(frozen=True)
class Tolerance:
    """uint8 levels: mean and max absolute difference, IoU of the masks at 128."""

    mean_abs: float = 1.0
    max_abs: float = 64.0
    min_iou: float = 0.99


# GPU and CPU kernels differ in summation order and (CUDA) TF32 convolutions: a level or two on
# soft edges, more on a few pixels where the alpha levels curve steepens; the masks must agree.
TOLERANCE = Tolerance()


def synthetic_frames(height: int, width: int, count: int) -> list[np.ndarray]:
    """uint8 [H,W,3] frames: a textured background and a bright disc moving right, deterministic."""
    rng = np.random.default_rng(17)
    yy, xx = np.mgrid[0:height, 0:width]
    backdrop = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1)
    backdrop = (backdrop + rng.integers(0, 24, (height, width, 3))).clip(0, 255).astype(np.uint8)
    frames = []
    for i in range(count):
        frame = backdrop.copy()
        cy, cx, r = height // 2, width // 3 + i * width // 20, min(height, width) // 4
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (236, 212, 190)
        frames.append(frame)
    return frames


def compare(name: str, got: np.ndarray, want: np.ndarray, tol: Tolerance = TOLERANCE) -> tuple[bool, str]:
    if got.shape != want.shape:
        return False, f"{name}: shape {got.shape} != {want.shape}"
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    a, b = got >= 128, want >= 128
    union = int((a | b).sum())
    iou = float((a & b).sum() / union) if union else 1.0
    ok = diff.mean() <= tol.mean_abs and diff.max() <= tol.max_abs and iou >= tol.min_iou
    line = f"{name}: max {int(diff.max())} mean {diff.mean():.4f} iou {iou:.4f} {'ok' if ok else 'FAILED'}"
    return ok, line


def _input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    return tensor


def check_u2netp(client: grpcclient.InferenceServerClient, repo: Path) -> list[tuple[bool, str]]:
    session = ort.InferenceSession(
        str(repo / "u2netp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    image = synthetic_frames(240, 320, 1)[0]
    got = client.infer("u2netp", [_input("image", image)]).as_numpy("alpha")
    want = session.run(["alpha"], {"image": image})[0]
    return [compare("u2netp alpha 320x240", got, want)]


def check_rvm(
    client: grpcclient.InferenceServerClient, repo: Path, frames: int = 4
) -> list[tuple[bool, str]]:
    """One sequence of `frames` frames, so the server's kept state is part of what is compared."""
    session = ort.InferenceSession(str(repo / "rvm" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    states = {name: np.zeros((1, 1, 1, 1), np.float32) for name in STATES}
    sequence = 1 + int.from_bytes(np.random.bytes(6), "little")
    results = []
    clip = synthetic_frames(360, 640, frames)
    for i, frame in enumerate(clip):
        served = client.infer(
            "rvm", [_input("frame", frame[None])], sequence_id=sequence,
            sequence_start=i == 0, sequence_end=i == len(clip) - 1,
        )  # fmt: skip
        alpha, foreground, *new_states = session.run(
            ["alpha", "foreground", "r1o", "r2o", "r3o", "r4o"], {"frame": frame[None], **states}
        )
        states = dict(zip(STATES, new_states, strict=True))
        results.append(compare(f"rvm alpha 640x360 frame {i}", served.as_numpy("alpha"), alpha))
        results.append(
            compare(f"rvm foreground 640x360 frame {i}", served.as_numpy("foreground"), foreground)
        )
    return results


def wait_ready(client: grpcclient.InferenceServerClient, models: tuple[str, ...], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                return True
        except grpcclient.InferenceServerException:
            pass
        time.sleep(1.0)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="tritonserver gRPC address")
    parser.add_argument("--repository", type=Path, default=Path("/opt/matting/model_repository"))
    parser.add_argument("--wait-s", type=float, default=600.0, help="how long to wait for readiness")
    parser.add_argument("--marker", type=Path, default=None, help="file written when every check passes")
    args = parser.parse_args(argv)
    client = grpcclient.InferenceServerClient(args.url)
    if not wait_ready(client, ("rvm", "u2netp"), args.wait_s):
        print(
            f"served parity: rvm and u2netp not ready at {args.url} after {args.wait_s:g} s", file=sys.stderr
        )
        return 2
    results = [*check_u2netp(client, args.repository), *check_rvm(client, args.repository)]
    for _, line in results:
        print(f"served parity: {line}")
    passed = all(ok for ok, _ in results)
    if passed and args.marker is not None:
        args.marker.write_text("ok\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
