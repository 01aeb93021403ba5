"""The one exception base for "a backend cannot serve right now", free of any HTTP code.

Backend clients (Triton, ...) raise subclasses of it, the worker retries on them, and the gateway's
error middleware answers them 503 with Retry-After, without either side knowing the subclasses.
"""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """A backend (Triton, Redis) cannot serve right now; the caller should retry later.

    `retry_after_s` (seconds) is what the gateway sends as Retry-After.
    """

    retry_after_s: int = 5
