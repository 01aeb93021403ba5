"""Python-backend runner for models added with `python -m export add`: any ONNX graph, run by
onnxruntime with the I/O names the model's config.pbtxt declares.

The version folder's model.py is a one-line import of this class (see export/adding.py), so every
added model and version runs the same reviewed code. It lives outside model_repository/ for the
reason export/ort_session.py gives.
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from triton_models.onnx import model_config, session


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.name = str(config["name"])
        self.inputs = [str(i["name"]) for i in config["input"]]
        self.outputs = [str(o["name"]) for o in config["output"]]
        self.session = session(args)

    def _one(self, request: Any) -> Any:
        feed = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:  # optional inputs the client left out
                feed[name] = tensor.as_numpy()
        results = self.session.run(self.outputs, feed)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, r) for n, r in zip(self.outputs, results, strict=True)]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        # One onnxruntime run per request: requests in one batch may differ in their free dims,
        # so concatenating them is not generally possible; the batcher still saves the hops.
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # onnxruntime raises its own types; the client gets the message
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
                )
        return responses
