"""Parity: what a tritonserver serves agrees with a reference within a tolerance.

References are what each model's own package computes (export.reference: onnxruntime on the
ORIGINAL .onnx with the package's numpy/Pillow pre/post); a model added with `export add` is
checked against onnxruntime on its own model.onnx with seeded inputs, which catches config,
runner and transport mistakes. Figures are in the output's own units: uint8 levels (0..255) for
images and masks.

One Tolerance type, two tables, because the two callers look at different samples:
`export models` (`verify`, figures kept in each model's export.json) checks one filter-sensitive
image and six video frames it knows, so it bounds the worst level as well as the mean;
`export validate` (`validate`) runs on whatever real images it is given, where an edge pixel may
move further, so it bounds the mean and the agreement of the masks instead.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from PIL import Image, ImageOps

from common.settings import REPO_ROOT
from devstack.processes import StackError
from devstack.tritonserver import private_triton
from export import pbtxt, reference, sources
from export.adding import versions
from export.build import Result
from export.repository import record_parity


@dataclass(frozen=True)
class Tolerance:
    """How far a served output may be from its reference; a bound left None is not checked."""

    mean_abs: float  # mean absolute difference, at most
    max_abs: float | None = None  # largest absolute difference, at most
    min_iou: float | None = None  # IoU of the two masks thresholded at half range, at least

    def admits(self, max_abs: float, mean_abs: float, iou: float) -> bool:
        return (
            mean_abs <= self.mean_abs
            and (self.max_abs is None or max_abs <= self.max_abs)
            and (self.min_iou is None or iou >= self.min_iou)
        )

    def describe(self) -> str:
        bounds = [f"max {self.max_abs:g}"] if self.max_abs is not None else []
        bounds.append(f"mean {self.mean_abs:g}")
        if self.min_iou is not None:
            bounds.append(f"IoU {self.min_iou:g}")
        return ", ".join(bounds)


# export models. rvm: same float ops as the reference, so only onnxruntime's graph fusions differ.
# u2netp: the in-graph Lanczos matches Pillow up to float32 rounding; the network amplifies an
# occasional one-level input difference into a few levels at mask edges.
_U2NETP_PARITY = Tolerance(0.25, max_abs=32)
PARITY_TOLERANCES = {
    "rvm": Tolerance(0.01, max_abs=2),
    "u2netp": _U2NETP_PARITY,
    "matte_image": _U2NETP_PARITY,
}
# export validate, measured on sod_bsds300: u2netp differs from rembg's Pillow LANCZOS resizes by
# < 0.1 level on average (max 12 on edges); rvm's wrapper is the raw graph plus exact casts.
_REAL_IMAGES = Tolerance(1.0, min_iou=0.99)
VALIDATE_TOLERANCES = {"u2netp": _REAL_IMAGES, "matte_image": _REAL_IMAGES, "rvm": _REAL_IMAGES}
ADDED_TOLERANCE = Tolerance(1e-4, min_iou=0.999)

DATA = REPO_ROOT.parent / "shared" / "data"
PARITY_IMAGE = DATA / "images" / "sod_bsds300" / "images" / "103041.jpg"  # the most filter-sensitive one
PARITY_VIDEO = DATA / "videos" / "01_dog.mp4"
PARITY_FRAMES = 6
PARITY_MODELS = ("u2netp", "image_decode", "matte_image", "rvm")


@dataclass(frozen=True)
class Agreement:
    """One served output against its reference: absolute differences and mask IoU, and the verdict."""

    model: str
    output: str
    sample: str
    max_abs: float
    mean_abs: float
    iou: float
    passed: bool


def compare(
    model: str,
    output: str,
    sample: str,
    got: np.ndarray,
    want: np.ndarray,
    tol: Tolerance,
    half: float = 127.5,
) -> Agreement:
    """got and want: arrays of one shape and any numeric dtype (a shape mismatch fails, with both
    shapes in the sample); `half` is the threshold that turns both into masks for the IoU."""
    if got.shape != want.shape:
        sample = f"{sample} (shape {got.shape} != {want.shape})"
        return Agreement(model, output, sample, np.inf, np.inf, 0.0, False)
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    a, b = got > half, want > half
    union = int((a | b).sum())
    iou = float((a & b).sum() / union) if union else 1.0
    max_abs, mean_abs = float(diff.max(initial=0.0)), float(diff.mean()) if diff.size else 0.0
    return Agreement(model, output, sample, max_abs, mean_abs, iou, tol.admits(max_abs, mean_abs, iou))


def video_frames(path: Path, count: int) -> Iterator[np.ndarray]:
    """The first `count` frames of a video as uint8 [H,W,3] RGB."""
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= count:
                return
            yield frame.to_ndarray(format="rgb24")


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _input(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def check_u2netp(
    client: grpcclient.InferenceServerClient,
    session: ort.InferenceSession,
    images: Iterable[Path],
    tol: Tolerance,
) -> Iterator[Agreement]:
    """`session`: onnxruntime on the original u2netp.onnx (export.reference.raw_session)."""
    for path in images:
        rgb = _rgb(path)
        got = client.infer("u2netp", [_input("image", rgb, "UINT8")]).as_numpy("alpha")
        yield compare("u2netp", "alpha", path.name, got, reference.u2netp_alpha(session, rgb), tol)


def check_matte_image(
    client: grpcclient.InferenceServerClient,
    session: ort.InferenceSession,
    images: Iterable[Path],
    tol: Tolerance,
) -> Iterator[Agreement]:
    """The encoded file through the ensemble (decoding in Triton) against u2netp's reference."""
    for path in images:
        payload = np.array([path.read_bytes()], dtype=np.object_)
        got = client.infer("matte_image", [_input("image_bytes", payload, "BYTES")]).as_numpy("alpha")
        yield compare(
            "matte_image", "alpha", path.name, got, reference.u2netp_alpha(session, _rgb(path)), tol
        )


