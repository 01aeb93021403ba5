"""torch module -> checked, simplified (optionally FP16) ONNX file: the steps every family shares."""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import onnx

from export.families import Artifact
from export.progress import Steps

# The TorchScript exporter's range in torch 2.13 is 7..20; below 14 the attention and LayerNorm
# decompositions get clumsy and TensorRT 10 parses 14+ best, so the tool offers 14..20.
MIN_OPSET = 14
MAX_OPSET = 20
DEFAULT_OPSET = 17  # what upstream SAM's export script uses


class ExportError(RuntimeError):
    """The module could not be exported with the options given."""


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset {opset} is not supported: choose {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})"
        )
    return opset


def simplifier() -> str | None:
    """The simplifier installed here: onnxslim (pure Python, installs everywhere) before onnxsim."""
    for name in ("onnxslim", "onnxsim"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def _trace(artifact: Artifact, opset: int) -> onnx.ModelProto:
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every Python int it records (shape arithmetic in SAM's
        # postprocessing); the dynamic-axis parity test is what shows the graph stays general.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            artifact.module,
            artifact.example,
            buffer,
            dynamo=False,  # the dynamo exporter needs onnxscript and cannot trace SAM's Python ints
            input_names=artifact.input_names,
            output_names=artifact.output_names,
            dynamic_axes=artifact.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _simplify(model: onnx.ModelProto, tool: str, fp16: bool) -> onnx.ModelProto:
    if tool == "onnxslim":
        import onnxslim

        kwargs: dict[str, Any] = {"dtype": "float16"} if fp16 else {}
        return onnxslim.slim(model, **kwargs)
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ExportError("onnxsim could not validate the simplified model")
    return simplified


def export(artifact: Artifact, path: Path, opset: int, simplify: bool = True, fp16: bool = False) -> Path:
    check_opset(opset)
    tool = simplifier() if simplify or fp16 else None
    if fp16 and tool != "onnxslim":
        raise ExportError("--fp16 needs onnxslim: pip install -e '.[export]'")
    with Steps(f"{artifact.filename}", 3 if tool else 2) as steps:
        steps.next("tracing")
        model = _trace(artifact, opset)
        if tool:
            steps.next(f"simplifying ({tool}{', fp16' if fp16 else ''})")
            model = _simplify(model, tool, fp16)
        elif simplify:
            steps.note("no simplifier installed (onnxslim or onnxsim): writing the traced graph")
        steps.next("checking")
        if artifact.doc:
            model.doc_string = artifact.doc
        if artifact.metadata:
            onnx.helper.set_model_props(model, artifact.metadata)
        onnx.checker.check_model(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return path
