"""The typed job context: the per-process clients every job uses, built once at worker start-up.

arq hands each job a plain dict (`ctx`); the worker keeps one JobContext in it and every job reads
that instead of unpacking the dict by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from common.settings import Settings
from gateway.jobs import JobStore
from gateway.storage import Storage
from gateway.triton import Triton

CTX_KEY = "job_context"


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    redis: Redis  # arq's own pool
    jobs: JobStore
    storage: Storage
    triton: Triton

    @classmethod
    def of(cls, ctx: Mapping[str, Any]) -> JobContext:
        """The context `worker.main.startup` put into arq's ctx; KeyError before start-up."""
        context = ctx[CTX_KEY]
        if not isinstance(context, cls):
            raise TypeError(f"ctx[{CTX_KEY!r}] holds a {type(context).__name__}, not a JobContext")
        return context
