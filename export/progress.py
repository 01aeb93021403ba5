"""A tiny stderr progress display for long export steps (no dependency; quiet when not a TTY).

`Steps` names each stage of a job ("[2/3] sam_encoder.onnx: simplifying"), `bar` wraps an
iterable with a percentage bar. On a terminal the line redraws in place; in logs and CI every
stage is one plain line, so the output stays readable when captured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TextIO, TypeVar

T = TypeVar("T")


class Steps:
    def __init__(self, title: str, total: int, stream: TextIO | None = None) -> None:
        self.title = title
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def __enter__(self) -> Steps:
        return self

    def next(self, what: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {self.title}: {what}", file=self.stream, flush=True)

    def note(self, what: str) -> None:
        print(f"      {self.title}: {what}", file=self.stream, flush=True)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        status = "failed" if kind else "done"
        print(
            f"      {self.title}: {status} in {time.monotonic() - self.started:.1f} s",
            file=self.stream,
            flush=True,
        )


def bar(
    items: Iterable[T], total: int, title: str, stream: TextIO | None = None, width: int = 30
) -> Iterator[T]:
    out = stream or sys.stderr
    live = out.isatty()
    started = time.monotonic()
    for index, item in enumerate(items, 1):
        yield item
        filled = int(width * index / max(total, 1))
        elapsed = time.monotonic() - started
        line = f"{title} [{'#' * filled}{'.' * (width - filled)}] {index}/{total} {elapsed:.1f} s"
        if live:
            print(f"\r{line}", end="" if index < total else "\n", file=out, flush=True)
        elif index == total:
            print(line, file=out, flush=True)
