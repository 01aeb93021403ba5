"""u2netp on CPU: the wrapped U^2-Net-p graph (rembg pre/post inside) under onnxruntime."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from triton_models.onnx import session

MIN_SIDE = 2  # the graph's resizes need at least two pixels per side


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.session = session(args)

    def _one(self, request: Any) -> Any:
        image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < MIN_SIDE:
            raise ValueError(
                f"image must be uint8 [H,W,3] RGB with H,W >= {MIN_SIDE}, got {list(image.shape)}"
            )
        (alpha,) = self.session.run(["alpha"], {"image": image})
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("alpha", alpha)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # onnxruntime raises its own types; the client gets the message
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"u2netp: {exc}")))
        return responses
