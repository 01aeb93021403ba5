"""One tritonclient gRPC (asyncio) client per process, with typed calls per model.

Every caller (gateway handlers, worker jobs) goes through here so deadlines and error mapping are
the same everywhere: an unreachable or not-ready server is `TritonUnavailable` (HTTP 503, retry
later), anything else the server refuses is `InferenceFailed` (carrying the gRPC status).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from common.model_contract import GATEWAY_MODELS
from common.settings import Settings
from gateway.json_log import triton_request_id
from gateway.unavailable import ServiceUnavailable

REQUIRED_MODELS: tuple[str, ...] = GATEWAY_MODELS
_READY_TIMEOUT_S = 3.0


class TritonUnavailable(ServiceUnavailable):
    """The server cannot be reached, is not ready, or the model is not loaded."""


class InferenceFailed(Exception):
    """Triton answered with an error; `status` is the gRPC status name (e.g. INVALID_ARGUMENT)."""

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class InferenceTimeout(InferenceFailed):
    """The call ran past settings.triton_timeout_s."""


def _status_name(exc: InferenceServerException) -> str:
    # tritonclient formats it as "StatusCode.UNAVAILABLE"
    return str(exc.status() or "").rsplit(".", 1)[-1]


def _translate(exc: InferenceServerException, what: str) -> Exception:
    status = _status_name(exc)
    message = f"{what}: {exc.message()}"
    if status == "UNAVAILABLE":
        return TritonUnavailable(message)
    if status == "DEADLINE_EXCEEDED":
        return InferenceTimeout(message, status)
    return InferenceFailed(message, status)


# u2netp's queue levels (model_repository/u2netp/config.pbtxt): someone waiting on a photo goes
# first; queued work (the HD job, the video models' saliency) takes the default, later level.
INTERACTIVE_PRIORITY = 1
BATCH_PRIORITY = 0  # 0: the model's default level


class Triton:
    """Must be built inside the running event loop (the gRPC channel binds to it).

    `interactive`: this process answers a waiting client (the gateway), so its photo calls ask
    u2netp for INTERACTIVE_PRIORITY; a worker's calls keep the default level."""

    def __init__(self, settings: Settings, *, interactive: bool = False) -> None:
        self.settings = settings
        self.photo_priority = INTERACTIVE_PRIORITY if interactive else BATCH_PRIORITY
        self.client = grpcclient.InferenceServerClient(settings.triton_grpc_url)

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    def new_sequence_id() -> int:
        """Correlation id for one stateful stream; random so workers never collide (63 bits, >0)."""
        return secrets.randbits(63) or 1

    async def ready(self, models: Iterable[str] = REQUIRED_MODELS) -> dict[str, bool]:
        """{"server": ..., <model>: ...}; never raises, so health checks can report each part."""
        names = list(models)
        result = {"server": False, **dict.fromkeys(names, False)}
        try:
            result["server"] = bool(await self.client.is_server_ready(client_timeout=_READY_TIMEOUT_S))
        except (TimeoutError, InferenceServerException, OSError):
            return result
        for name in names:
            try:
                result[name] = bool(await self.client.is_model_ready(name, client_timeout=_READY_TIMEOUT_S))
            except (TimeoutError, InferenceServerException, OSError):
                result[name] = False
        return result

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Iterable[str],
        *,
        sequence_id: int = 0,
        start: bool = False,
        end: bool = False,
        priority: int = BATCH_PRIORITY,
    ) -> dict[str, np.ndarray]:
        """Generic call: named numpy inputs in, named numpy outputs back (batch dims untouched).
        `priority` is a queue level of the model (0: its default; only u2netp has levels)."""
        infer_inputs = []
        for name, array in inputs.items():
            item = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            item.set_data_from_numpy(array)
            infer_inputs.append(item)
        names = list(outputs)
        requested = [grpcclient.InferRequestedOutput(n) for n in names]
        try:
            response = await self.client.infer(
                model,
                infer_inputs,
                outputs=requested,
                sequence_id=sequence_id,
                sequence_start=start,
                sequence_end=end,
                priority=priority,
                request_id=triton_request_id(),
                client_timeout=self.settings.triton_timeout_s,
            )
        except InferenceServerException as exc:
            raise _translate(exc, model) from None
        result: dict[str, np.ndarray] = {}
        for name in names:
            array = response.as_numpy(name)
            if array is None:
                raise InferenceFailed(f"{model}: output {name!r} missing from the response")
            result[name] = array
        return result

    async def u2netp(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H,W,3] RGB -> uint8 [H,W] alpha."""
        image = np.ascontiguousarray(rgb, dtype=np.uint8)
        out = await self.infer("u2netp", {"image": image}, ["alpha"], priority=self.photo_priority)
        return out["alpha"]

    async def matte_image(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> uint8 [H,W] alpha (decoding and EXIF orientation on the server)."""
        out = await self.infer("matte_image", {"image_bytes": np.array([data], dtype=np.object_)}, ["alpha"])
        return out["alpha"]

    async def rvm_frame(
        self,
        rgb: np.ndarray,
        sequence_id: int,
        start: bool,
        end: bool,
        outputs: tuple[str, ...] = ("alpha",),
    ) -> dict[str, np.ndarray]:
        """One frame of one video (uint8 [H,W,3]); outputs with the batch dim stripped."""
        frame = np.ascontiguousarray(rgb, dtype=np.uint8)[None, ...]
        out = await self.infer(
            "rvm", {"frame": frame}, outputs, sequence_id=sequence_id, start=start, end=end
        )
        return {name: array[0] for name, array in out.items()}
