"""Python-backend runner for models added with `python -m export add`: any ONNX graph, run by
onnxruntime with the I/O names the model's config.pbtxt declares.

The version folder's model.py is a one-line import of this class (see export/adding.py), so every
added model and version runs the same reviewed code from this installed package: nothing but
model folders may live in model_repository/ (Triton polls every folder there as a model).
"""

from __future__ import annotations

from typing import Any

from triton_models.config import model_config
from triton_models.onnx import session
from triton_models.serving import Request, Response, optional_array, output_response, respond_each


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.name = str(config["name"])
        self.inputs = [str(i["name"]) for i in config["input"]]
        self.outputs = [str(o["name"]) for o in config["output"]]
        self.session = session(args)

    def _one(self, request: Request) -> Response:
        feed: dict[str, Any] = {}
        for name in self.inputs:
            array = optional_array(request, name)
            if array is not None:  # optional inputs the client left out
                feed[name] = array
        results = self.session.run(self.outputs, feed)
        return output_response(dict(zip(self.outputs, results, strict=True)))

    def execute(self, requests: list[Request]) -> list[Response]:
        # One onnxruntime run per request: requests in one batch may differ in their free dims,
        # so concatenating them is not generally possible; the batcher still saves the hops.
        # onnxruntime raises its own types: any exception becomes that request's error message.
        return respond_each(requests, self._one, prefix=f"{self.name}: ")
