"""Parity: what a real tritonserver answers for the exported models vs raw onnxruntime on the
ORIGINAL graphs with the packages' own numpy/Pillow pre/post (export.reference).

Run by `export models` after it wrote something (or with --check); the figures land in each
model's export.json.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image

from common.settings import REPO_ROOT, Settings
from devstack.processes import StackError, free_port
from devstack.tritonserver import triton_service
from export import reference
from export.build import Result
from export.repository import record_parity

DATA = REPO_ROOT.parent / "shared" / "data"
PARITY_IMAGE = DATA / "images" / "sod_bsds300" / "images" / "103041.jpg"  # the most filter-sensitive one
PARITY_VIDEO = DATA / "videos" / "01_dog.mp4"
PARITY_FRAMES = 6
MODELS = ("u2netp", "image_decode", "matte_image", "rvm")


@dataclass(frozen=True)
class Tolerance:
    max_abs: int  # uint8 levels
    mean_abs: float


# rvm: same float ops as the reference, so only onnxruntime's graph fusions differ.
# u2netp: the in-graph Lanczos matches Pillow up to float32 rounding; the network amplifies an
# occasional one-level input difference into a few levels at mask edges.
TOLERANCES = {"rvm": Tolerance(2, 0.01), "u2netp": Tolerance(32, 0.25)}


def diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    if a.shape != b.shape:
        raise AssertionError(f"shape {a.shape} != reference shape {b.shape}")
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


def video_frames(path: Path, count: int) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= count:
                return
            yield frame.to_ndarray(format="rgb24")


def _infer(client: grpcclient.InferenceServerClient, model: str, name: str, data: np.ndarray,
           outputs: list[str], **kwargs: Any) -> list[np.ndarray]:  # fmt: skip
    tensor = grpcclient.InferInput(name, list(data.shape), "BYTES" if data.dtype == object else "UINT8")
    tensor.set_data_from_numpy(data)
    result = client.infer(
        model, [tensor], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs], **kwargs
    )
    return [result.as_numpy(o) for o in outputs]


def _check_images(client: grpcclient.InferenceServerClient, source: Path) -> dict[str, Any]:
    raw = reference.raw_session(source)
    rgb = np.asarray(Image.open(PARITY_IMAGE).convert("RGB"))
    expected = reference.u2netp_alpha(raw, rgb)
    (direct,) = _infer(client, "u2netp", "image", rgb, ["alpha"])
    blob = np.array([PARITY_IMAGE.read_bytes()], dtype=object)
    (ensemble,) = _infer(client, "matte_image", "image_bytes", blob, ["alpha"])
    return {
        "image": PARITY_IMAGE.name,
        "u2netp": diff(direct, expected),
        "matte_image": diff(ensemble, expected),
    }


def _check_video(client: grpcclient.InferenceServerClient, source: Path) -> dict[str, Any]:
    frames = list(video_frames(PARITY_VIDEO, PARITY_FRAMES))
    expected = list(reference.rvm_sequence(reference.raw_session(source), frames))
    worst = {"alpha": (0, 0.0), "foreground": (0, 0.0)}
    seq = 1 + int.from_bytes(np.random.bytes(6), "little")  # never collides with a live sequence
    for i, (frame, (alpha_ref, fg_ref)) in enumerate(zip(frames, expected, strict=True)):
        alpha, fg = _infer(client, "rvm", "frame", frame[None], ["alpha", "foreground"], sequence_id=seq,
                           sequence_start=i == 0, sequence_end=i == len(frames) - 1)  # fmt: skip
        for key, got, ref in (("alpha", alpha[0], alpha_ref), ("foreground", fg[0], fg_ref)):
            m, mean = diff(got, ref)
            worst[key] = (max(worst[key][0], m), max(worst[key][1], mean))
    h, w = frames[0].shape[:2]
    return {"video": f"{PARITY_VIDEO.name} frames 0-{len(frames) - 1} ({w}x{h})", **worst}


def _passes(figures: dict[str, Any], keys: tuple[str, ...], tol: Tolerance) -> bool:
    return all(figures[k][0] <= tol.max_abs and figures[k][1] <= tol.mean_abs for k in keys)


def verify(repo: Path, results: list[Result], sources_dir: Path | None) -> bool:
    for path in (PARITY_IMAGE, PARITY_VIDEO):
        if not path.is_file():
            print(f"parity: test media {path} missing; pass --no-parity to skip the check")
            return False
    del sources_dir  # the Results already carry the source paths that were verified
    base = Settings()
    settings = base.with_overrides(
        model_repository=repo,
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
    )
    logs = Path(tempfile.mkdtemp(prefix="export-parity-"))
    # The stack loads every model of the repository; a colleague's half-built model there must
    # not fail this check, so errors are tolerated here and our own models' readiness is asked.
    tolerant = ["--exit-on-error=false", "--strict-readiness=false"]
    svc = triton_service(settings, logs / "tritonserver.log", base.data_dir / "backends", tolerant)
    by_model = {r.model: r for r in results}
    svc.start()
    try:
        svc.wait_ready(240)
        client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
        not_ready = [m for m in MODELS if not client.is_model_ready(m)]
        if not_ready:
            print(f"parity: models not ready: {', '.join(not_ready)}; see {logs / 'tritonserver.log'}")
            return False
        figures = {
            "u2netp": _check_images(client, by_model["u2netp"].source_path),
            "rvm": _check_video(client, by_model["rvm"].source_path),
        }
    except StackError as exc:
        print(f"parity: tritonserver did not start: {exc}")
        return False
    finally:
        svc.stop()
    keys = {"u2netp": ("u2netp", "matte_image"), "rvm": ("alpha", "foreground")}
    ok = True
    for model, figs in figures.items():
        tol = TOLERANCES[model]
        passed = _passes(figs, keys[model], tol)
        ok &= passed
        shown = ", ".join(f"{k} max {figs[k][0]} mean {figs[k][1]:.4f}" for k in keys[model])
        print(f"parity {model}: {shown} (uint8 levels; tolerance max {tol.max_abs}, mean {tol.mean_abs}) "
              f"{'ok' if passed else 'FAILED'}")  # fmt: skip
        record_parity(by_model[model].target, {**figs, "passed": passed, "tolerance": vars(tol)})
    return ok
