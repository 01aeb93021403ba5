"""u2netp on CPU: the wrapped U^2-Net-p graph (rembg pre/post inside) under onnxruntime.

`image` UINT8 [H,W,3] RGB, H,W >= 2 -> `alpha` UINT8 [H,W] (255 = foreground)."""

from __future__ import annotations

from triton_models.onnx import session
from triton_models.serving import Request, Response, input_array, output_response, respond_each

MIN_SIDE = 2  # the graph's resizes need at least two pixels per side


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.session = session(args)

    def _one(self, request: Request) -> Response:
        image = input_array(request, "image")
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < MIN_SIDE:
            raise ValueError(
                f"image must be uint8 [H,W,3] RGB with H,W >= {MIN_SIDE}, got {list(image.shape)}"
            )
        (alpha,) = self.session.run(["alpha"], {"image": image})
        return output_response({"alpha": alpha})

    def execute(self, requests: list[Request]) -> list[Response]:
        # onnxruntime raises its own types: any exception becomes that request's error message
        return respond_each(requests, self._one, prefix="u2netp: ")
