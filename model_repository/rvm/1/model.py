"""rvm on CPU: the wrapped RVM graph under onnxruntime, recurrent state kept per sequence
(triton_models.rvm_state). `frame` UINT8 [1,H,W,3] RGB -> `alpha` UINT8 [1,H,W] and
`foreground` UINT8 [1,H,W,3]; frames of different sequences with the same shape share one run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from triton_models.config import model_config
from triton_models.cpu_priority import lower_cpu_priority
from triton_models.onnx import session
from triton_models.rvm_state import STATE_INPUTS, STATE_OUTPUTS, Item, SequenceStates, State, rounds
from triton_models.serving import (
    Request,
    Response,
    error_response,
    input_array,
    output_response,
    sequence_control,
)


def _parse(index: int, request: Request) -> Item:
    frame = input_array(request, "frame")
    if frame.ndim != 4 or frame.shape[0] != 1 or frame.shape[3] != 3:
        raise ValueError(f"frame must be uint8 [1,H,W,3] RGB, got shape {list(frame.shape)}")
    if min(frame.shape[1], frame.shape[2]) < 2:
        raise ValueError(f"frame of {frame.shape[2]}x{frame.shape[1]} pixels is too small")
    control = sequence_control(request)
    return Item(index, control.corrid, control.start, control.end, frame)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        lower_cpu_priority(config)
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 60_000_000))
        self.states = SequenceStates(idle_us / 1e6)
        self.session = session(args, STATE_INPUTS)

    def execute(self, requests: list[Request]) -> list[Response]:
        now = time.monotonic()
        self.states.evict_idle(now)
        responses: list[Response] = [None] * len(requests)
        items: list[Item] = []
        for i, request in enumerate(requests):
            try:
                items.append(_parse(i, request))
            except ValueError as exc:
                responses[i] = error_response(str(exc))
        for round_items in rounds(items):
            self._run_round(round_items, responses, now)
        return responses

    def _run_round(self, items: list[Item], responses: list[Response], now: float) -> None:
        # Frames of different sequences share one onnxruntime run when frame and state shapes agree.
        groups: dict[tuple[Any, ...], list[tuple[Item, State]]] = defaultdict(list)
        for item in items:
            state = self.states.get(item.corrid, item.start)
            key = (item.frame.shape, *(s.shape for s in state))
            groups[key].append((item, state))
        for group in groups.values():
            self._run_group(group, responses, now)

    def _run_group(self, group: list[tuple[Item, State]], responses: list[Response], now: float) -> None:
        feeds = {"frame": np.concatenate([item.frame for item, _ in group])}
        for k, name in enumerate(STATE_INPUTS):
            feeds[name] = np.concatenate([state[k] for _, state in group])
        try:
            alpha, foreground, *states = self.session.run(["alpha", "foreground", *STATE_OUTPUTS], feeds)
        except Exception as exc:  # onnxruntime raises its own types; the client gets the message
            for item, _ in group:
                message = f"rvm failed on a {item.frame.shape[2]}x{item.frame.shape[1]} frame: {exc}"
                responses[item.index] = error_response(message)
            return
        for b, (item, _) in enumerate(group):
            if item.end:
                self.states.free(item.corrid)
            else:
                # copy out of a batched run so one sequence's state does not pin the whole batch
                own = tuple(s if len(group) == 1 else s[b : b + 1].copy() for s in states)
                self.states.put(item.corrid, own, now)
            responses[item.index] = output_response(
                {"alpha": alpha[b : b + 1], "foreground": foreground[b : b + 1]}
            )

    def finalize(self) -> None:
        self.states = SequenceStates(0)
