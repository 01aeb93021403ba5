"""One JSON object per log line, for the gateway and the worker alike (no web code here).

`bind(request_id=..., job_id=...)` puts fields on every line logged by the current task (a
request's handler, a job's run), so one grep for a job id or a request id follows it from the
gateway through the worker; `triton_request_id()` is what goes on the job's Triton calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar

_CONTEXT: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039 (never mutated)


@contextlib.contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Adds `fields` (None values skipped) to every log line of the current task, inside the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bound(name: str) -> str | None:
    """A field bound in the current task (`request_id`, `job_id`), or None."""
    return _CONTEXT.get().get(name)


def triton_request_id(suffix: str = "") -> str:
    """The id for a Triton request of the current job (or request): `<job id>[:suffix]`, so
    Triton's own logs and traces name the job too."""
    base = bound("job_id") or bound("request_id") or ""
    return f"{base}:{suffix}" if base and suffix else base or suffix


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields are merged in (request_id, status, ...)."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(_CONTEXT.get())
        data.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(level: int = logging.INFO) -> None:
    """Route the root logger to stderr as JSON lines (replaces any handlers already set)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
