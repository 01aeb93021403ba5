"""PyTorch model families `python -m export onnx` can turn into ONNX.

Each family module exposes `build(args) -> list[Artifact]`: it loads the checkpoint with the
family's own architecture code and returns the torch modules to export, with their example
inputs, I/O names and dynamic axes. Exporting, simplifying and writing are shared (export/onnx_export.py).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class FamilyError(RuntimeError):
    """The family cannot be built: missing package or code, or a checkpoint that does not fit."""


@dataclass
class Artifact:
    """One ONNX file to write: a torch module plus what the exporter needs to trace it."""

    filename: str
    module: Any  # torch.nn.Module; typed loosely so this module imports without torch
    example: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    doc: str = ""
    metadata: dict[str, str] = field(default_factory=dict)  # ONNX metadata_props the runtime reads


# family name (= module under export/families/) -> what it exports, shown by `onnx --help`
FAMILIES: dict[str, str] = {
    "sam": "Segment Anything (segment-anything package): image encoder + prompt decoder pair",
    "sam2": "SAM 2 / 2.1 (sam2 package): image encoder, memory attention, mask decoder, memory encoder",
    "rvm": "Robust Video Matting: needs --code-path to a RobustVideoMatting checkout",
}

# Asked for often; named here so the error says why instead of "invalid choice".
UNSUPPORTED: dict[str, str] = {
    "mobilesam": "MobileSAM's TinyViT code has no official PyPI package (only unvetted mirrors)",
    "edgesam": "EdgeSAM's architecture code is not published on PyPI",
    "edgetam": "EdgeTAM's RepViT + perceiver code is in no registry package (only its GitHub repository)",
}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from a .pth/.pt file, with errors that name the file and the problem."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise FamilyError("exporting from PyTorch needs torch: pip install -e '.[export]'") from exc
    if not path.is_file():
        raise FamilyError(f"checkpoint {path} not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text advises weights_only=False, i.e. running the file's code: never for a
        # file that is not a plain state dict. Only the unpickler's own reason is kept.
        reason = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().split("\n\n")[0]
        raise FamilyError(
            f"checkpoint {path} is not a readable PyTorch state dict ({reason}); only weights are "
            "loaded, never code, so a file that needs more is refused"
        ) from exc
    except Exception as exc:  # torch raises zip and runtime errors alike for bad files
        raise FamilyError(f"checkpoint {path} is not a readable PyTorch state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # Lightning-style wrappers
    if not isinstance(state, dict) or not state:
        raise FamilyError(f"checkpoint {path} holds no state dict (got {type(state).__name__})")
    return dict(state)


def load_into(module: Any, state: dict[str, Any], family: str, path: Path) -> None:
    """load_state_dict, but a mismatch says which family/variant it did not fit and how badly."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise FamilyError(
            f"checkpoint {path} does not fit the {family} architecture (wrong family or variant?): "
            + " ".join(line.strip() for line in first)
        ) from exc
