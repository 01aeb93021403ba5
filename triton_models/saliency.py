"""Where the video models (foreground, keypoint_mask) get their salient-object cue.

Two sources, chosen by the model's config.pbtxt:
* `saliency_in_process: "true"` (the CPU configs): the saliency model's own exported file
  (`<repository>/<saliency_model>/1/model.onnx`, the graph the `u2netp` model serves) run by
  onnxruntime inside this stub. The stub runs at the video models' lower CPU priority
  (triton_models/cpu_priority.py), so a photo's u2netp call, served by the `u2netp` model at
  normal priority, takes the cores first instead of queueing behind a video's saliency calls.
  Same file, same runtime: the same alpha as the BLS call.
* otherwise (the GPU configs): a BLS call to the `saliency_model` on this server.

Either way the cue is computed on the crop the tracker asks about (u2netp resizes it to its own
input size, so a crop costs what a whole frame costs), and a failure raises RuntimeError: without
its cue a tracker cannot tell the object from the rest, so the frame's request fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from triton_models.config import parameter
from triton_models.serving import call_model

# RGB uint8 [h,w,3] -> saliency uint8 [h,w] (0..255).
SaliencyFn = Callable[[np.ndarray], np.ndarray]


def saliency_source(caller: str, config: Mapping[str, Any], args: Mapping[str, str]) -> SaliencyFn:
    """The saliency function for the model `caller`, per its config (see the module docstring).
    Raises FileNotFoundError at load when the in-process file has not been exported."""
    model = parameter(config, "saliency_model", "u2netp")
    if parameter(config, "saliency_in_process", "false").lower() != "true":
        return lambda image: call_model(caller, model, {"image": image}, ["alpha"])["alpha"]
    from triton_models.onnx import session_at  # onnxruntime only where it runs in process

    repository = Path(args["model_repository"]).parent
    # as many threads as `u2netp` itself uses, so a lone video is not slowed; they sleep when
    # idle because several videos' stubs share the cores
    threads = int(parameter(config, "saliency_intra_op_threads", "2"))
    run = session_at(repository / model / "1" / "model.onnx", threads, spin_wait=False).run

    def in_process(image: np.ndarray) -> np.ndarray:
        try:
            return run(["alpha"], {"image": np.ascontiguousarray(image, dtype=np.uint8)})[0]
        except Exception as exc:  # onnxruntime's own types: reported as the BLS path reports
            raise RuntimeError(f"{caller}: {model} failed: {exc}") from exc

    return in_process
