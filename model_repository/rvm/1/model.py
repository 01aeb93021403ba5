"""rvm on CPU: the wrapped RVM graph under onnxruntime, recurrent state kept per sequence.

The GPU config keeps r1..r4 in Triton's implicit state; the Python backend has no access to that
mechanism, so this model keeps them itself, keyed by correlation id: START resets, END frees, and
sequences idle longer than max_sequence_idle_microseconds are dropped, as Triton drops them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_models.onnx import model_config, session

STATE_INPUTS = ("r1i", "r2i", "r3i", "r4i")
STATE_OUTPUTS = ("r1o", "r2o", "r3o", "r4o")
# RVM's documented initial state: zeros it broadcasts to the real shapes on the first frame.
INITIAL_STATE = tuple(np.zeros((1, 1, 1, 1), np.float32) for _ in STATE_INPUTS)

State = tuple[np.ndarray, ...]


class SequenceStates:
    """Recurrent state per correlation id, with idle eviction so abandoned videos do not leak."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._states: dict[int, tuple[State, float]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, corrid: int, start: bool) -> State:
        if start or corrid not in self._states:
            return INITIAL_STATE
        return self._states[corrid][0]

    def put(self, corrid: int, state: State, now: float) -> None:
        self._states[corrid] = (state, now)

    def free(self, corrid: int) -> None:
        self._states.pop(corrid, None)

    def evict_idle(self, now: float) -> int:
        stale = [c for c, (_, used) in self._states.items() if now - used > self.idle_s]
        for corrid in stale:
            del self._states[corrid]
        return len(stale)


@dataclass
class Item:
    index: int  # position in the execute() request list
    corrid: int
    start: bool
    end: bool
    frame: np.ndarray  # [1,H,W,3] uint8


def _scalar(request: Any, name: str) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"control input {name} missing: send the request as part of a sequence")
    return int(tensor.as_numpy().reshape(-1)[0])


def _parse(index: int, request: Any) -> Item:
    frame = pb_utils.get_input_tensor_by_name(request, "frame").as_numpy()
    if frame.ndim != 4 or frame.shape[0] != 1 or frame.shape[3] != 3:
        raise ValueError(f"frame must be uint8 [1,H,W,3] RGB, got shape {list(frame.shape)}")
    if min(frame.shape[1], frame.shape[2]) < 2:
        raise ValueError(f"frame of {frame.shape[2]}x{frame.shape[1]} pixels is too small")
    return Item(
        index,
        _scalar(request, "CORRID"),
        bool(_scalar(request, "START")),
        bool(_scalar(request, "END")),
        frame,
    )


def _rounds(items: list[Item]) -> list[list[Item]]:
    """Split into rounds holding at most one frame per sequence, so frames of one video run in order."""
    rounds: list[list[Item]] = []
    depth: dict[int, int] = defaultdict(int)
    for item in items:
        level = depth[item.corrid]
        depth[item.corrid] += 1
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(item)
    return rounds


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 60_000_000))
        self.states = SequenceStates(idle_us / 1e6)
        self.session = session(args)

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        self.states.evict_idle(now)
        responses: list[Any] = [None] * len(requests)
        items: list[Item] = []
        for i, request in enumerate(requests):
            try:
                items.append(_parse(i, request))
            except ValueError as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        for round_items in _rounds(items):
            self._run_round(round_items, responses, now)
        return responses

    def _run_round(self, items: list[Item], responses: list[Any], now: float) -> None:
        # Frames of different sequences share one onnxruntime run when frame and state shapes agree.
        groups: dict[tuple[Any, ...], list[tuple[Item, State]]] = defaultdict(list)
        for item in items:
            state = self.states.get(item.corrid, item.start)
            key = (item.frame.shape, *(s.shape for s in state))
            groups[key].append((item, state))
        for group in groups.values():
            self._run_group(group, responses, now)

    def _run_group(self, group: list[tuple[Item, State]], responses: list[Any], now: float) -> None:
        feeds = {"frame": np.concatenate([item.frame for item, _ in group])}
        for k, name in enumerate(STATE_INPUTS):
            feeds[name] = np.concatenate([state[k] for _, state in group])
        try:
            alpha, foreground, *states = self.session.run(["alpha", "foreground", *STATE_OUTPUTS], feeds)
        except Exception as exc:  # onnxruntime raises its own types; the client gets the message
            for item, _ in group:
                message = f"rvm failed on a {item.frame.shape[2]}x{item.frame.shape[1]} frame: {exc}"
                responses[item.index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
            return
        for b, (item, _) in enumerate(group):
            if item.end:
                self.states.free(item.corrid)
            else:
                # copy out of a batched run so one sequence's state does not pin the whole batch
                own = tuple(s if len(group) == 1 else s[b : b + 1].copy() for s in states)
                self.states.put(item.corrid, own, now)
            responses[item.index] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("alpha", alpha[b : b + 1]),
                    pb_utils.Tensor("foreground", foreground[b : b + 1]),
                ]
            )

    def finalize(self) -> None:
        self.states = SequenceStates(0)
