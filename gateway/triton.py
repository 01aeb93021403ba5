"""The tritonservers of a process (TRITON_URLS): one gRPC (asyncio) client each, typed calls per
model, and the choice of server per call.

Every caller (gateway handlers, worker jobs) goes through here so deadlines and error mapping are
the same everywhere: an unreachable or not-ready server is `TritonUnavailable` (HTTP 503, retry
later), anything else the server refuses is `InferenceFailed` (carrying the gRPC status).

Several servers share no state. A stateless call (one request, or a one-request sequence) goes to
the least busy healthy server and, when that one turns out unavailable, to the next. A stateful
sequence (a video through `rvm`/`foreground`, a `keypoint_mask` walk) keeps its recurrent state on
one server, so it runs pinned to one `TritonServer` through `Triton.on_one_server`; when that
server fails mid-sequence the whole attempt starts again, from its first request, on another
server. Health is what this process saw last: a failed call (or a failed readiness probe) marks a
server down for TRITON_RETRY_AFTER_S, doubling per failure in a row (60 s at most); once that has
passed the server gets calls again, and its first success clears the record.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from common.model_contract import GATEWAY_MODELS
from common.settings import Settings
from gateway.json_log import triton_request_id
from gateway.unavailable import ServiceUnavailable

log = logging.getLogger("triton")

T = TypeVar("T")

REQUIRED_MODELS: tuple[str, ...] = GATEWAY_MODELS
# Servers one sequence may try per job try: a video whose frames stall or kill a server (a poison
# input) must not take every server down in turn; the job's own retries (arq) go on from there.
SEQUENCE_SERVERS_PER_TRY = 2
_READY_TIMEOUT_S = 3.0
_MAX_DOWN_S = 60.0


def _channel_args() -> list[tuple[str, int]]:
    """tritonclient's own defaults plus a short reconnect back-off: gRPC's default (up to 120 s)
    would keep a restarted server's channel failing long after the server is back."""
    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5000),
    ]


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


def stub_unhealthy(message: str) -> bool:
    """Triton's Python backend lost its model process ("Stub process '<model>_0_0' is not
    healthy."): a fault of the server, not of the request, and any sequence state the process
    held is gone with it. Callers treat it as the server being unavailable (retry, elsewhere)."""
    return "Stub process" in message and "is not healthy" in message


def _translate(exc: InferenceServerException, what: str) -> Exception:
    status = _status_name(exc)
    message = f"{what}: {exc.message()}"
    if status == "UNAVAILABLE" or stub_unhealthy(message):
        return TritonUnavailable(message)
    if status == "DEADLINE_EXCEEDED":
        return InferenceTimeout(message, status)
    return InferenceFailed(message, status)


def new_sequence_id() -> int:
    """Correlation id for one stateful stream; random so workers never collide (63 bits, >0)."""
    return secrets.randbits(63) or 1


def most_complete(answers: list[dict[str, bool]]) -> dict[str, bool]:
    """The readiness answer with the most checks passed (the first such)."""
    return max(answers, key=lambda answer: sum(answer.values()))


# u2netp's queue levels (model_repository/u2netp/config.pbtxt): someone waiting on a photo goes
# first; queued work (the HD job, gRPC callers who do not ask) takes the default, later level.
INTERACTIVE_PRIORITY = 1
BATCH_PRIORITY = 0  # 0: the model's default level


class _TypedCalls:
    """The typed calls per model, over whatever `infer` the subclass provides. `infer`'s
    `priority` is a queue level of the model (0: its default; only u2netp has levels)."""

    new_sequence_id = staticmethod(new_sequence_id)
    photo_priority = BATCH_PRIORITY  # the level of this process's u2netp calls

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
        raise NotImplementedError

    async def u2netp(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H,W,3] RGB -> uint8 [H,W] alpha."""
        image = np.ascontiguousarray(rgb, dtype=np.uint8)
        out = await self.infer("u2netp", {"image": image}, ["alpha"], priority=self.photo_priority)
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


class TritonServer(_TypedCalls):
    """One tritonserver: its gRPC client and its health as this process saw it.

    Must be built inside the running event loop (the gRPC channel binds to it)."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url  # gRPC "host:port"
        self.settings = settings
        self.client = grpcclient.InferenceServerClient(url, channel_args=_channel_args())
        self.in_flight = 0  # calls and pinned sequences running on it now (the load measure)
        self.failures = 0  # failures in a row
        self.down_until = 0.0  # time.monotonic() before which it is skipped

    def __repr__(self) -> str:
        return f"TritonServer({self.url!r})"

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self.down_until

    def mark_down(self) -> None:
        """Skip it for TRITON_RETRY_AFTER_S, doubled per failure in a row, at most 60 s."""
        self.failures += 1
        pause = min(self.settings.triton_retry_after_s * 2 ** (self.failures - 1), _MAX_DOWN_S)
        self.down_until = time.monotonic() + pause

    def mark_up(self) -> None:
        self.failures = 0
        self.down_until = 0.0

    async def close(self) -> None:
        await self.client.close()

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
        """Generic call on this server: named numpy inputs in, named numpy outputs back (batch dims
        untouched). Raises TritonUnavailable, InferenceTimeout, InferenceFailed."""
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


