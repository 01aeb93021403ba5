"""background_generator (shipped default): the non-AI studio backdrop of triton_models.studio.

Contract kept by any replacement: `subject` UINT8 [H,W,4] RGBA, optional `prompt` BYTES [1]
(UTF-8, first 2000 bytes read) -> `background` UINT8 [H,W,3] RGB at the subject's size.
"""

from __future__ import annotations

from triton_models.serving import (
    Request,
    Response,
    input_array,
    optional_array,
    output_response,
    respond_each,
)
from triton_models.studio import generate

MAX_PROMPT_BYTES = 2000


def _prompt(request: Request) -> str:
    values = optional_array(request, "prompt")
    if values is None or values.size == 0:
        return ""
    raw = values.reshape(-1)[0]
    raw = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    return raw[:MAX_PROMPT_BYTES].decode("utf-8", errors="replace")


class TritonPythonModel:
    def _one(self, request: Request) -> Response:
        subject = input_array(request, "subject")
        if subject.ndim != 3 or subject.shape[2] != 4 or min(subject.shape[:2]) < 1:
            raise ValueError(f"subject must be uint8 [H,W,4] RGBA, got {list(subject.shape)}")
        return output_response({"background": generate(subject, _prompt(request))})

    def execute(self, requests: list[Request]) -> list[Response]:
        return respond_each(requests, self._one, prefix="background_generator: ")
