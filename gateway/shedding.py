"""Load shedding for the synchronous image endpoints: bounded work in flight, 429 when full.

An image request holds the gateway (body, decode, Triton calls, PNG encode) for its whole
answer. Without a bound, a flood of work makes every request slower until all of them time out.
Here each gateway process admits at most `IMAGE_MAX_IN_FLIGHT` image requests at once and at
most `IMAGE_MAX_IN_FLIGHT_PER_TOKEN` per api_token (one client cannot take every slot); a request
beyond that is answered at once, before its body is read, with 429 and `Retry-After` in the
background API's format, so the admitted ones keep their normal latency. Counts are per process
(a gateway scaled out N times admits N times as much): the bound protects this process's CPU and
event loop, which is what an image request waits on. The key-point preview
(POST /mask_by_key_points/preview) is the same kind of work (one frame decoded, one model call,
a PNG) and shares these slots, refused in the mask API's format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from gateway.errors import ApiError, Family, api_error


@dataclass
class InFlight:
    """Admission counts of one process; `admit` is synchronous (no await between check and count)."""

    max_total: int
    max_per_owner: int
    retry_after_s: int = 1
    total: int = 0
    per_owner: Counter[str] = field(default_factory=Counter)

    def busy(self, details: str, family: Family) -> ApiError:
        return api_error(
            family, 429, "Too Many Requests", details, headers={"Retry-After": str(self.retry_after_s)}
        )

    @contextmanager
    def admit(self, owner: str, family: Family = "bg") -> Iterator[None]:
        """Hold one slot for `owner` for the block; raises the 429 ApiError (in `family`'s format)
        when none is free."""
        if self.total >= self.max_total:
            raise self.busy("The service is busy with other image requests; retry shortly.", family)
        if self.per_owner[owner] >= self.max_per_owner:
            raise self.busy(
                f"At most {self.max_per_owner} image requests may run at once per api_token; "
                "retry when one has finished.",
                family,
            )
        self.total += 1
        self.per_owner[owner] += 1
        try:
            yield
        finally:
            self.total -= 1
            self.per_owner[owner] -= 1
            if not self.per_owner[owner]:
                del self.per_owner[owner]


IMAGE_IN_FLIGHT = web.AppKey("image_in_flight", InFlight)
