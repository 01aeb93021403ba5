"""background_generator (shipped default): the non-AI studio backdrop of triton_models.studio.

Contract kept by any replacement: `subject` UINT8 [H,W,4] RGBA, optional `prompt` BYTES [1]
(UTF-8) -> `background` UINT8 [H,W,3] RGB at the subject's size.
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from triton_models.studio import generate

MAX_PROMPT_BYTES = 2000


def _prompt(request: Any) -> str:
    tensor = pb_utils.get_input_tensor_by_name(request, "prompt")
    if tensor is None:
        return ""
    values = tensor.as_numpy().reshape(-1)
    if values.size == 0:
        return ""
    raw = values[0]
    raw = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    return raw[:MAX_PROMPT_BYTES].decode("utf-8", errors="replace")


class TritonPythonModel:
    def _one(self, request: Any) -> Any:
        subject = pb_utils.get_input_tensor_by_name(request, "subject").as_numpy()
        if subject.ndim != 3 or subject.shape[2] != 4 or min(subject.shape[:2]) < 1:
            raise ValueError(f"subject must be uint8 [H,W,4] RGBA, got {list(subject.shape)}")
        background = generate(subject, _prompt(request))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("background", background)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # the client gets the message instead of a dead stub
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"background_generator: {exc}"))
                )
        return responses
