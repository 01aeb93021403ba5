"""The one exception base for "a backend cannot serve right now", free of any HTTP code.

Backend clients raise subclasses of it (gateway.triton.TritonUnavailable, which the worker retries);
the gateway's error middleware answers any of them 503 with Retry-After without knowing them.
"""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """A backend (Triton, Redis) cannot serve right now; the caller should retry later.

    `retry_after_s` (seconds) is what the gateway sends as Retry-After.
    """

    retry_after_s: int = 5