def check_rvm(
    client: grpcclient.InferenceServerClient,
    session: ort.InferenceSession,
    clips: Iterable[tuple[str, list[np.ndarray]]],
    tol: Tolerance,
    outputs: Sequence[str] = ("alpha",),
) -> Iterator[Agreement]:
    """Each (name, uint8 [H,W,3] frames) clip as one sequence, so the recurrent state the server
    keeps is exercised; one Agreement per frame and output (`alpha`, `foreground`)."""
    for name, frames in clips:
        expected = reference.rvm_sequence(session, frames)
        seq = 1 + int.from_bytes(np.random.bytes(6), "little")  # never collides with a live sequence
        for i, (frame, (alpha, foreground)) in enumerate(zip(frames, expected, strict=True)):
            result = client.infer(
                "rvm", [_input("frame", frame[None], "UINT8")], sequence_id=seq,
                sequence_start=i == 0, sequence_end=i == len(frames) - 1,
            )  # fmt: skip
            want = {"alpha": alpha, "foreground": foreground}
            for output in outputs:
                sample = f"{name}#{i}" if output == "alpha" else f"{name}#{i}:{output}"
                yield compare("rvm", output, sample, result.as_numpy(output)[0], want[output], tol)


_NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64, "TYPE_UINT8": np.uint8}
_NUMPY |= {"TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_INT8": np.int8, "TYPE_BOOL": np.bool_}