class Triton(_TypedCalls):
    """Every tritonserver of settings.triton_grpc_urls; stateless calls spread over the healthy
    ones, stateful sequences pinned to one through `on_one_server`.

    Must be built inside the running event loop (the gRPC channels bind to it). `interactive`:
    this process answers a waiting client (the gateway), so its photo calls ask u2netp for
    INTERACTIVE_PRIORITY; a worker's calls keep the default level."""

    def __init__(self, settings: Settings, *, interactive: bool = False) -> None:
        self.settings = settings
        self.photo_priority = INTERACTIVE_PRIORITY if interactive else BATCH_PRIORITY
        self.servers = [TritonServer(url, settings) for url in settings.triton_grpc_urls]
        self._turn = itertools.count()  # breaks ties between equally busy servers in turn

    async def close(self) -> None:
        await asyncio.gather(*(server.close() for server in self.servers))

    def pick(self, exclude: Iterable[TritonServer] = ()) -> TritonServer:
        """The least busy healthy server not in `exclude`. When every candidate is marked down the
        one whose pause ends first: a stale mark costs one fast failure, not a refused request.
        Raises TritonUnavailable when `exclude` leaves none."""
        skipped = set(exclude)
        candidates = [server for server in self.servers if server not in skipped]
        if not candidates:
            raise TritonUnavailable("no inference server left to try")
        healthy = [server for server in candidates if server.healthy]
        if not healthy:
            return min(candidates, key=lambda server: server.down_until)
        turn = next(self._turn)
        order = {id(server): (i - turn) % len(self.servers) for i, server in enumerate(self.servers)}
        return min(healthy, key=lambda server: (server.in_flight, order[id(server)]))

    async def on_one_server(
        self, attempt: Callable[[TritonServer], Awaitable[T]], max_servers: int | None = None
    ) -> T:
        """`attempt(server)` on one server, start to end. When it raises TritonUnavailable the server
        is marked down and `attempt` runs again from its start on a server not tried yet; the last
        TritonUnavailable propagates once every server (at most `max_servers` of them) failed.
        Other errors propagate at once (bad input fails the same everywhere). `attempt` must be
        safe to re-run (no state kept between attempts but what it rebuilds)."""
        limit = min(len(self.servers), max_servers or len(self.servers))
        tried: list[TritonServer] = []
        while True:
            server = self.pick(exclude=tried)
            server.in_flight += 1
            try:
                result = await attempt(server)
            except TritonUnavailable as exc:
                server.mark_down()
                tried.append(server)
                if len(tried) >= limit:
                    raise
                log.warning(
                    "inference server failed; starting again on another",
                    extra={"triton_url": server.url, "error": str(exc)},
                )
                continue
            finally:
                server.in_flight -= 1
            server.mark_up()
            return result

    async def ready_by_server(self, models: Iterable[str] = REQUIRED_MODELS) -> list[dict[str, bool]]:
        """TritonServer.ready of each server, in order; never raises. A server that does not answer
        is marked down, one with every model ready up (probes feed the same health as calls)."""
        names = list(models)
        answers = await asyncio.gather(*(server.ready(names) for server in self.servers))
        for server, answer in zip(self.servers, answers, strict=True):
            if all(answer.values()):
                server.mark_up()
            elif not answer["server"] and server.healthy:  # a probe never lengthens a pause
                server.mark_down()
        return answers

    async def ready(self, models: Iterable[str] = REQUIRED_MODELS) -> dict[str, bool]:
        """{"server": ..., <model>: ...} of the most complete server: all true when one server has
        every model (it alone can serve every request); never raises."""
        return most_complete(await self.ready_by_server(models))

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
        """A stateless call (no sequence, or a sequence of this one request) on any healthy server,
        the next one when it is unavailable. Longer sequences must stay on one server: run them
        with `on_one_server`. Raises ValueError for a partial sequence, else as TritonServer.infer."""
        if sequence_id and not (start and end):
            raise ValueError("a sequence of several requests must run on one server: use on_one_server")
        names = list(outputs)
        return await self.on_one_server(
            lambda server: server.infer(
                model, inputs, names, sequence_id=sequence_id, start=start, end=end, priority=priority
            )
        )
