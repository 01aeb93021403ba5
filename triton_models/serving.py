"""What every Python-backend model here does with the requests Triton hands to `execute`.

Only importable inside the Python backend's stub (it imports `triton_python_backend_utils`).
One response per request, in order: a request the model refuses gets an error response naming
the reason, and the other requests of the same batch are still answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

Request = Any  # pb_utils.InferenceRequest (the stub's classes carry no type information)
Response = Any  # pb_utils.InferenceResponse


def respond_each(
    requests: Sequence[Request],
    answer: Callable[[Request], Response],
    *,
    prefix: str = "",
    refused: tuple[type[Exception], ...] = (Exception,),
    invalid: tuple[type[Exception], ...] = (),
) -> list[Response]:
    """`answer(request)` for each request; an exception of `invalid` becomes an INVALID_ARG error
    response (the caller's fault: gRPC INVALID_ARGUMENT), one of `refused` a plain error response
    (INTERNAL), both with `prefix` before the exception's message. Any other exception propagates,
    and Triton then fails the whole batch."""
    responses = []
    for request in requests:
        try:
            responses.append(answer(request))
        except invalid as exc:
            responses.append(error_response(f"{prefix}{exc}", invalid=True))
        except refused as exc:
            responses.append(error_response(f"{prefix}{exc}"))
    return responses


def error_response(message: str, *, invalid: bool = False) -> Response:
    """An error response: INVALID_ARG when the request itself is at fault, else INTERNAL."""
    if invalid:
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
        )
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


@dataclass(frozen=True)
class SequenceControl:
    """The sequence batcher's control inputs of one request (config: START, END, CORRID)."""

    start: bool  # first request of the sequence: state resets
    end: bool  # last one: state is freed after it
    corrid: int  # correlation id, uint64, one per sequence


def _control_value(request: Request, name: str) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"control input {name} missing: send the request as part of a sequence")
    return int(tensor.as_numpy().reshape(-1)[0])


def sequence_control(request: Request) -> SequenceControl:
    """START/END/CORRID of a stateful model's request; raises ValueError when one is missing."""
    return SequenceControl(
        start=bool(_control_value(request, "START")),
        end=bool(_control_value(request, "END")),
        corrid=_control_value(request, "CORRID"),
    )


def input_array(request: Request, name: str) -> np.ndarray:
    """A required input as numpy (dtype and shape as sent); raises ValueError when it is absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"input {name} missing")
    return np.asarray(tensor.as_numpy())


def optional_array(request: Request, name: str) -> np.ndarray | None:
    """An optional input as numpy, None when the client left it out."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else np.asarray(tensor.as_numpy())


def output_response(outputs: Mapping[str, np.ndarray]) -> Response:
    """A response carrying the named output tensors (name -> array, sent as they are)."""
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, a) for n, a in outputs.items()])


def call_model(
    caller: str,
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    *,
    corrid: int = 0,
    start: bool = False,
    end: bool = False,
) -> dict[str, np.ndarray]:
    """Business Logic Scripting: run `model` on this server and wait for its named outputs.

    `corrid`, `start` and `end` make the call part of the callee's sequence (0: stateless call).
    Raises RuntimeError "<caller>: <model> failed: <Triton's message>" when the callee refuses:
    the caller cannot answer without it, and a silent fallback would hand back a plausible wrong
    answer."""
    flags = (pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START if start else 0) | (
        pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END if end else 0
    )
    response = pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor(name, np.ascontiguousarray(array)) for name, array in inputs.items()],
        requested_output_names=list(outputs),
        correlation_id=corrid,
        flags=flags,
    ).exec()
    if response.has_error():
        raise RuntimeError(f"{caller}: {model} failed: {response.error().message()}")
    result = {}
    for name in outputs:
        tensor = pb_utils.get_output_tensor_by_name(response, name)
        if tensor is None:  # seen when the callee's process died mid-call
            raise RuntimeError(f"{caller}: {model} failed: its answer has no output {name!r}")
        result[name] = tensor.as_numpy()
    return result