def check_added(
    client: grpcclient.InferenceServerClient, model_dir: Path, seed: int = 0
) -> Iterator[Agreement]:
    """A model from `export add`: seeded inputs through Triton against onnxruntime on its latest
    model.onnx, per output; the mask threshold is the reference's median."""
    config = pbtxt.read(model_dir / "config.pbtxt")
    latest = model_dir / str(versions(model_dir)[-1])
    session = ort.InferenceSession(str(latest / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    batch = (2,) if config.max_batch_size > 0 else ()
    feed, inputs = {}, []
    for spec in config.input:
        type_name = pbtxt.mc.DataType.Name(spec.data_type)
        if type_name not in _NUMPY:
            yield Agreement(
                config.name, spec.name, f"input {spec.name}: {type_name} not generated", 0, 0, 1, True
            )
            return
        shape = batch + tuple(d if d > 0 else 8 for d in spec.dims)
        values = rng.uniform(0, 255, shape).astype(_NUMPY[type_name])
        feed[spec.name] = values
        inputs.append(_input(spec.name, values, type_name.removeprefix("TYPE_")))
    result = client.infer(config.name, inputs)
    for spec, want in zip(config.output, session.run([o.name for o in config.output], feed), strict=True):
        half = float(np.median(want)) if want.size else 0.0
        sample = f"seeded {spec.name}"
        yield compare(config.name, spec.name, sample, result.as_numpy(spec.name), want, ADDED_TOLERANCE, half)


def is_added(model_dir: Path) -> bool:
    found = versions(model_dir)
    try:
        manifest = json.loads((model_dir / str(found[-1]) / "export.json").read_text())
    except (IndexError, OSError, ValueError):
        return False
    return "added" in manifest.get("built_from", {})


# --- export validate ---------------------------------------------------------------------------------


VALIDATED = ("u2netp", "matte_image", "rvm")  # the shipped models with a reference
_SOURCE = {"u2netp": "u2netp", "matte_image": "u2netp", "rvm": "rvm"}


def validate(
    client: grpcclient.InferenceServerClient, model: str, images: list[Path], sources_dir: Path | None
) -> Iterator[Agreement]:
    """One of VALIDATED on real images (rvm: each image as a two-frame sequence, alpha only).

    Raises sources.SourceError when the original .onnx cannot be found."""
    session = reference.raw_session(sources.locate(sources.SOURCES[_SOURCE[model]], sources_dir))
    tol = VALIDATE_TOLERANCES[model]
    if model == "u2netp":
        yield from check_u2netp(client, session, images, tol)
    elif model == "matte_image":
        yield from check_matte_image(client, session, images, tol)
    else:
        yield from check_rvm(client, session, ((p.name, [_rgb(p)] * 2) for p in images), tol)


def encode_table(rows: list[Agreement]) -> str:
    head = f"{'MODEL':14} {'SAMPLE':28} {'MAX_ABS':>9} {'MEAN_ABS':>9} {'IOU':>7}  RESULT"
    lines = [head]
    for r in rows:
        verdict = "ok" if r.passed else "FAIL"
        lines.append(f"{r.model:14} {r.sample:28} {r.max_abs:9.4g} {r.mean_abs:9.4g} {r.iou:7.4f}  {verdict}")
    return "\n".join(lines)


# --- export models -----------------------------------------------------------------------------------


def _worst(rows: list[Agreement]) -> tuple[float, float]:
    return max(r.max_abs for r in rows), max(r.mean_abs for r in rows)


def _record(
    result: Result, sample: dict[str, str], groups: dict[str, list[Agreement]], tol: Tolerance
) -> bool:
    """Print one line for a model and keep its figures (worst over the samples) in export.json."""
    passed = all(r.passed for rows in groups.values() for r in rows)
    worst = {label: _worst(rows) for label, rows in groups.items()}
    shown = ", ".join(f"{label} max {m:g} mean {mean:.4f}" for label, (m, mean) in worst.items())
    verdict = "ok" if passed else "FAILED"
    print(f"parity {result.model}: {shown} (uint8 levels; tolerance {tol.describe()}) {verdict}")
    record_parity(result.target, {**sample, **worst, "passed": passed, "tolerance": asdict(tol)})
    return passed


def verify(repo: Path, results: list[Result]) -> bool:
    """Serve `repo` from a tritonserver of its own and compare u2netp, matte_image and rvm with
    the references computed from `results`' source files; print and record the figures.

    Returns False (with the reason printed) when the test media are missing, the server does not
    start, a model is not ready or an output is outside PARITY_TOLERANCES."""
    for path in (PARITY_IMAGE, PARITY_VIDEO):
        if not path.is_file():
            print(f"parity: test media {path} missing; pass --no-parity to skip the check")
            return False
    by_model = {r.model: r for r in results}
    workdir = Path(tempfile.mkdtemp(prefix="export-parity-"))
    # The server loads every model of the repository; a colleague's half-built model there must
    # not fail this check, so errors are tolerated here and our own models' readiness is asked.
    tolerant = ["--exit-on-error=false", "--strict-readiness=false"]
    try:
        with private_triton(repo, workdir, tolerant, timeout_s=240) as settings:
            client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
            not_ready = [m for m in PARITY_MODELS if not client.is_model_ready(m)]
            if not_ready:
                print(f"parity: models not ready: {', '.join(not_ready)}; see {workdir / 'tritonserver.log'}")
                return False
            u2netp = reference.raw_session(by_model["u2netp"].source_path)
            images = {
                "u2netp": list(check_u2netp(client, u2netp, [PARITY_IMAGE], PARITY_TOLERANCES["u2netp"])),
                "matte_image": list(
                    check_matte_image(client, u2netp, [PARITY_IMAGE], PARITY_TOLERANCES["matte_image"])
                ),
            }
            frames = list(video_frames(PARITY_VIDEO, PARITY_FRAMES))
            rvm = list(
                check_rvm(
                    client,
                    reference.raw_session(by_model["rvm"].source_path),
                    [(PARITY_VIDEO.name, frames)],
                    PARITY_TOLERANCES["rvm"],
                    ("alpha", "foreground"),
                )
            )
    except StackError as exc:
        print(f"parity: tritonserver did not start: {exc}")
        return False
    h, w = frames[0].shape[:2]
    video = f"{PARITY_VIDEO.name} frames 0-{len(frames) - 1} ({w}x{h})"
    by_output = {o: [r for r in rvm if r.output == o] for o in ("alpha", "foreground")}
    images_ok = _record(by_model["u2netp"], {"image": PARITY_IMAGE.name}, images, PARITY_TOLERANCES["u2netp"])
    video_ok = _record(by_model["rvm"], {"video": video}, by_output, PARITY_TOLERANCES["rvm"])
    return images_ok and video_ok
