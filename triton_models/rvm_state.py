"""RVM's recurrent state (r1..r4) kept per sequence by the CPU `rvm` model.

The GPU config keeps r1..r4 in Triton's implicit state; the Python backend has no access to that
mechanism, so the CPU model keeps them itself, keyed by correlation id: START resets, END frees,
and sequences idle longer than max_sequence_idle_microseconds are dropped, as Triton drops them.
State tensors are float32 [1,C,h,w] at the graph's working resolution.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

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


def rounds(items: list[Item]) -> list[list[Item]]:
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
