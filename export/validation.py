"""Parity of served models against their references, on real images.

References are what each model's own package computes (export/reference.py: onnxruntime on the
ORIGINAL .onnx with the package's numpy/Pillow pre/post); a model added with `export add` is
checked against onnxruntime on its own model.onnx with seeded inputs, which catches config, runner
and transport mistakes. Metrics are in uint8 levels for images (0..255) and raw units otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image, ImageOps

from export import pbtxt, reference, sources
from export.adding import versions


@dataclass(frozen=True)
class Tolerance:
    mean_abs: float  # mean absolute error, at most
    min_iou: float  # IoU of masks thresholded at half range, at least


# Measured on sod_bsds300: u2netp differs from rembg's Pillow LANCZOS resizes by < 0.1 level
# on average (max 12 on edges); rvm's wrapper is the raw graph plus exact casts.
TOLERANCES = {
    "u2netp": Tolerance(1.0, 0.99),
    "matte_image": Tolerance(1.0, 0.99),
    "rvm": Tolerance(1.0, 0.99),
}
ADDED_TOLERANCE = Tolerance(1e-4, 0.999)


@dataclass(frozen=True)
class Row:
    model: str
    sample: str
    max_abs: float
    mean_abs: float
    iou: float
    passed: bool


def compare(model: str, sample: str, got: np.ndarray, want: np.ndarray, tol: Tolerance, half: float) -> Row:
    if got.shape != want.shape:
        return Row(model, f"{sample} (shape {got.shape} != {want.shape})", np.inf, np.inf, 0.0, False)
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    a, b = got > half, want > half
    union = int((a | b).sum())
    iou = float((a & b).sum() / union) if union else 1.0
    mean = float(diff.mean()) if diff.size else 0.0
    return Row(
        model, sample, float(diff.max(initial=0.0)), mean, iou, mean <= tol.mean_abs and iou >= tol.min_iou
    )


def _input(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def check_u2netp(
    client: grpcclient.InferenceServerClient, images: list[Path], sources_dir: Path | None
) -> Iterator[Row]:
    session = reference.raw_session(sources.locate(sources.SOURCES["u2netp"], sources_dir))
    for path in images:
        rgb = _rgb(path)
        got = client.infer("u2netp", [_input("image", rgb, "UINT8")]).as_numpy("alpha")
        yield compare(
            "u2netp", path.name, got, reference.u2netp_alpha(session, rgb), TOLERANCES["u2netp"], 127.5
        )


def check_matte_image(
    client: grpcclient.InferenceServerClient, images: list[Path], sources_dir: Path | None
) -> Iterator[Row]:
    session = reference.raw_session(sources.locate(sources.SOURCES["u2netp"], sources_dir))
    for path in images:
        payload = np.array([path.read_bytes()], dtype=np.object_)
        got = client.infer("matte_image", [_input("image_bytes", payload, "BYTES")]).as_numpy("alpha")
        want = reference.u2netp_alpha(session, _rgb(path))
        yield compare("matte_image", path.name, got, want, TOLERANCES["matte_image"], 127.5)


def check_rvm(
    client: grpcclient.InferenceServerClient, images: list[Path], sources_dir: Path | None
) -> Iterator[Row]:
    """Each image as a two-frame sequence, so the recurrent state the server keeps is exercised."""
    session = reference.raw_session(sources.locate(sources.SOURCES["rvm"], sources_dir))
    for index, path in enumerate(images):
        rgb = _rgb(path)
        want = list(reference.rvm_sequence(session, [rgb, rgb]))
        for frame in range(2):
            result = client.infer(
                "rvm",
                [_input("frame", rgb[None], "UINT8")],
                sequence_id=1000 + index,
                sequence_start=frame == 0,
                sequence_end=frame == 1,
            )
            got = result.as_numpy("alpha")[0]
            yield compare("rvm", f"{path.name}#{frame}", got, want[frame][0], TOLERANCES["rvm"], 127.5)


_NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64, "TYPE_UINT8": np.uint8}
_NUMPY |= {"TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_INT8": np.int8, "TYPE_BOOL": np.bool_}


def check_added(client: grpcclient.InferenceServerClient, model_dir: Path, seed: int = 0) -> Iterator[Row]:
    import onnxruntime as ort

    config = pbtxt.read(model_dir / "config.pbtxt")
    latest = model_dir / str(versions(model_dir)[-1])
    session = ort.InferenceSession(str(latest / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    batch = (2,) if config.max_batch_size > 0 else ()
    feed, inputs = {}, []
    for spec in config.input:
        type_name = pbtxt.mc.DataType.Name(spec.data_type)
        if type_name not in _NUMPY:
            yield Row(config.name, f"input {spec.name}: {type_name} not generated", 0, 0, 1, True)
            return
        shape = batch + tuple(d if d > 0 else 8 for d in spec.dims)
        values = rng.uniform(0, 255, shape).astype(_NUMPY[type_name])
        feed[spec.name] = values
        inputs.append(_input(spec.name, values, type_name.removeprefix("TYPE_")))
    result = client.infer(config.name, inputs)
    for spec, want in zip(config.output, session.run([o.name for o in config.output], feed), strict=True):
        got = result.as_numpy(spec.name)
        half = float(np.median(want)) if want.size else 0.0
        yield compare(config.name, f"seeded {spec.name}", got, want, ADDED_TOLERANCE, half)


def is_added(model_dir: Path) -> bool:
    found = versions(model_dir)
    try:
        manifest = json.loads((model_dir / str(found[-1]) / "export.json").read_text())
    except (IndexError, OSError, ValueError):
        return False
    return "added" in manifest.get("built_from", {})


Check = Callable[[grpcclient.InferenceServerClient, list[Path], Path | None], Iterator[Row]]
CHECKS: dict[str, Check] = {"u2netp": check_u2netp, "matte_image": check_matte_image, "rvm": check_rvm}


def encode_table(rows: list[Row]) -> str:
    head = f"{'MODEL':14} {'SAMPLE':28} {'MAX_ABS':>9} {'MEAN_ABS':>9} {'IOU':>7}  RESULT"
    lines = [head]
    for r in rows:
        verdict = "ok" if r.passed else "FAIL"
        lines.append(f"{r.model:14} {r.sample:28} {r.max_abs:9.4g} {r.mean_abs:9.4g} {r.iou:7.4f}  {verdict}")
    return "\n".join(lines)
