"""Stream one video's frames through a stateful foreground model over one gRPC bidirectional stream.

`model=rvm` talks to the `rvm` model itself (no extra hop); `auto` and `salient` talk to the
`foreground` model, which is told the choice on the sequence's first request.

One stream per video keeps the frames in order on the wire, which the recurrent state needs (unary
calls racing each other could reach the sequence batcher out of order). At most
`frames_in_flight` requests are outstanding, so neither side buffers more than that. Every wait
for an answer has a deadline: a dead or stuck server surfaces as `TritonUnavailable`, which the
caller (gateway/video/run.py) restarts from the first frame on another server (a re-run starts a
fresh sequence), never a hang. The stream runs on one `TritonServer`: the recurrent state lives
there.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.json_log import triton_request_id
from gateway.triton import (
    InferenceFailed,
    TritonServer,
    TritonUnavailable,
    new_sequence_id,
    stub_unhealthy,
)
from gateway.video.decode import DecodedFrame
from triton_models.foreground import ForegroundModel


def triton_model(model: str) -> str:
    """The Triton model that serves a `model` choice of the video endpoints."""
    return "rvm" if model == ForegroundModel.RVM else "foreground"


@dataclass(frozen=True)
class FrameResult:
    frame: DecodedFrame
    alpha: np.ndarray  # HxW uint8
    foreground: np.ndarray | None  # HxWx3 uint8 when requested


def _request(
    model: str, frame: DecodedFrame, sequence_id: int, start: bool, end: bool, outputs: tuple[str, ...]
) -> dict[str, Any]:
    batch = np.ascontiguousarray(frame.rgb, dtype=np.uint8)[None, ...]
    item = grpcclient.InferInput("frame", list(batch.shape), "UINT8")
    item.set_data_from_numpy(batch)
    inputs = [item]
    name = triton_model(model)
    if start and name == "foreground":
        choice = grpcclient.InferInput("model", [1, 1], "BYTES")
        choice.set_data_from_numpy(np.array([[model.encode()]], dtype=np.object_))
        inputs.append(choice)
    return {
        "model_name": name,
        "inputs": inputs,
        "outputs": [grpcclient.InferRequestedOutput(n) for n in outputs],
        "request_id": triton_request_id(str(frame.index)),
        "sequence_id": sequence_id,
        "sequence_start": start,
        "sequence_end": end,
    }


async def infer_frames(
    triton: TritonServer,
    frames: AsyncIterator[DecodedFrame],
    *,
    frames_in_flight: int,
    timeout_s: float,
    foreground: bool = False,
    model: str = ForegroundModel.AUTO,
) -> AsyncIterator[FrameResult]:
    """Results in frame order. Exceptions from `frames` (decode errors) are re-raised here.

    `model`: auto, rvm or salient (ForegroundModel); `foreground` asks for the colour output too.
    """
    name = triton_model(model)
    outputs = ("alpha", "foreground") if foreground else ("alpha",)
    sequence_id = new_sequence_id()
    window = asyncio.Semaphore(max(1, frames_in_flight))
    pending: collections.deque[DecodedFrame] = collections.deque()
    state: dict[str, Any] = {"sent_all": False, "error": None, "closed": False}
    sent = asyncio.Event()  # set whenever a request goes out or the source ends

    async def requests() -> AsyncIterator[dict[str, Any]]:
        try:
            # one frame of look-ahead: the last frame must carry the sequence end flag
            current = await anext(frames, None)
            first = True
            while current is not None:
                following = await anext(frames, None)
                await window.acquire()
                if state["closed"]:
                    return  # the consumer is gone (a broken stream): end, do not wait forever
                pending.append(current)
                yield _request(model, current, sequence_id, first, following is None, outputs)
                sent.set()
                first = False
                current = following
        except Exception as exc:  # raised to the consumer below, not lost inside gRPC
            state["error"] = exc
        finally:
            state["sent_all"] = True
            sent.set()

    stream = triton.client.stream_infer(requests())
    try:
        while True:
            while not pending and not state["sent_all"]:
                sent.clear()
                await sent.wait()
            if state["error"] is not None:
                raise state["error"]
            if not pending:
                return
            try:
                result, error = await asyncio.wait_for(anext(stream), timeout_s)
            except asyncio.TimeoutError:  # 3.10's wait_for raises this, not the builtin
                raise TritonUnavailable(f"{name}: no answer within {timeout_s:g}s") from None
            except StopAsyncIteration:
                raise TritonUnavailable(f"{name}: the stream closed before every frame came back") from None
            except grpc.aio.AioRpcError as exc:
                raise _rpc_error(name, exc) from None
            except InferenceServerException as exc:
                raise TritonUnavailable(f"{name}: {exc.message()}") from None
            frame = pending.popleft()
            window.release()
            if error is not None:
                if stub_unhealthy(error.message()):
                    raise TritonUnavailable(f"{name}: {error.message()}")
                raise InferenceFailed(f"{name}: {error.message()}")
            if result.get_response().id.rsplit(":", 1)[-1] != str(frame.index):
                raise InferenceFailed(
                    f"{name}: answer for frame {result.get_response().id} came out of order"
                )
            alpha = result.as_numpy("alpha")
            fg = result.as_numpy("foreground") if foreground else None
            if alpha is None or (foreground and fg is None):
                raise InferenceFailed(f"{name}: an output is missing from the response")
            yield FrameResult(frame, alpha[0], fg[0] if fg is not None else None)
    finally:
        # A broken stream leaves requests() waiting for a window slot no answer will free; wake it
        # so it ends, rather than stay pending (with its frame source) until the process exits.
        state["closed"] = True
        window.release()
        stream.cancel()


def _rpc_error(name: str, exc: grpc.aio.AioRpcError) -> Exception:
    code = exc.code()
    message = f"{name}: {code.name}: {exc.details()}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return TritonUnavailable(message)
    return InferenceFailed(message, code.name)
